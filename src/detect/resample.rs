//! The detector's letterbox in one pass: crop, bilinear scale and colour conversion from the
//! decoder's I420/NV12 (or a still's packed RGB) straight into the model's planar BGR floats.
//! The plate reader's text models take their inputs through it too.
//!
//! A general converter (GStreamer's) unpacks, scales and packs every line through several
//! intermediate formats and then still has to be laid out planar; here each output row blends
//! two source rows of each plane and samples them at precomputed taps. The taps put pixel
//! centres where OpenCV's `INTER_LINEAR` does, the resize the model was trained with.

use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

/// Where one output pixel reads along an axis: two source indices and the second's weight.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tap {
    i0: usize,
    i1: usize,
    w: f32,
}

/// Taps for `out` outputs over the source span `[start, start + len)`, in a plane subsampled by
/// `sub` (1, or 2 for chroma). Chroma samples are taken as sited at the centre of their pixels.
fn taps(out: usize, start: usize, len: usize, sub: usize) -> Vec<Tap> {
    let scale = len as f32 / out.max(1) as f32;
    let (lo, hi) = (start / sub, ((start + len).div_ceil(sub)).saturating_sub(1).max(start / sub));
    (0..out)
        .map(|o| {
            let luma = start as f32 + (o as f32 + 0.5) * scale;
            let src = (luma / sub as f32 - 0.5).clamp(lo as f32, hi as f32);
            let i0 = src.floor() as usize;
            Tap { i0, i1: (i0 + 1).min(hi), w: src - i0 as f32 }
        })
        .collect()
}

/// One plane of a frame: its bytes, row stride, and where a sample sits in a row (`step` bytes
/// between samples, the first at `offset`: 1/0 for planar, 2/0 and 2/1 for NV12's UV).
#[derive(Clone, Copy)]
pub struct Plane<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub step: usize,
    pub offset: usize,
    /// 1 for full resolution, 2 for chroma subsampled in both directions.
    pub sub: usize,
}

impl Plane<'_> {
    /// Scale `crop` of this plane to `w` × `h` samples, bilinearly, into the rows of `out` that
    /// start every `out_stride` floats. `row` is scratch space.
    fn resample(&self, crop: [u32; 4], (w, h): (usize, usize), out: &mut [f32], out_stride: usize, row: &mut Vec<f32>) {
        let [x1, y1, x2, y2] = crop.map(|v| v as usize);
        let xs = taps(w, x1, x2 - x1, self.sub);
        let ys = taps(h, y1, y2 - y1, self.sub);
        let (first, last) = (xs.first().map_or(0, |t| t.i0), xs.last().map_or(0, |t| t.i1));
        let n = last + 1 - first;
        let line = |y: usize| {
            let from = (y * self.stride + first * self.step + self.offset).min(self.data.len());
            let to = (from + (n - 1) * self.step + 1).min(self.data.len());
            &self.data[from..to]
        };
        for (oy, ty) in ys.iter().enumerate() {
            // Blend the two source rows once over the span the taps read, then sample it.
            let (r0, r1) = (line(ty.i0), line(ty.i1));
            row.clear();
            row.resize(n, 0.0);
            let blend = |(d, (&a, &b)): (&mut f32, (&u8, &u8))| {
                let a = a as f32;
                *d = a + (b as f32 - a) * ty.w;
            };
            if self.step == 1 {
                row.iter_mut().zip(r0.iter().zip(r1)).for_each(blend);
            } else {
                row.iter_mut().zip(r0.iter().step_by(self.step).zip(r1.iter().step_by(self.step))).for_each(blend);
            }
            let dst = &mut out[oy * out_stride..oy * out_stride + w];
            for (d, tx) in dst.iter_mut().zip(&xs) {
                let (a, b) = (row[tx.i0 - first], row[tx.i1 - first]);
                *d = a + (b - a) * tx.w;
            }
        }
    }
}

