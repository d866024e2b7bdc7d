//! Motion: a Frigate-style running-average background on a small grey image taken straight from
//! the decoder's Y plane, so no colour conversion is ever done for motion.
//!
//! [`MotionDetector`] finds changed regions in one frame; [`MotionEpisode`] turns that per-frame
//! signal into one `start`/`end` pair per episode. Both reuse their buffers: nothing is
//! allocated per frame once the first frame has been seen.

use crate::config::MotionConfig;
use crate::geometry::inside;

/// A box `[x1, y1, x2, y2]` in full-frame pixels.
pub type BoxPx = [u32; 4];

/// What changed in one frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Motion {
    pub regions: Vec<BoxPx>,
    /// Changed area as a fraction of the frame.
    pub area: f64,
}

impl Motion {
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
}

/// Per-frame motion on a downscaled luma image.
pub struct MotionDetector {
    cfg: MotionConfig,
    src_w: usize,
    src_h: usize,
    w: usize,
    h: usize,
    /// The two source columns sampled for each small column.
    cols: Vec<[usize; 2]>,
    bg: Vec<f32>,
    small: Vec<f32>,
    ignore: Vec<bool>,
    changed: Vec<bool>,
    /// Horizontal dilation pass.
    spread: Vec<bool>,
    grown: Vec<bool>,
    seen: Vec<bool>,
    stack: Vec<usize>,
}

impl MotionDetector {
    /// A detector for frames of `width`×`height`.
    pub fn new(cfg: &MotionConfig, width: u32, height: u32) -> Self {
        let (src_w, src_h) = (width.max(1) as usize, height.max(1) as usize);
        let h = (cfg.frame_height as usize).min(src_h);
        let w = ((src_w * h) as f64 / src_h as f64).round().max(1.0) as usize;
        let cols = (0..w).map(|x| samples(x * src_w / w, (x + 1) * src_w / w)).collect();
        let mut ignore = vec![false; w * h];
        for (i, cell) in ignore.iter_mut().enumerate() {
            let (px, py) = (((i % w) as f64 + 0.5) / w as f64, ((i / w) as f64 + 0.5) / h as f64);
            *cell = cfg.mask.iter().any(|poly| inside(poly, px, py));
        }
        Self {
            cfg: cfg.clone(),
            src_w,
            src_h,
            w,
            h,
            cols,
            bg: Vec::new(),
            small: vec![0.0; w * h],
            ignore,
            changed: vec![false; w * h],
            spread: vec![false; w * h],
            grown: vec![false; w * h],
            seen: vec![false; w * h],
            // Each cell is pushed at most once: sized now, a large region never allocates mid-stream.
            stack: Vec::with_capacity(w * h),
        }
    }

    /// Whether this detector was built for frames of this size.
    pub fn fits(&self, width: u32, height: u32) -> bool {
        (self.src_w, self.src_h) == (width as usize, height as usize)
    }

    /// Compare one luma plane (`stride` bytes per row) with the background and learn from it.
    pub fn detect(&mut self, luma: &[u8], stride: usize) -> Motion {
        self.downscale(luma, stride);
        let n = self.w * self.h;
        if self.bg.len() != n {
            self.bg.clone_from(&self.small);
            return Motion::default();
        }
        let threshold = self.cfg.threshold as f32;
        let mut count = 0usize;
        let cells = self.changed.iter_mut().zip(&self.small).zip(&self.bg).zip(&self.ignore);
        for (((c, &s), &b), &ignored) in cells {
            *c = !ignored & ((s - b).abs() > threshold);
            count += *c as usize;
        }
        if count as f64 / n as f64 > self.cfg.lighting_change {
            // A light switched on or the camera re-exposed: relearn instead of reporting the whole frame.
            self.bg.copy_from_slice(&self.small);
            return Motion::default();
        }
        let alpha = self.cfg.alpha;
        for (b, &s) in self.bg.iter_mut().zip(&self.small) {
            *b += alpha * (s - *b);
        }
        if count == 0 {
            return Motion::default();
        }
        self.dilate();
        self.regions(n)
    }

