//! The plate stage of a camera's analysis: reads plates on vehicle tracks (or, on a dedicated
//! ANPR camera, anywhere in the frame, tracked as plates), votes over each track's reads, and
//! publishes one `anpr` event per track, revised when the vote gets better.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use tracing::{debug, warn};

use crate::anpr::consensus::{Consensus, Voted};
use crate::anpr::plate::{Formats, edit_distance};
use crate::anpr::{PlateRead, PlateReader};
use crate::config::{AnprConfig, AnprMode, CameraConfig, TrackerConfig};
use crate::detect::Detection;
use crate::events::{EventType, NewEvent, snapshot};
use crate::geometry::iou;
use crate::ingest::Frame;
use crate::track::{Change, Tracker};

/// A read whose least sure character is below this does not vote; a weaker character is usually
/// out-voted by the other reads, so the bar sits under the published one.
const READ_FLOOR: f32 = 0.3;
/// Seconds between reads of one track.
const READ_GAP: f64 = 0.2;
/// A vehicle is read again once its box has grown by this factor (it came closer).
const CLOSER: f32 = 1.1;
/// Vehicle boxes are read with this margin, as a fraction of their size.
const MARGIN: f32 = 0.05;
/// Pixels from the frame's border within which a plate is taken to be cut off.
const EDGE: f32 = 2.0;
/// Seconds between whole-frame reads of a dedicated camera with nothing moving or in view.
const IDLE_SCAN: f64 = 1.0;
/// A revision is published when the vote's confidence rises by this much (or the plate changes).
const BETTER: f32 = 0.02;
/// A new track that reads a plate published this recently (one edit apart) is the same vehicle,
/// seen again after its track broke (an occlusion, a missed detection): it revises that event.
const REPEAT_SECS: f64 = 30.0;

/// The reading state of one vehicle (or, when dedicated, one plate) track.
#[derive(Default)]
struct PlateTrack {
    consensus: Consensus,
    attempts: u32,
    last_read: f64,
    read_area: f32,
    /// The most confident read so far: its frame is the snapshot.
    best: Option<(Frame, PlateRead, [f32; 4])>,
    published: Option<Voted>,
    /// The track whose event this one revises (itself unless it repeats a recent plate).
    event_track: Option<u64>,
}

/// A plate published recently on this camera.
struct Recent {
    event_track: u64,
    voted: Voted,
    consensus: Consensus,
    at: f64,
}

/// Plate reading for one camera.
pub struct PlateStage {
    cfg: AnprConfig,
    camera: String,
    reader: Arc<PlateReader>,
    formats: Formats,
    /// Class ids of the vehicles whose tracks are read.
    vehicles: Vec<usize>,
    tracks: HashMap<u64, PlateTrack>,
    /// Dedicated mode: plates tracked as objects of their own.
    plate_tracker: Option<Tracker>,
    last_scan: f64,
    recent: Vec<Recent>,
}

impl PlateStage {
    /// The stage for a camera; `vehicles` are the class ids of `cfg.labels`.
    pub fn new(camera: &CameraConfig, reader: Arc<PlateReader>, vehicles: Vec<usize>) -> Result<Self, String> {
        let cfg = &camera.anpr;
        let formats = Formats::parse(&cfg.formats)?;
        let plate_tracker = (cfg.mode == AnprMode::Dedicated).then(|| {
            // Plates pass through the view: one read starts a track, and a plate never counts as
            // parked (which would let it outlive a gap and take over the next car's plate).
            let tracker = TrackerConfig { min_hits: 1, stationary_motion: -1.0, ..camera.tracker.clone() };
            Tracker::new(&tracker, chrono::Utc::now().timestamp_millis().max(1) as u64)
        });
        Ok(Self {
            cfg: cfg.clone(),
            camera: camera.id.clone(),
            reader,
            formats,
            vehicles,
            tracks: HashMap::new(),
            plate_tracker,
            last_scan: f64::NEG_INFINITY,
            recent: Vec::new(),
        })
    }

    /// Whether plates are looked for in the whole frame rather than in vehicle tracks.
    pub fn dedicated(&self) -> bool {
        self.plate_tracker.is_some()
    }

