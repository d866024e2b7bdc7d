//! Tracking: a ByteTrack-class multi-object tracker.
//!
//! - Two-stage association. High-score detections match every track first; low-score ones
//!   (0.1 up to the label's threshold) then keep confirmed tracks alive through partial
//!   occlusion. Both stages use IoU against the track's predicted box, within a class.
//! - A constant-velocity Kalman filter per box coordinate (centre x/y, width, height) predicts
//!   where each track is at the next detection, in seconds, so the detect rate may vary.
//! - A track is confirmed after `min_hits` matched detections in a row and ends `max_age_secs`
//!   after its last match. One that has not moved for [`STATIONARY_SECS`] is stationary: it lives
//!   [`STATIONARY_AGE_FACTOR`] times longer, so a parked car that is only detected now and then
//!   keeps its id and never starts again.

mod kalman;

use crate::config::TrackerConfig;
use crate::detect::Detection;
use crate::geometry::iou;
use kalman::Axis;

/// Seconds without movement before a track counts as stationary.
pub const STATIONARY_SECS: f64 = 10.0;
/// How much longer a stationary track survives without detections.
pub const STATIONARY_AGE_FACTOR: f64 = 30.0;
/// Detections below this score are ignored entirely.
const LOW_SCORE: f32 = 0.1;
/// Second-stage (low score) matches need this much overlap.
const LOW_MATCH_IOU: f32 = 0.5;

/// One tracked object.
#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    pub class: usize,
    /// The last matched detection's box.
    pub bbox: [f32; 4],
    pub score: f32,
    pub best_score: f32,
    pub hits: u32,
    pub confirmed: bool,
    pub stationary: bool,
    pub first_seen: f64,
    pub last_seen: f64,
    axes: [Axis; 4],
    /// The box when the track last moved.
    anchor: [f32; 4],
    still_since: f64,
}

impl Track {
    fn new(id: u64, d: &Detection, t: f64) -> Self {
        let [cx, cy, w, h] = centre(&d.bbox);
        let scale = h.max(1.0);
        Self {
            id,
            class: d.class,
            bbox: d.bbox,
            score: d.score,
            best_score: d.score,
            hits: 1,
            confirmed: false,
            stationary: false,
            first_seen: t,
            last_seen: t,
            axes: [Axis::new(cx, t, scale), Axis::new(cy, t, scale), Axis::new(w, t, scale), Axis::new(h, t, scale)],
            anchor: d.bbox,
            still_since: t,
        }
    }

    /// Where the Kalman filter expects the box at time `t`.
    pub fn predicted(&self, t: f64) -> [f32; 4] {
        let [cx, cy, w, h] = [0, 1, 2, 3].map(|i| self.axes[i].position_at(t));
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }

    fn update(&mut self, d: &Detection, t: f64, stationary_motion: f32) -> Option<Change> {
        let c = centre(&d.bbox);
        let scale = c[3].max(1.0);
        for (axis, z) in self.axes.iter_mut().zip(c) {
            axis.update(z, t, scale);
        }
        self.bbox = d.bbox;
        self.score = d.score;
        self.best_score = self.best_score.max(d.score);
        self.hits += 1;
        self.last_seen = t;
        let mut change = None;
        if !self.confirmed {
            return None;
        }
        if moved(&self.anchor, &d.bbox, stationary_motion) {
            self.anchor = d.bbox;
            self.still_since = t;
            if self.stationary {
                self.stationary = false;
                change = Some(Change::Moving(self.id));
            }
        } else if !self.stationary && t - self.still_since >= STATIONARY_SECS {
            self.stationary = true;
            change = Some(Change::Stationary(self.id));
        }
        change
    }
}

/// `[cx, cy, w, h]` of a box.
fn centre(b: &[f32; 4]) -> [f32; 4] {
    [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, b[2] - b[0], b[3] - b[1]]
}

/// Whether `b` moved away from `anchor` by more than `fraction` of the anchor's size.
fn moved(anchor: &[f32; 4], b: &[f32; 4], fraction: f32) -> bool {
    let (a, c) = (centre(anchor), centre(b));
    let size = a[2].max(a[3]).max(1.0);
    let shift = ((a[0] - c[0]).powi(2) + (a[1] - c[1]).powi(2)).sqrt();
    let grow = (a[2] - c[2]).abs().max((a[3] - c[3]).abs());
    shift > fraction * size || grow > 2.0 * fraction * size
}

/// Something that happened to a track during an update.
#[derive(Debug, Clone)]
pub enum Change {
    /// Reached `min_hits`: the object is real.
    Confirmed(u64),
    /// Stopped moving for `STATIONARY_SECS`.
    Stationary(u64),
    /// A stationary track moved again.
    Moving(u64),
    /// A confirmed track was lost (or the tracker was drained).
    Ended(Box<Track>),
}

