//! The object stage of a camera's analysis: detection gated by motion, tracking, zones, and the
//! `tracking` events.
//!
//! - Gating (Frigate-style). The detector runs at most `detect_fps` times a second, and only
//!   when there is motion or a track that may still be moving. When the motion regions and the
//!   moving tracks cover a small part of the frame, it runs on a padded crop around them.
//! - Events. `start` comes once a track is confirmed, `update` when its zones or stationary
//!   state change or a clearly better snapshot is found (rate-capped), and `end` when it is
//!   lost. Each carries the frame with the track's best score as its snapshot.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::plates::PlateStage;
use crate::anpr::queue::ReadQueue;
use crate::config::CameraConfig;
use crate::detect::{Detection, Detector, Fit, Pending};
use crate::events::{EventType, NewEvent};
use crate::frame::Frame;
use crate::geometry::inside;
use crate::metrics::CameraMetrics;
use crate::motion::Motion;
use crate::status::CameraStatus;
use crate::throttle::Throttle;
use crate::track::{Change, Track, Tracker};

/// Detections below this score are not even given to the tracker.
const DETECT_FLOOR: f32 = 0.1;
/// Crops smaller than this fraction of the frame (or of its model input) are worth running instead
/// of the whole frame.
const CROP_MAX_AREA: f32 = 0.5;
/// The least side, in model pixels, of a crop at the frame's scale: four of YOLOX's coarsest
/// cells, so an object the motion only grazes is still seen with some context around it.
const MIN_CROP_SIDE: f32 = 128.0;
/// Seconds early a frame may be and still take a scheduled detection.
const SCHEDULE_SLACK: f64 = 0.005;
/// Detections a camera may have out at once: two at the model (a session per core runs them side
/// by side) while the next is laid out and queued, so a session never waits on the camera. At
/// two, one camera kept 0.9 of two cores' sessions busy.
const MAX_IN_FLIGHT: usize = 3;
/// A snapshot is replaced when the score improves by this much.
const BETTER_SNAPSHOT: f32 = 0.1;

/// A padded crop of `frame` around `boxes` and how to scale it, or `None` for the whole frame.
/// Widening any box only ever widens the crop.
fn crop_around(detector: &Detector, frame: &Frame, boxes: impl Iterator<Item = [f32; 4]>) -> Option<([u32; 4], Fit)> {
    let (fw, fh) = (frame.width() as f32, frame.height() as f32);
    let [x1, y1, x2, y2] = boxes.fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |u, b| {
        [u[0].min(b[0]), u[1].min(b[1]), u[2].max(b[2]), u[3].max(b[3])]
    });
    if x1 >= x2 || y1 >= y2 {
        return None;
    }
    let place = |w: f32, h: f32| {
        let (w, h) = (w.min(fw), h.min(fh));
        let left = ((x1 + x2 - w) / 2.0).clamp(0.0, fw - w) as u32;
        let top = ((y1 + y2 - h) / 2.0).clamp(0.0, fh - h) as u32;
        // Whole pixels of the size asked, never one more: a crop sized to fill its canvas must
        // not round up into the next one.
        [left, top, left + w as u32, top + h as u32]
    };
    // Pad by a third of the region: objects extend past their moving parts.
    let (pw, ph) = ((x2 - x1) * 1.66, (y2 - y1) * 1.66);
    // A frame much larger than the model's input: a crop at least the input's size, scaled up to
    // it, sees small objects at up to the frame's own resolution (never upscaled, which would
    // only blur).
    let (w, h) = (pw.max(416.0).min(fw), ph.max(416.0).min(fh));
    if w * h <= CROP_MAX_AREA * fw * fh {
        return Some((place(w, h), Fit::Grid));
    }
    // Otherwise the region at the whole frame's scale, grown to fill its canvas (padding costs
    // the model as much as picture), when that canvas is a small enough part of the frame's.
    let fit = Fit::Frame(frame.width(), frame.height());
    let scale = detector.scale(frame.width(), frame.height(), Fit::Grid);
    let least = MIN_CROP_SIDE / scale;
    let (cw, ch) = detector.input_size(pw.max(least).min(fw) as u32, ph.max(least).min(fh) as u32, fit);
    let (whole_w, whole_h) = detector.input_size(frame.width(), frame.height(), Fit::Grid);
    if (cw * ch) as f32 > CROP_MAX_AREA * (whole_w * whole_h) as f32 {
        return None;
    }
    Some((place(cw as f32 / scale, ch as f32 / scale), fit))
}

