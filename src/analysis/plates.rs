//! The plate stage of a camera's analysis: reads plates on vehicle tracks (or, on a dedicated
//! ANPR camera, anywhere in the frame, tracked as plates), votes over each track's reads, and
//! publishes one `anpr` event per track, revised when the vote gets better.
//!
//! Reads run on the shared [`ReadQueue`], one job per camera at a time: the frame's due regions
//! go out, and a live camera votes on their plates when they come back, a few frames later. A
//! file source waits for each read, as it waits for everything else, so a file reads the same
//! plates however loaded the machine is.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use serde_json::json;
use tracing::{debug, warn};

use crate::anpr::consensus::{Consensus, Voted};
use crate::anpr::queue::{QueueError, ReadQueue, Reads};
use crate::anpr::{PlateRead, SAME_VEHICLE, Search, legible_vehicle};
use crate::channel::Policy;
use crate::config::{AnprConfig, AnprMode, CameraConfig, TrackerConfig};
use crate::detect::Detection;
use crate::events::{EventType, NewEvent, snapshot};
use crate::frame::Frame;
use crate::geometry::iou;
use crate::metrics::CameraMetrics;
use crate::plate::{Formats, PlateText, SURE, edit_distance};
use crate::throttle::Throttle;
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
/// Seconds between whole-frame reads of a vehicle-mode camera while something moves and no
/// vehicle in view has given a plate: a vehicle too close, or too odd, for the detector to box.
const SCENE_GAP: f64 = 0.4;
/// A track is read again (up to `max_reads`) until its vote's weakest character is [`SURE`],
/// with at least this many reads behind it: one sure read can still have lost a character to a
/// tight box or a frame's edge. A word (text of one kind) is published only with this many reads
/// agreeing: a vehicle carries more lettering than plates (badges, spare-wheel covers, dealer
/// stickers), and of the two, the lettering is also read sure from one frame; a vanity plate in
/// view is read the same on the next frames, while the words one frame finds differ from the
/// next's as the box moves.
const SURE_READS: usize = 2;
/// Plate track ids start this far above the vehicle tracks' (both count up from the time in ms),
/// so the two never collide, and stay below 2^53 (exact in JSON numbers).
const PLATE_IDS: u64 = 10_000_000_000_000;
/// A vehicle with no plate out after this many reads that found none leaves the frame to be read
/// whole (its box may be a trailer, or a cab whose plate is outside it).
const UNREADABLE: u32 = 2;
/// A track seen again after this many seconds unseen may be another vehicle: trackers carry a
/// track over a gap (`max_age_secs`), and the next car to stop in the same place continues it.
/// It gets a fresh read budget; a different plate then starts an event of its own.
const REACQUIRED: f64 = 1.0;
/// A read further than this (in edits) from a track's published plate is another vehicle's.
const OTHER_PLATE: usize = 2;
/// Plate reads this many edits apart on tracks that follow each other (a plate moved, a track
/// broke) are one plate.
const SAME_PLATE: usize = 1;
/// A revision is published when the vote's confidence rises by this much (or the plate changes).
const BETTER: f32 = 0.02;
/// A new track that reads a plate published this recently (one edit apart) is the same vehicle,
/// seen again after its track broke (an occlusion, a missed detection): it revises that event.
const REPEAT_SECS: f64 = 30.0;

/// The reading state of one vehicle (or, when dedicated, one plate) track.
#[derive(Default)]
struct PlateTrack {
    consensus: Consensus,
    /// When the track was last seen.
    seen: f64,
    /// Reads that found a plate.
    attempts: u32,
    /// Reads that found none (the plate was cut off, turned away, or blurred); a budget of their
    /// own, so a car read as it arrives still gets its reads once it is in full view.
    empty: u32,
    last_read: f64,
    read_area: f32,
    /// The most confident read so far: its frame is the snapshot.
    best: Option<(Frame, PlateRead, [f32; 4])>,
    published: Option<Voted>,
    /// The track whose event this one revises (its own key unless it repeats a recent plate).
    event_track: Option<u64>,
    /// The event key this track takes when it repeats no recent plate: its id, or a fresh key
    /// once the tracker carried it over to the next vehicle.
    own_key: Option<u64>,
    /// The track ended while a read of it was out: forget it once the read is back.
    ended: bool,
}