/// The tracker for one camera.
pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    /// A tracker whose ids start at `first_id` (callers make ids unique across restarts).
    pub fn new(cfg: &TrackerConfig, first_id: u64) -> Self {
        Self { cfg: cfg.clone(), tracks: Vec::new(), next_id: first_id }
    }

    /// Live tracks, confirmed or not.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Whether any track may still be moving (so detection should keep running).
    pub fn has_moving(&self) -> bool {
        self.tracks.iter().any(|t| !t.stationary)
    }

    /// Associate detections made at time `t` (seconds). `threshold(class)` is the score a
    /// detection needs to start or firmly match a track.
    pub fn update(&mut self, dets: &[Detection], threshold: impl Fn(usize) -> f32, t: f64) -> Vec<Change> {
        let (high, low): (Vec<&Detection>, Vec<&Detection>) =
            dets.iter().filter(|d| d.score >= LOW_SCORE).partition(|d| d.score >= threshold(d.class));
        let predicted: Vec<[f32; 4]> = self.tracks.iter().map(|tr| tr.predicted(t)).collect();
        let all: Vec<usize> = (0..self.tracks.len()).collect();
        let (pairs, unmatched_tracks, unmatched_high) = self.associate(&all, &predicted, &high, self.cfg.match_iou);
        let confirmed_left: Vec<usize> =
            unmatched_tracks.iter().copied().filter(|&i| self.tracks[i].confirmed).collect();
        let (low_pairs, _, _) = self.associate(&confirmed_left, &predicted, &low, LOW_MATCH_IOU);

        let mut changes = Vec::new();
        let mut matched = vec![false; self.tracks.len()];
        for (ti, d) in pairs.into_iter().chain(low_pairs) {
            matched[ti] = true;
            let track = &mut self.tracks[ti];
            let was_confirmed = track.confirmed;
            let change = track.update(d, t, self.cfg.stationary_motion);
            if !was_confirmed && track.hits >= self.cfg.min_hits {
                track.confirmed = true;
                changes.push(Change::Confirmed(track.id));
            }
            changes.extend(change);
        }
        let max_age = self.cfg.max_age_secs;
        let mut kept = Vec::with_capacity(self.tracks.len());
        for (i, track) in std::mem::take(&mut self.tracks).into_iter().enumerate() {
            let age = if track.stationary { max_age * STATIONARY_AGE_FACTOR } else { max_age };
            if matched[i] || (track.confirmed && t - track.last_seen <= age) {
                kept.push(track);
            } else if track.confirmed {
                changes.push(Change::Ended(Box::new(track)));
            }
        }
        self.tracks = kept;
        for d in unmatched_high {
            let mut track = Track::new(self.next_id, d, t);
            self.next_id += 1;
            if self.cfg.min_hits <= 1 {
                track.confirmed = true;
                changes.push(Change::Confirmed(track.id));
            }
            self.tracks.push(track);
        }
        changes
    }

    /// End every confirmed track now (source gone, shutting down).
    pub fn drain(&mut self) -> Vec<Change> {
        self.tracks.drain(..).filter(|t| t.confirmed).map(|t| Change::Ended(Box::new(t))).collect()
    }

    /// Greedy highest-IoU-first matching of `tracks` (indices) to `dets`, same class only.
    /// Returns the pairs, the unmatched track indices and the unmatched detections.
    #[allow(clippy::type_complexity)]
    fn associate<'d>(
        &self,
        tracks: &[usize],
        predicted: &[[f32; 4]],
        dets: &[&'d Detection],
        min_iou: f32,
    ) -> (Vec<(usize, &'d Detection)>, Vec<usize>, Vec<&'d Detection>) {
        let mut candidates = Vec::new();
        for &ti in tracks {
            for (di, d) in dets.iter().enumerate() {
                if self.tracks[ti].class == d.class {
                    let overlap = iou(&predicted[ti], &d.bbox);
                    if overlap >= min_iou {
                        candidates.push((overlap, ti, di));
                    }
                }
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut track_used, mut det_used) = (vec![false; self.tracks.len()], vec![false; dets.len()]);
        let mut pairs = Vec::new();
        for (_, ti, di) in candidates {
            if !track_used[ti] && !det_used[di] {
                track_used[ti] = true;
                det_used[di] = true;
                pairs.push((ti, dets[di]));
            }
        }
        let left_tracks = tracks.iter().copied().filter(|&i| !track_used[i]).collect();
        let left_dets = dets.iter().enumerate().filter(|(i, _)| !det_used[*i]).map(|(_, d)| *d).collect();
        (pairs, left_tracks, left_dets)
    }
}

#[cfg(test)]
mod tests;