/// What has been published about one confirmed track.
struct Published {
    /// 1 for this camera's first confirmed track, 2 for the next: short enough to read.
    number: u64,
    label: String,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    zones: Vec<String>,
    best: Frame,
    /// The track's box in `best`.
    best_box: [f32; 4],
    best_score: f32,
    updates: VecDeque<f64>,
}

/// A detection out at the model, with what taking it in needs.
struct InFlight {
    pending: Pending,
    frame: Frame,
    /// Whether its frame had motion.
    moving: bool,
    t: f64,
    started: Instant,
}

/// Detection, tracking and tracking events for one camera.
pub struct ObjectStage {
    cam: CameraConfig,
    detector: Arc<Detector>,
    /// Per class id: (min score, min area in pixels² as a fraction of the frame).
    classes: HashMap<usize, (f32, f64)>,
    tracker: Tracker,
    interval: f64,
    next_detect: Option<f64>,
    published: HashMap<u64, Published>,
    /// Tracks confirmed so far, across restarts of the stage.
    confirmed: u64,
    metrics: CameraMetrics,
    status: Arc<CameraStatus>,
    plates: Option<PlateStage>,
    failing: Throttle,
    /// Detections out at the model, oldest first, taken in in order.
    in_flight: VecDeque<InFlight>,
}

impl ObjectStage {
    /// The stage for `cam`, reading plates on `plates` if the camera has ANPR enabled; unknown
    /// labels are an error naming them.
    pub fn new(
        cam: &CameraConfig,
        detector: Arc<Detector>,
        plates: Option<ReadQueue>,
        metrics: CameraMetrics,
        status: Arc<CameraStatus>,
    ) -> Result<Self, String> {
        let class_of = |label: &String| {
            detector.class_of(label).ok_or_else(|| format!("camera {}: the detector has no label `{label}`", cam.id))
        };
        let mut classes = HashMap::new();
        for label in &cam.detection.labels {
            classes.insert(class_of(label)?, cam.detection.thresholds(label));
        }
        let plates = match plates {
            Some(queue) if cam.anpr.enabled => {
                let vehicles = cam.anpr.labels.iter().map(class_of).collect::<Result<_, _>>()?;
                Some(PlateStage::new(cam, queue, vehicles, metrics.clone())?)
            }
            _ => None,
        };
        // Track ids stay unique across restarts: they start from the current time in ms.
        let first_id = Utc::now().timestamp_millis().max(1) as u64;
        Ok(Self {
            tracker: Tracker::new(&cam.tracker, first_id),
            interval: 1.0 / cam.detect_fps,
            cam: cam.clone(),
            detector,
            classes,
            next_detect: None,
            published: HashMap::new(),
            confirmed: 0,
            metrics,
            status,
            plates,
            failing: Throttle::default(),
            in_flight: VecDeque::new(),
        })
    }

    /// A stage with the same camera, models and plate queue, and no tracks: what analysis
    /// starts again with after a failure.
    pub fn fresh(&self) -> Result<Self, String> {
        let plates = self.plates.as_ref().map(PlateStage::queue);
        let stage = Self::new(&self.cam, self.detector.clone(), plates, self.metrics.clone(), self.status.clone())?;
        Ok(Self { confirmed: self.confirmed, ..stage })
    }