    /// Average each cell's 2×2 evenly spaced sample pixels into `small` (what a bilinear
    /// downscale reads). Averaging every pixel of a cell would cost more than all other motion
    /// steps together and adds nothing: a moving object spans many pixels, and four already
    /// halve the pixel noise.
    fn downscale(&mut self, luma: &[u8], stride: usize) {
        let (w, h, src_h, src_w) = (self.w, self.h, self.src_h, self.src_w);
        for (y, cells) in self.small.chunks_exact_mut(w).enumerate() {
            let [r0, r1] = samples(y * src_h / h, (y + 1) * src_h / h);
            let (top, bottom) = (&luma[r0 * stride..][..src_w], &luma[r1 * stride..][..src_w]);
            for (cell, &[c0, c1]) in cells.iter_mut().zip(&self.cols) {
                let sum = top[c0] as u16 + top[c1] as u16 + bottom[c0] as u16 + bottom[c1] as u16;
                *cell = sum as f32 * 0.25;
            }
        }
    }

    /// 3×3 dilation (horizontal pass, then vertical), so fragments of one moving object join
    /// into one region. Written as ORs of shifted slices so that it vectorises.
    fn dilate(&mut self) {
        let (w, n) = (self.w, self.w * self.h);
        for (out, row) in self.spread.chunks_exact_mut(w).zip(self.changed.chunks_exact(w)) {
            out.copy_from_slice(row);
            out[1..].iter_mut().zip(&row[..w - 1]).for_each(|(o, &r)| *o |= r);
            out[..w - 1].iter_mut().zip(&row[1..]).for_each(|(o, &r)| *o |= r);
        }
        self.grown.copy_from_slice(&self.spread);
        self.grown[w..].iter_mut().zip(&self.spread[..n - w]).for_each(|(o, &r)| *o |= r);
        self.grown[..n - w].iter_mut().zip(&self.spread[w..]).for_each(|(o, &r)| *o |= r);
    }

    fn regions(&mut self, n: usize) -> Motion {
        let (w, h) = (self.w, self.h);
        let min_pixels = (self.cfg.min_area * n as f64).max(1.0);
        self.seen.iter_mut().for_each(|s| *s = false);
        let mut motion = Motion::default();
        let mut changed_total = 0usize;
        for start in 0..n {
            if !self.grown[start] || self.seen[start] {
                continue;
            }
            let (mut x1, mut y1, mut x2, mut y2, mut changed) = (w, h, 0, 0, 0usize);
            self.seen[start] = true;
            self.stack.push(start);
            while let Some(i) = self.stack.pop() {
                let (x, y) = (i % w, i / w);
                (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x), y2.max(y));
                changed += self.changed[i] as usize;
                let mut visit = |j: usize| {
                    if self.grown[j] && !self.seen[j] {
                        self.seen[j] = true;
                        self.stack.push(j);
                    }
                };
                if x > 0 {
                    visit(i - 1);
                }
                if x + 1 < w {
                    visit(i + 1);
                }
                if y > 0 {
                    visit(i - w);
                }
                if y + 1 < h {
                    visit(i + w);
                }
            }
            if changed as f64 >= min_pixels {
                changed_total += changed;
                motion.regions.push(self.to_frame([x1, y1, x2 + 1, y2 + 1]));
            }
        }
        motion.area = changed_total as f64 / n as f64;
        motion
    }

    fn to_frame(&self, [x1, y1, x2, y2]: [usize; 4]) -> BoxPx {
        let sx = |x: usize| (x * self.src_w / self.w) as u32;
        let sy = |y: usize| (y * self.src_h / self.h) as u32;
        [sx(x1), sy(y1), sx(x2), sy(y2)]
    }
}

/// Two evenly spaced positions in the cell `start..end`, which is never empty because the motion
/// image is never larger than the source (the same position twice when it is one wide).
fn samples(start: usize, end: usize) -> [usize; 2] {
    let span = end - start;
    [start + span / 4, start + 3 * span / 4]
}

/// A change in a camera's motion state.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Start { regions: Vec<BoxPx>, area: f64 },
    End { regions: Vec<BoxPx>, peak_area: f64, duration_secs: f64 },
}

/// Turns per-frame motion into episodes: one start, then one end after `quiet_secs` of stillness.
pub struct MotionEpisode {
    quiet_secs: f64,
    streak: u32,
    active: Option<Episode>,
}

struct Episode {
    started: f64,
    last_motion: f64,
    peak_area: f64,
    extent: BoxPx,
}