    /// A vehicle track was seen at `bbox` on this frame: read it if it is due, and return the
    /// track's `anpr` event when its vote is new or better.
    pub fn vehicle(&mut self, track_id: u64, class: usize, bbox: [f32; 4], frame: &Frame, t: f64) -> Option<NewEvent> {
        if self.dedicated() || !self.vehicles.contains(&class) {
            return None;
        }
        let area = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]);
        self.touch(track_id, t);
        let pt = self.tracks.entry(track_id).or_default();
        // Until a plate is out, every gap is a new chance (a parked car never comes closer); after
        // that, only a closer view can improve the read.
        let gap = t - pt.last_read >= READ_GAP;
        let due = pt.attempts == 0 || (gap && (pt.published.is_none() || area >= pt.read_area * CLOSER));
        if pt.attempts >= self.cfg.max_reads || !due {
            return None;
        }
        pt.attempts += 1;
        pt.last_read = t;
        pt.read_area = area;
        let (mx, my) = ((bbox[2] - bbox[0]) * MARGIN, (bbox[3] - bbox[1]) * MARGIN);
        let region = [
            (bbox[0] - mx).max(0.0) as u32,
            (bbox[1] - my).max(0.0) as u32,
            ((bbox[2] + mx).max(0.0) as u32).min(frame.width()),
            ((bbox[3] + my).max(0.0) as u32).min(frame.height()),
        ];
        let reads = self.read(frame, Some(region))?;
        debug!(track_id, read = ?reads.first().map(|r| (&r.text.text, r.text.confidence)), "plate read");
        let read = reads.into_iter().next()?;
        self.vote(track_id, read, bbox, frame, t)
    }

    /// Dedicated mode, on a detection-scheduled frame: read the whole frame, track the plates, and
    /// return the events of the plate tracks whose vote is new or better.
    pub fn scan(&mut self, frame: &Frame, moving: bool, t: f64) -> Vec<NewEvent> {
        let Some(tracker) = &self.plate_tracker else { return Vec::new() };
        // Without motion or plates in view, look only once a second: motion can miss a car that
        // stopped in the lane, or one that arrived between the frames analysis kept.
        if !moving && tracker.tracks().is_empty() && t - self.last_scan < IDLE_SCAN {
            return Vec::new();
        }
        self.last_scan = t;
        let reads = self.read(frame, None).unwrap_or_default();
        debug!(reads = ?reads.iter().map(|r| (&r.text.text, r.text.confidence)).collect::<Vec<_>>(), "plates in frame");
        let dets: Vec<Detection> =
            reads.iter().map(|r| Detection { class: 0, score: r.text.confidence, bbox: r.bbox() }).collect();
        let tracker = self.plate_tracker.as_mut().expect("dedicated");
        for change in tracker.update(&dets, |_| READ_FLOOR, t) {
            if let Change::Ended(track) = change {
                self.tracks.remove(&track.id);
            }
        }
        let seen: Vec<(u64, [f32; 4])> =
            tracker.tracks().iter().filter(|tr| tr.last_seen == t).map(|tr| (tr.id, tr.bbox)).collect();
        let mut events = Vec::new();
        for (id, bbox) in seen {
            self.touch(id, t);
            let best = reads.iter().max_by(|a, b| iou(&a.bbox(), &bbox).total_cmp(&iou(&b.bbox(), &bbox)));
            if let Some(read) = best.filter(|r| iou(&r.bbox(), &bbox) > 0.3) {
                let pt = self.tracks.entry(id).or_default();
                if pt.attempts < self.cfg.max_reads {
                    pt.attempts += 1;
                    events.extend(self.vote(id, read.clone(), bbox, frame, t));
                }
            }
        }
        events
    }

    /// A track with a published plate is still in view: its plate stays recent.
    fn touch(&mut self, track_id: u64, t: f64) {
        if let Some(event_track) = self.tracks.get(&track_id).and_then(|pt| pt.event_track) {
            self.recent.iter_mut().filter(|r| r.event_track == event_track).for_each(|r| r.at = t);
        }
    }

    /// A track ended: forget its reads (its event, if any, stays as last published).
    pub fn forget(&mut self, track_id: u64) {
        self.tracks.remove(&track_id);
    }

    /// Plates in `region` of the frame (default whole), in frame coordinates, best first.
    fn read(&self, frame: &Frame, region: Option<[u32; 4]>) -> Option<Vec<PlateRead>> {
        let rgb = match snapshot::frame_rgb(frame, region) {
            Ok(rgb) => rgb,
            Err(e) => {
                warn!("plate region not converted: {e}");
                return None;
            }
        };
        let reads = match self.reader.read(&rgb, None, &self.formats) {
            Ok(r) => r,
            Err(e) => {
                warn!("plate reading failed: {e}");
                return None;
            }
        };
        let offset = region.map_or((0.0, 0.0), |r| (r[0] as f32, r[1] as f32));
        let (w, h) = (frame.width() as f32, frame.height() as f32);
        // A plate at the frame's edge may be cut off: wait until it is all in view.
        let inside = |b: [f32; 4]| b[0] > EDGE && b[1] > EDGE && b[2] < w - EDGE && b[3] < h - EDGE;
        Some(
            reads
                .into_iter()
                .filter(|r| r.text.confidence >= READ_FLOOR && self.plate_like(&r.text))
                .map(|r| PlateRead { quad: r.quad.map((1.0, 1.0), offset), ..r })
                .filter(|r| inside(r.bbox()))
                .collect(),
        )
    }

    /// Whether a read may be a plate on a live camera: it fits a configured format, or (without
    /// formats) has both letters and digits; a model name or a slogan must not become a plate.
    fn plate_like(&self, text: &crate::anpr::plate::PlateText) -> bool {
        if self.formats.is_empty() {
            text.text.chars().any(|c| c.is_ascii_digit()) && text.text.chars().any(|c| c.is_ascii_uppercase())
        } else {
            text.formatted
        }
    }

    /// Add a read to a track's vote; the event when the vote is confident and new or better.
    fn vote(
        &mut self,
        track_id: u64,
        read: PlateRead,
        vehicle_box: [f32; 4],
        frame: &Frame,
        t: f64,
    ) -> Option<NewEvent> {
        self.recent.retain(|r| t - r.at <= REPEAT_SECS);
        let pt = self.tracks.entry(track_id).or_default();
        pt.consensus.add(read.text.clone());
        if pt.best.as_ref().is_none_or(|(_, b, _)| read.text.confidence > b.text.confidence)
            && let Ok(detached) = frame.detached()
        {
            pt.best = Some((detached, read, vehicle_box));
        }
        let min = self.cfg.min_confidence;
        let mut voted = pt.consensus.vote().filter(|v| v.confidence >= min)?;
        if pt.event_track.is_none() {
            let repeat = self
                .recent
                .iter()
                .find(|r| r.event_track != track_id && edit_distance(&r.voted.plate, &voted.plate) <= 1);
            pt.event_track = Some(repeat.map_or(track_id, |r| r.event_track));
            if let Some(r) = repeat {
                pt.consensus.merge(&r.consensus);
                pt.published = Some(r.voted.clone());
                voted = pt.consensus.vote().filter(|v| v.confidence >= min)?;
            }
        }
        let event_track = pt.event_track.unwrap_or(track_id);
        if let Some(p) = &pt.published
            && p.plate == voted.plate
            && voted.confidence < p.confidence + BETTER
        {
            return None;
        }
        pt.published = Some(voted.clone());
        self.recent.retain(|r| r.event_track != event_track);
        self.recent.push(Recent { event_track, voted: voted.clone(), consensus: pt.consensus.clone(), at: t });
        let (best_frame, best, vehicle_box) = pt.best.as_ref()?;
        let round = |b: [f32; 4]| b.map(|v| v.round() as i64);
        let mut data = json!({
            "track_id": track_id,
            "plate": voted.plate,
            "confidence": (voted.confidence * 1000.0).round() / 1000.0,
            "reads": voted.reads,
            "raw": best.text.raw,
            "plate_box": round(best.bbox()),
            "vehicle_box": round(*vehicle_box),
        });
        if let Some(k) =
            self.cfg.known.iter().find(|k| {
                edit_distance(&crate::anpr::plate::normalise(&k.plate), &voted.plate) <= self.cfg.known_distance
            })
        {
            data["known"] = json!({ "name": k.name, "plate": k.plate });
        }
        // The plate crop, padded a little so the characters are not cut.
        let [x1, y1, x2, y2] = best.bbox();
        let (px, py) = ((x2 - x1) * 0.1, (y2 - y1) * 0.2);
        let crop = [(x1 - px).max(0.0), (y1 - py).max(0.0), x2 + px, y2 + py].map(|v| v as u32);
        Some(NewEvent {
            event_type: EventType::Anpr,
            camera_id: self.camera.clone(),
            timestamp: best_frame.wall,
            frame_number: Some(best_frame.seq as i64),
            data,
            snapshot: Some(best_frame.clone()),
            crop: Some(crop),
            key: Some(format!("anpr:{}:{event_track}", self.camera)),
        })
    }
}