    /// Run on one frame at stream time `t`; returns the events it produced. A detection is
    /// submitted and left running: the next frames' motion goes on meanwhile, and results are
    /// applied in order (see [`Self::settle`]).
    pub fn process(&mut self, frame: &Frame, motion: &Motion, t: f64) -> Vec<NewEvent> {
        let mut events = self.poll();
        while self.in_flight.front_mut().is_some_and(|f| f.pending.ready()) {
            events.extend(self.take_in_oldest());
        }
        // A schedule, not "time since last": the long-run rate stays at detect_fps, and timestamp
        // jitter (RTP) cannot skip a frame that is due.
        if self.next_detect.is_some_and(|due| t + SCHEDULE_SLACK < due) {
            return events;
        }
        // Gating and the crop read the tracks, so the detections that are out come in first,
        // unless this decision cannot depend on them: a frame with motion is detected whatever
        // the tracks, and moving tracks only widen the crop, so when its motion alone already
        // calls for the whole frame the outcome is the same either way.
        let regions = motion.regions.iter().map(|r| r.map(|v| v as f32));
        if motion.is_empty() || crop_around(&self.detector, frame, regions).is_some() {
            events.extend(self.settle());
        }
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            events.extend(self.take_in_oldest());
        }
        self.next_detect = Some(match self.next_detect {
            Some(due) if t - due < self.interval => due + self.interval,
            _ => t + self.interval,
        });
        if let Some(plates) = self.plates.as_mut().filter(|p| p.dedicated()) {
            events.extend(plates.scan(frame, !motion.is_empty(), false, t));
        }
        if motion.is_empty() && !self.tracker.has_moving() {
            // Nothing can have changed; only let stationary tracks age.
            let classes = &self.classes;
            let changes = self.tracker.update(&[], |c| threshold(classes, c), t);
            events.extend(self.events(changes, frame, t));
            if let Some(plates) = self.plates.as_mut().filter(|p| !p.dedicated()) {
                events.extend(plates.scan(frame, false, false, t));
            }
            return events;
        }
        let (crop, fit) = self.crop(frame, motion, t).map_or((None, Fit::Grid), |(c, fit)| (Some(c), fit));
        let started = Instant::now();
        match self.detector.submit(&frame.buffer, &frame.info, crop, fit, DETECT_FLOOR) {
            Ok(pending) => self.in_flight.push_back(InFlight {
                pending,
                frame: frame.clone(),
                moving: !motion.is_empty(),
                t,
                started,
            }),
            Err(e) => self.failing.warn(format_args!("detection failed: {e}")),
        }
        events
    }

    /// Take in every detection that is out, in order, waiting for them if need be.
    pub fn settle(&mut self) -> Vec<NewEvent> {
        let mut events = Vec::new();
        while !self.in_flight.is_empty() {
            events.extend(self.take_in_oldest());
        }
        events
    }

    /// Take in the oldest detection that is out, waiting for it if need be: track, publish, and
    /// hand vehicles to the plate reader, all on the frame it was made on.
    fn take_in_oldest(&mut self) -> Vec<NewEvent> {
        let Some(InFlight { pending, frame, moving, t, started }) = self.in_flight.pop_front() else {
            return Vec::new();
        };
        let pixels = pending.pixels();
        let found = match pending.wait(&self.detector) {
            Ok((found, done)) => {
                self.status.inference(done.saturating_duration_since(started));
                found
            }
            Err(e) => {
                self.failing.warn(format_args!("detection failed: {e}"));
                return Vec::new();
            }
        };
        self.metrics.detected.inc();
        self.metrics.detection_pixels.inc_by(pixels);
        let frame = &frame;
        let frame_area = (frame.width() * frame.height()) as f64;
        let dets: Vec<Detection> = found
            .into_iter()
            .filter(|d| {
                self.classes.get(&d.class).is_some_and(|&(_, min_area)| {
                    ((d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1])) as f64 >= min_area * frame_area
                })
            })
            .collect();
        let classes = &self.classes;
        let changes = self.tracker.update(&dets, |c| threshold(classes, c), t);
        let mut events = self.events(changes, frame, t);
        events.extend(self.refresh(frame, t));
        if let Some(plates) = &mut self.plates {
            events.extend(plates.submit(frame, t));
            if !plates.dedicated() {
                let arriving = self
                    .tracker
                    .tracks()
                    .iter()
                    .any(|tr| !tr.confirmed && tr.last_seen == t && plates.is_vehicle(tr.class));
                events.extend(plates.scan(frame, moving, arriving, t));
            }
        }
        events
    }

    /// The events of a plate read that has come back since the last frame.
    pub fn poll(&mut self) -> Vec<NewEvent> {
        self.plates.as_mut().map(PlateStage::collect).unwrap_or_default()
    }

    /// End every track (source gone or shutting down), after the plate read that is out.
    pub fn finish(&mut self, frame: Option<&Frame>) -> Vec<NewEvent> {
        let mut events = self.settle();
        events.extend(self.plates.as_mut().map(PlateStage::wait).unwrap_or_default());
        let changes = self.tracker.drain();
        for change in changes {
            if let Change::Ended(track) = &change
                && let Some(plates) = &mut self.plates
            {
                plates.forget(track.id);
            }
            if let Change::Ended(track) = change
                && let Some(p) = self.published.remove(&track.id)
            {
                let ev = event("end", &track, &p, frame.unwrap_or(&p.best), Some(&p.best), None);
                events.push(ev);
            }
        }
        events
    }

    /// A padded crop around motion and moving tracks and how to scale it, or `None` for the whole
    /// frame.
    fn crop(&self, frame: &Frame, motion: &Motion, t: f64) -> Option<([u32; 4], Fit)> {
        let boxes = motion
            .regions
            .iter()
            .map(|r| r.map(|v| v as f32))
            .chain(self.tracker.tracks().iter().filter(|tr| !tr.stationary).map(|tr| tr.predicted(t)));
        crop_around(&self.detector, frame, boxes)
    }

    fn label(&self, class: usize) -> String {
        self.detector.labels.get(class).cloned().unwrap_or_else(|| class.to_string())
    }

    fn zones_of(&self, track: &Track, frame: &Frame) -> Vec<String> {
        // The bottom centre: where the object stands.
        let x = ((track.bbox[0] + track.bbox[2]) / 2.0) as f64 / frame.width() as f64;
        let y = track.bbox[3] as f64 / frame.height() as f64;
        self.cam.zones.iter().filter(|z| inside(&z.polygon, x, y)).map(|z| z.name.clone()).collect()
    }

    fn events(&mut self, changes: Vec<Change>, frame: &Frame, t: f64) -> Vec<NewEvent> {
        let mut events = Vec::new();
        for change in changes {
            match change {
                Change::Confirmed(id) => {
                    let Some(track) = self.tracker.tracks().iter().find(|tr| tr.id == id) else { continue };
                    let first_seen =
                        frame.wall - chrono::Duration::milliseconds(((t - track.first_seen) * 1000.0) as i64);
                    let Ok(best) = frame.detached() else { continue };
                    self.confirmed += 1;
                    let p = Published {
                        number: self.confirmed,
                        label: self.label(track.class),
                        first_seen,
                        last_seen: frame.wall,
                        zones: self.zones_of(track, frame),
                        best,
                        best_box: track.bbox,
                        best_score: track.score,
                        updates: VecDeque::new(),
                    };
                    events.push(event("start", track, &p, frame, Some(frame), None));
                    self.published.insert(id, p);
                }
                Change::Stationary(id) | Change::Moving(id) => {
                    if let (Some(track), Some(p)) =
                        (self.tracker.tracks().iter().find(|tr| tr.id == id), self.published.get(&id))
                    {
                        events.push(event("update", track, p, frame, None, Some("stationary")));
                    }
                }
                Change::Ended(track) => {
                    if let Some(plates) = &mut self.plates {
                        plates.forget(track.id);
                    }
                    if let Some(p) = self.published.remove(&track.id) {
                        events.push(event("end", &track, &p, frame, Some(&p.best), None));
                    }
                }
            }
        }
        events
    }

    /// Zones and snapshots of the tracks matched on this frame.
    fn refresh(&mut self, frame: &Frame, t: f64) -> Vec<NewEvent> {
        let mut events = Vec::new();
        let cap = self.cam.tracker.max_updates_per_minute as usize;
        for track in self.tracker.tracks().iter().filter(|tr| tr.confirmed && tr.last_seen == t) {
            let zones = self.zones_of(track, frame);
            let Some(p) = self.published.get_mut(&track.id) else { continue };
            p.last_seen = frame.wall;
            let better = track.score >= p.best_score + BETTER_SNAPSHOT;
            if better && let Ok(best) = frame.detached() {
                p.best = best;
                p.best_box = track.bbox;
                p.best_score = track.score;
            }
            while p.updates.front().is_some_and(|&u| t - u > 60.0) {
                p.updates.pop_front();
            }
            if zones != p.zones {
                p.zones = zones;
                p.updates.push_back(t);
                events.push(event("update", track, p, frame, None, Some("zones")));
            } else if better && p.updates.len() < cap {
                p.updates.push_back(t);
                events.push(event("update", track, p, frame, Some(frame), Some("snapshot")));
            }
            if let Some(plates) = &mut self.plates {
                plates.vehicle(track.id, track.class, track.bbox, frame, t);
            }
        }
        events
    }
}

/// The score a detection of `class` needs to start a track; untracked classes never do.
fn threshold(classes: &HashMap<usize, (f32, f64)>, class: usize) -> f32 {
    classes.get(&class).map_or(f32::INFINITY, |c| c.0)
}

fn event(
    phase: &str,
    track: &Track,
    p: &Published,
    frame: &Frame,
    snapshot: Option<&Frame>,
    reason: Option<&str>,
) -> NewEvent {
    let mut data = json!({
        "phase": phase,
        "track_id": track.id,
        "track_no": p.number,
        "label": p.label,
        "score": track.best_score,
        "box": track.bbox.map(|v| v.round() as i64),
        "first_seen": crate::events::format_ts(&p.first_seen),
        "last_seen": crate::events::format_ts(&p.last_seen),
        "zones": p.zones,
        "stationary": track.stationary,
        "hits": track.hits,
    });
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    let ev = NewEvent::at(EventType::Tracking, frame, data);
    match snapshot {
        Some(shot) => ev.with_snapshot(shot.clone()).with_crop(p.best_box.map(|v| v.max(0.0) as u32)),
        None => ev,
    }
}