impl PlateTrack {
    /// Whether `read` is a sure read of another plate on a track whose plate is out: the tracker
    /// carried the track over to the next vehicle (one left and another stopped in its place
    /// within the tracker's max_age).
    fn next_vehicle(&self, read: &PlateText, min: f32) -> bool {
        read.confidence >= min
            && self.published.as_ref().is_some_and(|p| edit_distance(&p.plate, &read.text) > OTHER_PLATE)
    }
}

/// A vehicle region due for a read on the current frame.
struct Due {
    track_id: u64,
    bbox: [f32; 4],
    region: [u32; 4],
}

/// What a job sent to the read queue was for.
enum Target {
    /// Vehicle tracks, one region each.
    Vehicles(Vec<Due>),
    /// Dedicated mode: the whole frame.
    Frame,
}

/// A read sent to the queue and not yet voted on.
struct InFlight {
    frame: Frame,
    t: f64,
    target: Target,
    reply: Receiver<Reads>,
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
    queue: ReadQueue,
    formats: Arc<Formats>,
    /// A file source waits for the queue and for its read (nothing skipped, same result on any
    /// machine); a live one skips a read when the queue is full, and goes on while it runs.
    wait: bool,
    metrics: CameraMetrics,
    /// Class ids of the vehicles whose tracks are read.
    vehicles: Vec<usize>,
    tracks: HashMap<u64, PlateTrack>,
    dedicated: bool,
    /// Plates found by reading the whole frame, tracked as objects of their own: every plate on
    /// a dedicated camera, and on a vehicle-mode camera those no vehicle track gave.
    plate_tracker: Tracker,
    last_scan: f64,
    /// The vehicles in view on the last frame they were seen: `(t, vehicles, unreadable)`, where
    /// unreadable ones have no plate out after [`UNREADABLE`] reads that found none.
    view: (f64, u32, u32),
    /// The next id for an event of a track that turned out to carry a second vehicle.
    next_event: u64,
    recent: Vec<Recent>,
    due: Vec<Due>,
    in_flight: Option<InFlight>,
    failing: Throttle,
}

impl PlateStage {
    /// The stage for a camera; `vehicles` are the class ids of `cfg.labels`.
    pub fn new(
        camera: &CameraConfig,
        queue: ReadQueue,
        vehicles: Vec<usize>,
        metrics: CameraMetrics,
    ) -> Result<Self, String> {
        let cfg = &camera.anpr;
        let formats = Formats::parse(&cfg.formats)?;
        // Plates pass through the view: one read starts a track, and a plate never counts as
        // parked (which would let it outlive a gap and take over the next car's plate).
        let tracker = TrackerConfig { min_hits: 1, stationary_motion: -1.0, ..camera.tracker.clone() };
        let now = chrono::Utc::now().timestamp_millis().max(1) as u64;
        let plate_tracker = Tracker::new(&tracker, now + PLATE_IDS);
        Ok(Self {
            cfg: cfg.clone(),
            camera: camera.id.clone(),
            queue,
            formats: Arc::new(formats),
            wait: camera.full_policy() == Policy::Block,
            metrics,
            vehicles,
            tracks: HashMap::new(),
            dedicated: cfg.mode == AnprMode::Dedicated,
            plate_tracker,
            last_scan: f64::NEG_INFINITY,
            view: (f64::NEG_INFINITY, 0, 0),
            next_event: now + 2 * PLATE_IDS,
            recent: Vec::new(),
            due: Vec::new(),
            in_flight: None,
            failing: Throttle::default(),
        })
    }

    /// The queue this camera's reads go to.
    pub fn queue(&self) -> ReadQueue {
        self.queue.clone()
    }