/// How a frame's samples become RGB.
pub enum Source<'a> {
    /// Luma and two chroma planes, with the matrix's red and blue weights (Kr, Kb) and whether
    /// the samples use the full 0–255 range rather than video's 16–235/240.
    Yuv { y: Plane<'a>, u: Plane<'a>, v: Plane<'a>, kr: f32, kb: f32, full_range: bool },
    /// Red, green and blue samples.
    Rgb { r: Plane<'a>, g: Plane<'a>, b: Plane<'a> },
}

impl<'a> Source<'a> {
    /// The planes of a mapped frame, for the formats a camera or a still reaches the detector in;
    /// `None` for others.
    pub fn of(frame: &'a gst_video::VideoFrame<gst_video::video_frame::Readable>) -> Option<Self> {
        use gst_video::VideoFormat as F;
        let info = frame.info();
        let plane = |i: u32, step: usize, offset: usize, sub: usize| -> Option<Plane<'a>> {
            let stride = *frame.plane_stride().get(i as usize)? as usize;
            Some(Plane { data: frame.plane_data(i).ok()?, stride, step, offset, sub })
        };
        let yuv = |y, u, v| {
            let c = info.colorimetry();
            let (kr, kb) = match c.matrix() {
                gst_video::VideoColorMatrix::Bt709 => (0.2126, 0.0722),
                gst_video::VideoColorMatrix::Bt2020 => (0.2627, 0.0593),
                gst_video::VideoColorMatrix::Smpte240m => (0.212, 0.087),
                _ => (0.299, 0.114),
            };
            Some(Source::Yuv { y, u, v, kr, kb, full_range: c.range() == gst_video::VideoColorRange::Range0_255 })
        };
        match info.format() {
            F::I420 => yuv(plane(0, 1, 0, 1)?, plane(1, 1, 0, 2)?, plane(2, 1, 0, 2)?),
            F::Yv12 => yuv(plane(0, 1, 0, 1)?, plane(2, 1, 0, 2)?, plane(1, 1, 0, 2)?),
            F::Nv12 => yuv(plane(0, 1, 0, 1)?, plane(1, 2, 0, 2)?, plane(1, 2, 1, 2)?),
            F::Nv21 => yuv(plane(0, 1, 0, 1)?, plane(1, 2, 1, 2)?, plane(1, 2, 0, 2)?),
            F::Rgb => Some(Source::Rgb { r: plane(0, 3, 0, 1)?, g: plane(0, 3, 1, 1)?, b: plane(0, 3, 2, 1)? }),
            F::Bgr => Some(Source::Rgb { r: plane(0, 3, 2, 1)?, g: plane(0, 3, 1, 1)?, b: plane(0, 3, 0, 1)? }),
            _ => None,
        }
    }

    /// `crop` scaled to a `picture` (width, height) in the top-left of a `canvas` filled with
    /// `pad`, as planar BGR floats holding whole levels 0–255.
    pub fn letterbox(&self, crop: [u32; 4], picture: (usize, usize), canvas: (usize, usize), pad: u8) -> Vec<f32> {
        let (w, h) = (canvas.0.max(1), canvas.1.max(1));
        let (pw, ph) = (picture.0.clamp(1, w), picture.1.clamp(1, h));
        let mut tensor = vec![pad as f32; 3 * w * h];
        let mut row = Vec::new();
        let (blue, rest) = tensor.split_at_mut(w * h);
        let (green, red) = rest.split_at_mut(w * h);
        match self {
            Source::Rgb { r, g, b } => {
                b.resample(crop, (pw, ph), blue, w, &mut row);
                g.resample(crop, (pw, ph), green, w, &mut row);
                r.resample(crop, (pw, ph), red, w, &mut row);
            }
            Source::Yuv { y, u, v, kr, kb, full_range } => {
                // Chroma is scaled to half the picture, as the decoder stores it, and each sample
                // serves the 2 × 2 pixels it covers.
                let (cw, ch) = (pw.div_ceil(2), ph.div_ceil(2));
                let (mut cb, mut cr) = (vec![0f32; cw * ch], vec![0f32; cw * ch]);
                y.resample(crop, (pw, ph), blue, w, &mut row);
                u.resample(crop, (cw, ch), &mut cb, cw, &mut row);
                v.resample(crop, (cw, ch), &mut cr, cw, &mut row);
                let kg = 1.0 - kr - kb;
                let (ys, yo, cs) = if *full_range { (1.0, 0.0, 1.0) } else { (255.0 / 219.0, 16.0, 255.0 / 224.0) };
                let (rv, bu) = (2.0 * (1.0 - kr) * cs, 2.0 * (1.0 - kb) * cs);
                let (gu, gv) = (2.0 * kb * (1.0 - kb) / kg * cs, 2.0 * kr * (1.0 - kr) / kg * cs);
                let (mut urow, mut vrow) = (vec![0f32; pw], vec![0f32; pw]);
                for oy in 0..ph {
                    let chroma = (oy / 2) * cw;
                    for (x, (u, v)) in urow.iter_mut().zip(vrow.iter_mut()).enumerate() {
                        (*u, *v) = (cb[chroma + x / 2] - 128.0, cr[chroma + x / 2] - 128.0);
                    }
                    let at = oy * w;
                    let rows = blue[at..at + pw].iter_mut().zip(&mut green[at..at + pw]).zip(&mut red[at..at + pw]);
                    for (((b, g), r), (&pu, &pv)) in rows.zip(urow.iter().zip(&vrow)) {
                        let luma = (*b - yo) * ys;
                        *b = (luma + bu * pu).clamp(0.0, 255.0);
                        *g = (luma - gu * pu - gv * pv).clamp(0.0, 255.0);
                        *r = (luma + rv * pv).clamp(0.0, 255.0);
                    }
                }
            }
        }
        // Whole levels, as in the 8-bit images the model was trained on (OpenCV's resize of a
        // decoded BGR image). Adding and taking away 1.5 × 2²³ rounds any float below 2²² to the
        // nearest integer in plain arithmetic, which vectorises; `f32::round` is a libm call
        // per value on baseline x86-64.
        const ROUND: f32 = 12_582_912.0;
        tensor.iter_mut().for_each(|v| *v = (*v + ROUND) - ROUND);
        tensor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_put_centres_where_opencv_does() {
        // Halving: each output reads the midpoint of two source pixels.
        let t = taps(2, 0, 4, 1);
        assert_eq!(t, vec![Tap { i0: 0, i1: 1, w: 0.5 }, Tap { i0: 2, i1: 3, w: 0.5 }]);
        // The same size reads each pixel exactly; a crop starts at its own origin.
        assert!(taps(3, 5, 3, 1).iter().zip(5..).all(|(t, i)| t.i0 == i && t.w == 0.0));
        // Edges clamp rather than read outside the crop.
        let up = taps(8, 0, 2, 1);
        assert_eq!((up[0].i0, up[0].w), (0, 0.0));
        assert_eq!(up[7].i0.max(up[7].i1), 1);
    }

    #[test]
    fn grey_and_primaries_convert_to_bgr() {
        // 2×2 I420 in BT.601 limited range: luma 126 with neutral chroma is mid-grey, and a
        // red pixel's chroma (Y 81, U 90, V 240) gives red.
        let (y, u, v) = ([126u8; 4], [128u8], [128u8]);
        let plane = |data: &'static [u8], stride, sub| Plane { data, stride, step: 1, offset: 0, sub };
        let leak = |d: &[u8]| -> &'static [u8] { Box::leak(d.to_vec().into_boxed_slice()) };
        let grey = Source::Yuv {
            y: plane(leak(&y), 2, 1),
            u: plane(leak(&u), 1, 2),
            v: plane(leak(&v), 1, 2),
            kr: 0.299,
            kb: 0.114,
            full_range: false,
        };
        let out = grey.letterbox([0, 0, 2, 2], (2, 2), (2, 4), 114);
        assert!(out[..4].iter().chain(&out[8..12]).chain(&out[16..20]).all(|v| (v - 128.0).abs() < 1.0), "{out:?}");
        assert!(out[4..8].iter().all(|v| *v == 114.0), "padding below the picture");
        let red = Source::Yuv {
            y: plane(leak(&[81; 4]), 2, 1),
            u: plane(leak(&[90]), 1, 2),
            v: plane(leak(&[240]), 1, 2),
            kr: 0.299,
            kb: 0.114,
            full_range: false,
        };
        let out = red.letterbox([0, 0, 2, 2], (1, 1), (1, 1), 114);
        assert!(out[0] < 5.0 && out[1] < 5.0 && out[2] > 250.0, "BGR of red: {out:?}");
    }
}