/// Consecutive frames with motion before an episode starts; one noisy frame is not motion.
const START_FRAMES: u32 = 2;

impl MotionEpisode {
    pub fn new(quiet_secs: f64) -> Self {
        Self { quiet_secs, streak: 0, active: None }
    }

    /// Feed one frame's motion at stream time `t` (seconds).
    pub fn update(&mut self, m: &Motion, t: f64) -> Option<Phase> {
        self.streak = if m.is_empty() { 0 } else { self.streak + 1 };
        match &mut self.active {
            None if self.streak >= START_FRAMES => {
                let extent = union(&m.regions);
                self.active = Some(Episode { started: t, last_motion: t, peak_area: m.area, extent });
                Some(Phase::Start { regions: m.regions.clone(), area: m.area })
            }
            None => None,
            Some(ep) if !m.is_empty() => {
                ep.last_motion = t;
                ep.peak_area = ep.peak_area.max(m.area);
                ep.extent = union(&[ep.extent, union(&m.regions)]);
                None
            }
            Some(ep) if t - ep.last_motion >= self.quiet_secs => self.finish(),
            Some(_) => None,
        }
    }

    /// End an open episode now (source lost or shutting down).
    pub fn finish(&mut self) -> Option<Phase> {
        self.streak = 0;
        self.active.take().map(|ep| Phase::End {
            regions: vec![ep.extent],
            peak_area: ep.peak_area,
            duration_secs: (ep.last_motion - ep.started).max(0.0),
        })
    }
}

fn union(boxes: &[BoxPx]) -> BoxPx {
    boxes.iter().fold([u32::MAX, u32::MAX, 0, 0], |[a, b, c, d], [x1, y1, x2, y2]| {
        [a.min(*x1), b.min(*y1), c.max(*x2), d.max(*y2)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize, square: Option<(usize, usize, usize)>) -> Vec<u8> {
        let mut f = vec![80u8; w * h];
        if let Some((x0, y0, s)) = square {
            for y in y0..y0 + s {
                f[y * w + x0..y * w + x0 + s].fill(220);
            }
        }
        f
    }

    #[test]
    fn finds_a_moving_square_in_frame_coordinates() {
        let cfg = MotionConfig::default();
        let mut d = MotionDetector::new(&cfg, 640, 360);
        assert!(d.detect(&frame(640, 360, None), 640).is_empty());
        let m = d.detect(&frame(640, 360, Some((300, 100, 60))), 640);
        assert_eq!(m.regions.len(), 1, "{m:?}");
        let [x1, y1, x2, y2] = m.regions[0];
        assert!(x1 <= 300 && y1 <= 100 && x2 >= 360 && y2 >= 160, "{m:?}");
        assert!(x2 - x1 < 90 && y2 - y1 < 90, "{m:?}");
        assert!(m.area > 0.01 && m.area < 0.03, "{m:?}");
    }

    #[test]
    fn mask_and_lighting_changes_are_not_motion() {
        let cfg =
            MotionConfig { mask: vec![vec![[0.4, 0.2], [0.7, 0.2], [0.7, 0.6], [0.4, 0.6]]], ..Default::default() };
        let mut d = MotionDetector::new(&cfg, 640, 360);
        d.detect(&frame(640, 360, None), 640);
        assert!(d.detect(&frame(640, 360, Some((300, 100, 60))), 640).is_empty());
        let bright = vec![200u8; 640 * 360];
        assert!(d.detect(&bright, 640).is_empty());
        assert!(d.detect(&bright, 640).is_empty());
    }

    #[test]
    fn one_episode_per_burst_of_motion() {
        let mut ep = MotionEpisode::new(2.0);
        let moving = Motion { regions: vec![[10, 10, 50, 50]], area: 0.05 };
        let still = Motion::default();
        let mut phases = Vec::new();
        for i in 0..100 {
            let t = i as f64 * 0.1;
            let m = if (10..40).contains(&i) && i % 7 != 0 { &moving } else { &still };
            phases.extend(ep.update(m, t));
        }
        assert_eq!(phases.len(), 2, "{phases:?}");
        assert!(matches!(phases[0], Phase::Start { .. }));
        assert!(matches!(phases[1], Phase::End { duration_secs, .. } if duration_secs > 2.5));
    }
}