    /// Whether detections of `class` are vehicles whose plates are read.
    pub fn is_vehicle(&self, class: usize) -> bool {
        self.vehicles.contains(&class)
    }

    /// Whether plates are looked for in the whole frame rather than in vehicle tracks.
    pub fn dedicated(&self) -> bool {
        self.dedicated
    }

    /// A vehicle track was seen at `bbox` on this frame: mark it for reading if it is due (the
    /// read goes out with [`submit`](Self::submit)).
    pub fn vehicle(&mut self, track_id: u64, class: usize, bbox: [f32; 4], frame: &Frame, t: f64) {
        if self.dedicated() || !self.is_vehicle(class) {
            return;
        }
        let area = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]);
        self.touch(track_id, t);
        let pt = self.tracks.entry(track_id).or_insert_with(|| PlateTrack { seen: t, ..PlateTrack::default() });
        let returned = t - pt.seen > REACQUIRED;
        pt.seen = t;
        if returned {
            (pt.attempts, pt.empty) = (0, 0);
        }
        if self.view.0 != t {
            self.view = (t, 0, 0);
        }
        self.view.1 += 1;
        // A vehicle too far away to show a legible plate is read once it comes nearer; reading it
        // now would spend its read budget (`max_reads` reads that find nothing) before it does.
        let legible = legible_vehicle(bbox, (frame.width(), frame.height()));
        self.view.2 += u32::from(!legible || (pt.published.is_none() && pt.empty >= UNREADABLE));
        if !legible {
            return;
        }
        // Until the vote is sure, every gap is a new chance (a parked car never comes closer);
        // after that, only a closer view can improve the read.
        let gap = t - pt.last_read >= READ_GAP;
        // The vote now, not as last published: a read that agrees without raising the confidence
        // publishes nothing, but makes the vote sure. Voted only when a read could go out.
        let unsure = || pt.consensus.vote().is_none_or(|v| v.confidence < SURE || v.reads < SURE_READS);
        let due = pt.attempts + pt.empty == 0 || (gap && (returned || area >= pt.read_area * CLOSER || unsure()));
        if pt.attempts >= self.cfg.max_reads || pt.empty >= self.cfg.max_reads || !due {
            return;
        }
        let (mx, my) = ((bbox[2] - bbox[0]) * MARGIN, (bbox[3] - bbox[1]) * MARGIN);
        let region = [
            (bbox[0] - mx).max(0.0) as u32,
            (bbox[1] - my).max(0.0) as u32,
            ((bbox[2] + mx).max(0.0) as u32).min(frame.width()),
            ((bbox[3] + my).max(0.0) as u32).min(frame.height()),
        ];
        self.due.push(Due { track_id, bbox, region });
    }

    /// Send this frame's due vehicle reads to the queue, unless a read is still out; returns the
    /// events of a read that came back (a file source's, at once).
    pub fn submit(&mut self, frame: &Frame, t: f64) -> Vec<NewEvent> {
        let mut due = std::mem::take(&mut self.due);
        // One vehicle tracked under two labels is read once; the other track stays due.
        let mut kept: Vec<[f32; 4]> = Vec::new();
        due.retain(|d| {
            let other = kept.iter().any(|k| iou(k, &d.bbox) >= SAME_VEHICLE);
            kept.push(d.bbox);
            !other
        });
        let mut events = self.collect();
        if due.is_empty() || self.in_flight.is_some() {
            return events;
        }
        let images: Option<Vec<_>> = due.iter().map(|d| region_rgb(frame, Some(d.region))).collect();
        if let Some(images) = images
            && self.send(images, frame, t, Target::Vehicles(due))
            && let Some(InFlight { target: Target::Vehicles(sent), .. }) = &self.in_flight
        {
            for d in sent {
                let pt = self.tracks.entry(d.track_id).or_default();
                pt.last_read = t;
                pt.read_area = (d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1]);
            }
        }
        if self.wait {
            events.extend(self.wait());
        }
        events
    }

    /// On a detection-scheduled frame, after the vehicle reads went out: send the whole frame to
    /// be read when it is due and no read is out; returns the events of a read that came back (a
    /// file source's, at once).
    ///
    /// A dedicated camera reads every such frame, and once a second with nothing moving or in view
    /// (motion can miss a car that stopped in the lane, or one that arrived between the frames
    /// analysis kept). A vehicle-mode camera reads the frame, every [`SCENE_GAP`], only while
    /// something moves or a plate found this way is in view, no vehicle is `arriving` (in view
    /// with its track not yet confirmed), and no vehicle in view is readable (has a plate out, or
    /// has not yet failed [`UNREADABLE`] reads): this is how close-up vehicles that fill the
    /// frame, and those the detector misses or mislabels, are still read, without reading every
    /// sticker and badge on a vehicle that was.
    pub fn scan(&mut self, frame: &Frame, moving: bool, arriving: bool, t: f64) -> Vec<NewEvent> {
        let plates_in_view = !self.plate_tracker.tracks().is_empty();
        let due = if self.dedicated {
            moving || plates_in_view || t - self.last_scan >= IDLE_SCAN
        } else {
            let readable = self.view.0 == t && self.view.1 > self.view.2;
            (moving || plates_in_view) && !readable && !arriving && t - self.last_scan >= SCENE_GAP
        };
        let mut events = self.collect();
        if !due {
            return events;
        }
        if self.in_flight.is_none()
            && let Some(image) = region_rgb(frame, None)
        {
            self.last_scan = t;
            self.send(vec![image], frame, t, Target::Frame);
            if self.wait {
                events.extend(self.wait());
            }
        }
        events
    }

    /// The events of the read out, if it is back (without waiting).
    pub fn collect(&mut self) -> Vec<NewEvent> {
        let reads = match self.in_flight.as_ref().map(|f| f.reply.try_recv()) {
            Some(Ok(reads)) => Some(reads),
            Some(Err(TryRecvError::Disconnected)) => Some(Vec::new()),
            Some(Err(TryRecvError::Empty)) | None => return Vec::new(),
        };
        self.finish_read(reads)
    }

    /// The events of the read out, waiting for it (a file source, or the source ended).
    pub fn wait(&mut self) -> Vec<NewEvent> {
        let reads = self.in_flight.as_ref().map(|f| f.reply.recv().unwrap_or_default());
        self.finish_read(reads)
    }

    fn send(&mut self, images: Vec<image::RgbImage>, frame: &Frame, t: f64, target: Target) -> bool {
        let count = images.len();
        let search = match target {
            Target::Vehicles(_) => Search::Vehicle,
            Target::Frame if self.dedicated => Search::Scene,
            Target::Frame => Search::Unboxed,
        };
        match self.queue.submit(images, search, self.formats.clone(), self.wait) {
            Ok(reply) => {
                self.in_flight = Some(InFlight { frame: frame.clone(), t, target, reply });
                true
            }
            Err(QueueError::Full) => {
                self.metrics.plate_reads_skipped.inc_by(count as u64);
                false
            }
            Err(e @ QueueError::Stopped) => {
                self.failing.warn(format_args!("plate read not sent: {e}"));
                false
            }
        }
    }

    /// Vote on a read that came back (`None`: nothing was out).
    fn finish_read(&mut self, reads: Option<Reads>) -> Vec<NewEvent> {
        let (Some(reads), Some(InFlight { frame, t, target, .. })) = (reads, self.in_flight.take()) else {
            return Vec::new();
        };
        self.metrics.plate_reads.inc_by(reads.len() as u64);
        let offsets: Vec<(f32, f32)> = match &target {
            Target::Frame => vec![(0.0, 0.0)],
            Target::Vehicles(due) => due.iter().map(|d| (d.region[0] as f32, d.region[1] as f32)).collect(),
        };
        let mut plates: Vec<Vec<PlateRead>> = reads
            .into_iter()
            .zip(offsets)
            .map(|(r, offset)| {
                r.map(|reads| self.plates_in(&frame, reads, offset))
                    .inspect_err(|e| self.failing.warn(format_args!("plate reading failed: {e}")))
                    .unwrap_or_default()
            })
            .collect();
        let events = match target {
            Target::Frame => {
                let reads = plates.pop().unwrap_or_default();
                self.track_plates(reads, &frame, t)
            }
            Target::Vehicles(due) => {
                let mut events = Vec::new();
                for (d, reads) in due.into_iter().zip(plates) {
                    debug!(track_id = d.track_id, read = ?reads.first().map(|r| (&r.text.text, r.text.confidence)), "plate read");
                    let Some(pt) = self.tracks.get_mut(&d.track_id) else { continue };
                    match reads.into_iter().next() {
                        Some(read) => {
                            pt.attempts += 1;
                            events.extend(self.vote(d.track_id, read, d.bbox, &frame, t));
                        }
                        None => pt.empty += 1,
                    }
                }
                events
            }
        };
        self.tracks.retain(|_, pt| !pt.ended);
        events
    }

    /// Dedicated mode: track the plates read in a frame, and vote on each track's read.
    fn track_plates(&mut self, reads: Vec<PlateRead>, frame: &Frame, t: f64) -> Vec<NewEvent> {
        debug!(reads = ?reads.iter().map(|r| (&r.text.text, r.text.confidence)).collect::<Vec<_>>(), "plates in frame");
        let dets: Vec<Detection> =
            reads.iter().map(|r| Detection { class: 0, score: r.text.confidence, bbox: r.bbox() }).collect();
        let tracker = &mut self.plate_tracker;
        for change in tracker.update(&dets, |_| READ_FLOOR, t) {
            if let Change::Ended(track) = change {
                self.tracks.remove(&track.id);
            }
        }
        let seen: Vec<(u64, [f32; 4])> =
            tracker.tracks().iter().filter(|tr| tr.last_seen == t).map(|tr| (tr.id, tr.bbox)).collect();
        let mut events = Vec::new();
        let seen_ids: Vec<u64> = seen.iter().map(|s| s.0).collect();
        for (id, bbox) in seen {
            self.touch(id, t);
            let best = reads.iter().max_by(|a, b| iou(&a.bbox(), &bbox).total_cmp(&iou(&b.bbox(), &bbox)));
            if let Some(read) = best.filter(|r| iou(&r.bbox(), &bbox) > 0.3) {
                if !self.tracks.contains_key(&id) {
                    self.carry_over(id, &read.text.text, &seen_ids);
                }
                let pt = self.tracks.entry(id).or_default();
                // The next car's plate in the same place has reads of its own to go (see `vote`).
                if pt.attempts < self.cfg.max_reads || pt.next_vehicle(&read.text, self.cfg.min_confidence) {
                    pt.attempts += 1;
                    events.extend(self.vote(id, read.clone(), bbox, frame, t));
                }
            }
        }
        events
    }

    /// A plate read on a new track whose text is within [`SAME_PLATE`] edits of a plate track not
    /// seen in this frame is that plate, moved further than its own width since its last read:
    /// whole-frame reads are tenths of a second apart, and a passing car's plate crosses its own
    /// width in less, so the boxes no longer overlap. The new track takes over its reads and
    /// event, and its vote goes on.
    fn carry_over(&mut self, id: u64, text: &str, seen: &[u64]) {
        let moved = self.tracks.iter().find(|(other, pt)| {
            !seen.contains(other)
                && !pt.ended
                && pt.consensus.vote().is_some_and(|v| edit_distance(&v.plate, text) <= SAME_PLATE)
        });
        if let Some(&other) = moved.map(|(other, _)| other)
            && let Some(pt) = self.tracks.remove(&other)
        {
            self.tracks.insert(id, pt);
        }
    }

    /// A track with a published plate is still in view: its plate stays recent.
    fn touch(&mut self, track_id: u64, t: f64) {
        if let Some(event_track) = self.tracks.get(&track_id).and_then(|pt| pt.event_track) {
            self.recent.iter_mut().filter(|r| r.event_track == event_track).for_each(|r| r.at = t);
        }
    }

    /// A track ended: forget its reads (its event, if any, stays as last published), once a read
    /// of it that is still out has been voted on.
    pub fn forget(&mut self, track_id: u64) {
        let reading = matches!(&self.in_flight, Some(InFlight { target: Target::Vehicles(due), .. })
            if due.iter().any(|d| d.track_id == track_id));
        if reading {
            if let Some(pt) = self.tracks.get_mut(&track_id) {
                pt.ended = true;
            }
        } else {
            self.tracks.remove(&track_id);
        }
        self.due.retain(|d| d.track_id != track_id);
    }

    /// The reads of a region at `offset` that may be this camera's plates, in frame coordinates,
    /// best first.
    fn plates_in(&self, frame: &Frame, reads: Vec<PlateRead>, offset: (f32, f32)) -> Vec<PlateRead> {
        let (w, h) = (frame.width() as f32, frame.height() as f32);
        // A plate at the frame's edge may be cut off: wait until it is all in view.
        let inside = |b: [f32; 4]| b[0] > EDGE && b[1] > EDGE && b[2] < w - EDGE && b[3] < h - EDGE;
        reads
            .into_iter()
            .filter(|r| r.text.confidence >= READ_FLOOR)
            .map(|r| PlateRead { quad: r.quad.map((1.0, 1.0), offset), ..r })
            .filter(|r| inside(r.bbox()))
            .collect()
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
        let min = self.cfg.min_confidence;
        let pt = self.tracks.entry(track_id).or_default();
        // A vehicle keeps its plate: the next vehicle's is an event of its own, unless another
        // track (a second box on that vehicle) has just published it.
        if pt.next_vehicle(&read.text, min) {
            *pt = PlateTrack { own_key: Some(self.next_event), seen: pt.seen, ..PlateTrack::default() };
            self.next_event += 1;
        }
        pt.consensus.add(read.text.clone());
        if pt.best.as_ref().is_none_or(|(_, b, _)| read.text.confidence > b.text.confidence)
            && let Ok(detached) = frame.detached()
        {
            pt.best = Some((detached, read, vehicle_box));
        }
        // Once out, an event follows its vote: a plate the later reads out-vote is revised even
        // where the split vote is no longer sure enough to start an event of its own. A word
        // starts one only once [`SURE_READS`] reads agree.
        let stands = |pt: &PlateTrack, v: &Voted| {
            (v.confidence >= min && (v.serial || v.reads >= SURE_READS))
                || pt.published.as_ref().is_some_and(|p| p.plate != v.plate)
        };
        let mut voted = pt.consensus.vote().filter(|v| stands(pt, v))?;
        if pt.event_track.is_none() {
            let own = pt.own_key.unwrap_or(track_id);
            let repeat = self
                .recent
                .iter()
                .find(|r| r.event_track != own && edit_distance(&r.voted.plate, &voted.plate) <= SAME_PLATE);
            pt.event_track = Some(repeat.map_or(own, |r| r.event_track));
            if let Some(r) = repeat {
                pt.consensus.merge(&r.consensus);
                pt.published = Some(r.voted.clone());
                voted = pt.consensus.vote().filter(|v| stands(pt, v))?;
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
        if let Some(k) = self
            .cfg
            .known
            .iter()
            .find(|k| edit_distance(&crate::plate::normalise(&k.plate), &voted.plate) <= self.cfg.known_distance)
        {
            data["known"] = json!({ "name": k.name, "plate": k.plate });
        }
        // The plate crop, padded a little so the characters are not cut.
        let [x1, y1, x2, y2] = best.bbox();
        let (px, py) = ((x2 - x1) * 0.1, (y2 - y1) * 0.2);
        let crop = [(x1 - px).max(0.0), (y1 - py).max(0.0), x2 + px, y2 + py].map(|v| v as u32);
        Some(
            NewEvent::at(EventType::Anpr, best_frame, data)
                .with_snapshot(best_frame.clone())
                .with_crop(crop)
                .keyed(format!("anpr:{}:{event_track}", self.camera)),
        )
    }
}

/// A region of the frame (default whole) as RGB, for reading.
fn region_rgb(frame: &Frame, region: Option<[u32; 4]>) -> Option<image::RgbImage> {
    snapshot::frame_rgb(frame, region).inspect_err(|e| warn!("plate region not converted: {e}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anpr::PlateReader;
    use crate::anpr::textdet::Quad;
    use crate::config::Config;
    use crate::inference::Runtime;
    use crate::metrics::Metrics;
    use gstreamer as gst;
    use gstreamer_video as gst_video;

    /// A camera's plate stage in `mode`, with the real plate models behind its queue; [`CAR`] is
    /// its one vehicle class.
    fn stage(mode: &str) -> PlateStage {
        let config = Config::parse(
            &format!("[[cameras]]\nid = \"gate\"\nurl = \"rtsp://127.0.0.1/gate\"\n[cameras.anpr]\nenabled = true\nmode = \"{mode}\"\n"),
            "test.toml",
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let runtime = Runtime::load(&config.inference).unwrap();
        let reader = PlateReader::load(&config.models, &runtime, &config.inference, metrics.clone()).unwrap();
        let camera = &config.cameras[0];
        PlateStage::new(camera, ReadQueue::spawn(Arc::new(reader)), vec![CAR], metrics.camera(&camera.id)).unwrap()
    }

    const CAR: usize = 2;

    fn dedicated_stage() -> PlateStage {
        stage("dedicated")
    }

    fn frame() -> Frame {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, 1280, 720).build().unwrap();
        Frame {
            camera: "gate".into(),
            seq: 0,
            pts: None,
            wall: chrono::Utc::now(),
            info: Arc::new(info.clone()),
            buffer: gst::Buffer::from_mut_slice(vec![128u8; info.size()]),
        }
    }

    /// A read of `text`, every character at `p`, in the box at `x`.
    fn read(text: &str, p: f32, x: f32) -> PlateRead {
        let text = PlateText::sample(text, &vec![p; text.len()]);
        PlateRead { text, quad: Quad([(x, 400.0), (x + 120.0, 400.0), (x + 120.0, 440.0), (x, 440.0)]) }
    }

    fn plate_and_key(e: &NewEvent) -> (String, String) {
        (e.data["plate"].as_str().unwrap().to_string(), e.key.clone().unwrap())
    }

    #[test]
    fn a_plate_that_moved_past_its_box_keeps_its_event_and_its_vote_revises_it() {
        let mut stage = dedicated_stage();
        let frame = frame();
        let first = stage.track_plates(vec![read("FE5R20", 0.7, 100.0)], &frame, 0.0);
        let (plate, key) = plate_and_key(&first[0]);
        assert_eq!(plate, "FE5R20");
        // A third of a second later the plate is past its own width: a new box, one edit off.
        let second = stage.track_plates(vec![read("FE5R2D", 0.95, 300.0)], &frame, 0.3);
        assert_eq!(second.len(), 1, "the later, surer read revises the event");
        // Split one to one, the vote is under min_confidence, but the event follows it.
        assert_eq!(plate_and_key(&second[0]), ("FE5R2D".to_string(), key));
    }

    #[test]
    fn a_moving_plates_reads_vote_together_across_its_broken_boxes() {
        let mut stage = dedicated_stage();
        let frame = frame();
        // Two unsure reads, each past the last one's box: no event yet, and no box overlaps.
        assert!(stage.track_plates(vec![read("FE5R2D", 0.5, 100.0)], &frame, 0.0).is_empty());
        assert!(stage.track_plates(vec![read("FE5R2D", 0.5, 300.0)], &frame, 0.3).is_empty());
        let events = stage.track_plates(vec![read("FE5R2D", 0.9, 500.0)], &frame, 0.6);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data["reads"], 3, "{}", events[0].data);
    }

    #[test]
    fn the_next_cars_plate_in_the_same_place_is_an_event_of_its_own() {
        let mut stage = dedicated_stage();
        let frame = frame();
        let first = stage.track_plates(vec![read("ABC1234", 0.95, 100.0)], &frame, 0.0);
        let (_, key) = plate_and_key(&first[0]);
        let mut t = 0.0;
        // The budget is spent on the first plate...
        for _ in 0..6 {
            t += 0.2;
            stage.track_plates(vec![read("ABC1234", 0.95, 100.0)], &frame, t);
        }
        // ...and the next car stops where it stood, before the track could end.
        let next = stage.track_plates(vec![read("XYZ9876", 0.95, 100.0)], &frame, t + 0.2);
        assert_eq!(next.len(), 1);
        let (plate, next_key) = plate_and_key(&next[0]);
        assert_eq!(plate, "XYZ9876");
        assert_ne!(next_key, key);
    }

    #[test]
    fn a_track_carried_to_a_plate_another_track_just_published_revises_that_event() {
        let mut stage = dedicated_stage();
        let frame = frame();
        let first = stage.track_plates(vec![read("ABC1234", 0.95, 100.0)], &frame, 0.0);
        let (_, first_key) = plate_and_key(&first[0]);
        // The next car's plate is published from a box of its own...
        let next = stage.track_plates(vec![read("XYZ9876", 0.95, 500.0)], &frame, 0.2);
        let (_, next_key) = plate_and_key(&next[0]);
        // ...and then read where the first plate stood, on the first plate's track.
        let again = stage.track_plates(vec![read("XYZ9876", 0.99, 100.0)], &frame, 0.4);
        let keys: Vec<String> = again.iter().map(|e| plate_and_key(e).1).collect();
        assert_eq!(keys, std::slice::from_ref(&next_key), "one car, one event (the surer read revises it)");
        assert_ne!(next_key, first_key);
    }

    #[test]
    fn a_word_is_a_vehicles_plate_only_once_two_reads_agree() {
        let mut stage = stage("vehicle");
        let frame = frame();
        let bbox = [100.0, 300.0, 400.0, 500.0];
        // A spare-wheel cover and a dealer's sticker, each read sure once: no plate.
        assert!(stage.vote(1, read("CROSS", 0.95, 150.0), bbox, &frame, 0.0).is_none());
        assert!(stage.vote(1, read("CARBRAX", 0.99, 150.0), bbox, &frame, 0.2).is_none());
        // A vanity plate reads the same again.
        let event = stage.vote(1, read("CARBRAX", 0.99, 150.0), bbox, &frame, 0.4).expect("two reads agree");
        assert_eq!((event.data["plate"].as_str(), event.data["reads"].as_u64()), (Some("CARBRAX"), Some(2)));
        // A serial needs one sure read.
        assert!(stage.vote(2, read("ABC1234", 0.95, 150.0), bbox, &frame, 0.0).is_some());
    }

    #[test]
    fn a_far_vehicle_is_read_once_it_is_near_enough_to_show_a_legible_plate() {
        let mut stage = stage("vehicle");
        let frame = frame();
        // 100 px wide in a 1280 px frame: its plate would be 17–50 px wide. Seconds of it coming
        // nearer send no read (which would use up the track's budget of reads that find nothing).
        for i in 0..20 {
            stage.vehicle(1, CAR, [600.0, 300.0, 700.0, 360.0], &frame, f64::from(i) * 0.2);
            assert!(stage.due.is_empty(), "a far vehicle is not read");
        }
        stage.vehicle(1, CAR, [500.0, 250.0, 800.0, 450.0], &frame, 4.0);
        assert_eq!(stage.due.len(), 1, "the same vehicle, near enough, is read");
        // A vehicle as narrow, cut by the frame's edge, may be all plate: it is read.
        stage.vehicle(2, CAR, [1180.0, 300.0, 1280.0, 360.0], &frame, 4.0);
        assert_eq!(stage.due.len(), 2);
    }
}
