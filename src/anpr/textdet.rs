//! Text localisation with a DB (differentiable binarisation) model such as PP-OCRv4 det:
//! probability map → components → minimum-area rectangles → unclipped quads, and the
//! perspective warp that straightens a quad for recognition.

use image::{GrayImage, Luma, RgbImage, imageops};
use imageproc::contours::{BorderType, find_contours};
use imageproc::geometric_transformations::{Border, Interpolation, Projection, warp_into};
use imageproc::geometry::min_area_rect;
use imageproc::point::Point;

use crate::detect::resample::{Plane, Source};
use crate::inference::manifest::Normalise;

/// A text region: corners clockwise from the top-left, in source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quad(pub [(f32, f32); 4]);

impl Quad {
    /// Width along the text and height across it.
    pub fn size(&self) -> (f32, f32) {
        let d = |a: (f32, f32), b: (f32, f32)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
        let p = self.0;
        (d(p[0], p[1]).max(d(p[3], p[2])), d(p[0], p[3]).max(d(p[1], p[2])))
    }

    /// The axis-aligned bounding box `[x1, y1, x2, y2]`.
    pub fn bbox(&self) -> [f32; 4] {
        let xs = self.0.map(|p| p.0);
        let ys = self.0.map(|p| p.1);
        let min = |v: [f32; 4]| v.iter().copied().fold(f32::INFINITY, f32::min);
        let max = |v: [f32; 4]| v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        [min(xs), min(ys), max(xs), max(ys)]
    }

    /// Grown outwards along its own axes: by `along` × its height at each end of the text, and
    /// by `across` × its height above and below.
    pub fn grow(&self, along: f32, across: f32) -> Quad {
        let (w, h) = self.size();
        let line = w.min(h);
        let [tl, tr, br, bl] = self.0;
        let unit = |a: (f32, f32), b: (f32, f32)| {
            let n = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt().max(1e-3);
            ((b.0 - a.0) / n, (b.1 - a.1) / n)
        };
        let (ux, uy) = (unit(tl, tr), unit(tl, bl));
        let (dx, dy) = (along * line, across * line);
        let mv = |p: (f32, f32), sx: f32, sy: f32| {
            (p.0 + dx * sx * ux.0 + dy * sy * uy.0, p.1 + dx * sx * ux.1 + dy * sy * uy.1)
        };
        Quad([mv(tl, -1.0, -1.0), mv(tr, 1.0, -1.0), mv(br, 1.0, 1.0), mv(bl, -1.0, 1.0)])
    }

    /// Shift and scale into another coordinate frame.
    pub fn map(&self, scale: (f32, f32), offset: (f32, f32)) -> Quad {
        Quad(self.0.map(|(x, y)| (x * scale.0 + offset.0, y * scale.1 + offset.1)))
    }
}

/// Post-processing thresholds (PaddleOCR's defaults for PP-OCRv4).
#[derive(Debug, Clone, Copy)]
pub struct DbParams {
    /// Probability above which a pixel is text.
    pub threshold: f32,
    /// Mean probability a region needs to be kept.
    pub box_score: f32,
    /// How far to grow a region, as area × ratio / perimeter (the model predicts shrunk text).
    pub unclip_ratio: f32,
    /// Shortest side a region may have, in map pixels.
    pub min_size: f32,
}

impl Default for DbParams {
    fn default() -> Self {
        Self { threshold: 0.3, box_score: 0.5, unclip_ratio: 1.6, min_size: 3.0 }
    }
}

/// The model input size for an image: sides scaled so the shorter is at least `min_side` and the
/// longer at most `max_side`, each rounded to a multiple of 32.
pub fn input_size(width: u32, height: u32, min_side: u32, max_side: u32) -> (u32, u32) {
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    let mut scale = (min_side as f32 / w.min(h)).max(1.0);
    scale = scale.min(max_side as f32 / w.max(h));
    (stride(w * scale), stride(h * scale))
}

/// A side of `v` pixels rounded to the detector's stride (32), at least one stride: the DB
/// network downsamples by 32 and upsamples back, so other sizes misalign its maps.
pub fn stride(v: f32) -> u32 {
    (((v / 32.0).round() as u32) * 32).max(32)
}

/// Lay out `region` (`[x1, y1, x2, y2]`) of an RGB image as a PaddleOCR model's planar BGR
/// tensor: scaled bilinearly to `size` as PaddleOCR's training resizes (OpenCV's
/// `INTER_LINEAR`), normalised by `norm` (its mean and deviation in B, G, R order), and padded
/// with zeros on the right to `width` columns.
pub fn tensor(image: &RgbImage, region: [u32; 4], size: (u32, u32), width: u32, norm: Normalise) -> Vec<f32> {
    let stride = 3 * image.width() as usize;
    let plane = |offset| Plane { data: image.as_raw(), stride, step: 3, offset, sub: 1 };
    let source = Source::Rgb { r: plane(0), g: plane(1), b: plane(2) };
    let (w, h, columns) = (size.0 as usize, size.1 as usize, width.max(size.0) as usize);
    let mut out = source.letterbox(region, (w, h), (columns, h), 0);
    for (b, values) in out.chunks_mut(columns * h).enumerate() {
        for row in values.chunks_mut(columns) {
            let (picture, pad) = row.split_at_mut(w);
            picture.iter_mut().for_each(|v| *v = (*v / 255.0 - norm.mean[b]) / norm.std[b]);
            pad.fill(0.0);
        }
    }
    out
}

/// Text regions in a probability map of `map_w` × `map_h`, as quads in map pixels, with scores.
pub fn regions(map: &[f32], map_w: usize, map_h: usize, params: &DbParams) -> Vec<(Quad, f32)> {
    let bitmap = GrayImage::from_fn(map_w as u32, map_h as u32, |x, y| {
        Luma([if map[y as usize * map_w + x as usize] > params.threshold { 255 } else { 0 }])
    });
    let mut out = Vec::new();
    for contour in find_contours::<i32>(&bitmap) {
        if contour.border_type != BorderType::Outer || contour.points.len() < 4 {
            continue;
        }
        let points: Vec<Point<f32>> = contour.points.iter().map(|p| Point::new(p.x as f32, p.y as f32)).collect();
        let quad = ordered(min_area_rect(&points));
        let (w, h) = quad.size();
        if w.min(h) < params.min_size {
            continue;
        }
        let score = mean_inside(map, map_w, map_h, &quad);
        if score < params.box_score {
            continue;
        }
        let grown = unclip(&quad, params.unclip_ratio);
        let (w, h) = grown.size();
        if w.min(h) < params.min_size + 2.0 {
            continue;
        }
        out.push((grown, score));
    }
    out
}

/// Pieces of one line of text are at most this far apart, in text heights, after unclipping (which
/// closes about one height of the gap): a plate's groups are split by a space, a dash or an
/// emblem about a character wide.
const JOIN_GAP: f32 = 1.0;
/// Pieces of one line are this alike in height (the larger over the smaller) at most: unclipping
/// grows a longer piece's box more...
const JOIN_HEIGHT: f32 = 1.8;
/// ...and their centres this far apart across the text, in text heights.
const JOIN_OFFSET: f32 = 0.3;

/// Lines whose pieces the detector split apart, joined: text of one height, level with each
/// other and a character's gap apart is one line. A plate's character groups are often split at
/// their gap (`DH7 X317` around a state emblem, `K17 9658`), and each piece alone reads as a
/// shorter plate or as no plate at all. Each joined line comes with the pieces it joins.
pub fn joined(quads: &[Quad]) -> Vec<(Quad, Vec<Quad>)> {
    let n = quads.len();
    let mut group: Vec<usize> = (0..n).collect();
    let root = |group: &[usize], mut i: usize| {
        while group[i] != i {
            i = group[i];
        }
        i
    };
    for a in 0..n {
        for b in 0..n {
            if a != b && pieces_of_one_line(&quads[a], &quads[b]) {
                let (ra, rb) = (root(&group, a), root(&group, b));
                group[ra.max(rb)] = ra.min(rb);
            }
        }
    }
    let mut out = Vec::new();
    for r in 0..n {
        let members: Vec<Quad> = (0..n).filter(|&i| root(&group, i) == r).map(|i| quads[i]).collect();
        if members.len() > 1 {
            let points: Vec<Point<f32>> = members.iter().flat_map(|q| q.0.map(|(x, y)| Point::new(x, y))).collect();
            out.push((ordered(min_area_rect(&points)), members));
        }
    }
    out
}

/// Whether `right` continues the text of `left` on its right (both near level).
fn pieces_of_one_line(left: &Quad, right: &Quad) -> bool {
    let (ha, hb) = (left.size().1, right.size().1);
    let h = ha.max(hb);
    let mid = |q: &Quad| (q.0.iter().map(|p| p.1).sum::<f32>()) / 4.0;
    let end = (left.0[1].0 + left.0[2].0) / 2.0;
    let start = (right.0[0].0 + right.0[3].0) / 2.0;
    let gap = start - end;
    h <= JOIN_HEIGHT * ha.min(hb)
        && (mid(left) - mid(right)).abs() <= JOIN_OFFSET * h
        && gap <= JOIN_GAP * h
        && gap >= -0.5 * h
        && start > (left.0[0].0 + left.0[3].0) / 2.0
}

/// Order a rectangle's corners clockwise from the top-left, with the long side along x when the
/// region is wider than tall.
fn ordered(points: [Point<f32>; 4]) -> Quad {
    let mut p: Vec<(f32, f32)> = points.iter().map(|p| (p.x, p.y)).collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (left, right) = p.split_at(2);
    let (tl, bl) = if left[0].1 <= left[1].1 { (left[0], left[1]) } else { (left[1], left[0]) };
    let (tr, br) = if right[0].1 <= right[1].1 { (right[0], right[1]) } else { (right[1], right[0]) };
    Quad([tl, tr, br, bl])
}

/// Grow a rectangle outwards by `area × ratio / perimeter` on every side.
fn unclip(quad: &Quad, ratio: f32) -> Quad {
    let (w, h) = quad.size();
    let d = w * h * ratio / (2.0 * (w + h)).max(1e-3);
    let [tl, tr, br, bl] = quad.0;
    let unit = |a: (f32, f32), b: (f32, f32)| {
        let n = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt().max(1e-3);
        ((b.0 - a.0) / n, (b.1 - a.1) / n)
    };
    let ux = unit(tl, tr);
    let uy = unit(tl, bl);
    let mv = |p: (f32, f32), sx: f32, sy: f32| (p.0 + d * (sx * ux.0 + sy * uy.0), p.1 + d * (sx * ux.1 + sy * uy.1));
    Quad([mv(tl, -1.0, -1.0), mv(tr, 1.0, -1.0), mv(br, 1.0, 1.0), mv(bl, -1.0, 1.0)])
}

/// The mean probability inside a quad.
fn mean_inside(map: &[f32], w: usize, h: usize, quad: &Quad) -> f32 {
    let [x1, y1, x2, y2] = quad.bbox();
    let (x1, y1) = (x1.floor().max(0.0) as usize, y1.floor().max(0.0) as usize);
    let (x2, y2) = ((x2.ceil() as usize).min(w.saturating_sub(1)), (y2.ceil() as usize).min(h.saturating_sub(1)));
    let (mut sum, mut n) = (0f32, 0usize);
    for y in y1..=y2 {
        for x in x1..=x2 {
            if contains(quad, (x as f32, y as f32)) {
                sum += map[y * w + x];
                n += 1;
            }
        }
    }
    if n == 0 { 0.0 } else { sum / n as f32 }
}

/// Whether a point lies inside a convex quad (edges clockwise in image coordinates).
fn contains(quad: &Quad, p: (f32, f32)) -> bool {
    let q = quad.0;
    (0..4).all(|i| {
        let (a, b) = (q[i], q[(i + 1) % 4]);
        (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0) >= -0.5
    })
}

/// Straighten a quad of `image` into an upright crop of its own size; tall crops are turned so the
/// text runs left to right.
pub fn warp(image: &RgbImage, quad: &Quad) -> Option<RgbImage> {
    let (w, h) = quad.size();
    let (w, h) = (w.round().max(1.0), h.round().max(1.0));
    let to = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    let projection = Projection::from_control_points(quad.0, to)?;
    let mut out = RgbImage::new(w as u32, h as u32);
    warp_into(image, projection, Interpolation::Bilinear, Border::Replicate, &mut out);
    if h >= 1.5 * w { Some(imageops::rotate270(&out)) } else { Some(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_scaled_normalised_per_bgr_plane_and_padded_with_zeros() {
        // Left half pure red, right half pure blue; the region is the right half's left 8
        // columns and all rows, scaled to 4 × 2 on a canvas 6 wide.
        let image =
            RgbImage::from_fn(16, 4, |x, _| if x < 8 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) });
        let norm = Normalise { mean: [0.5, 0.25, 0.0], std: [0.5, 0.25, 1.0] };
        let t = tensor(&image, [8, 0, 16, 4], (4, 2), 6, norm);
        assert_eq!(t.len(), 3 * 2 * 6);
        let (blue, green, red) = (&t[0..12], &t[12..24], &t[24..36]);
        for row in 0..2 {
            let cols = row * 6..row * 6 + 6;
            assert_eq!(&blue[cols.clone()], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0], "blue plane first, padded with 0");
            assert_eq!(&green[cols.clone()], &[-1.0, -1.0, -1.0, -1.0, 0.0, 0.0]);
            assert_eq!(&red[cols], &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "no red from outside the region");
        }
    }

    #[test]
    fn a_filled_rectangle_becomes_one_grown_upright_quad() {
        let (w, h) = (64, 32);
        let mut map = vec![0f32; w * h];
        for y in 10..20 {
            for x in 8..48 {
                map[y * w + x] = 0.9;
            }
        }
        let found = regions(&map, w, h, &DbParams::default());
        assert_eq!(found.len(), 1);
        let (quad, score) = found[0];
        assert!((score - 0.9).abs() < 0.05, "score {score}");
        let [x1, y1, x2, y2] = quad.bbox();
        // 40×10 shrunk text grows by 40·10·1.6/100 = 6.4 px per side.
        assert!((x1 - 1.6).abs() < 1.5 && (x2 - 53.4).abs() < 1.5, "{:?}", quad.bbox());
        assert!((y1 - 3.6).abs() < 1.5 && (y2 - 25.4).abs() < 1.5, "{:?}", quad.bbox());
    }

    fn rect(x1: f32, y1: f32, x2: f32, y2: f32) -> Quad {
        Quad([(x1, y1), (x2, y1), (x2, y2), (x1, y2)])
    }

    #[test]
    fn pieces_of_one_line_are_joined() {
        // `DH7` and `X317` around an emblem (gap 0.6 of the height), a state name above them and
        // a sticker level with them but three heights away.
        let (left, right) = (rect(100.0, 50.0, 160.0, 80.0), rect(178.0, 49.0, 260.0, 81.0));
        let (above, far) = (rect(120.0, 20.0, 240.0, 40.0), rect(350.0, 50.0, 380.0, 80.0));
        let found = joined(&[above, right, far, left]);
        assert_eq!(found.len(), 1);
        let (line, pieces) = &found[0];
        assert_eq!(pieces, &vec![right, left]);
        let [x1, y1, x2, y2] = line.bbox();
        assert!((x1 - 100.0).abs() < 1.0 && (x2 - 260.0).abs() < 1.0, "{:?}", line.bbox());
        assert!((y1 - 49.0).abs() < 1.0 && (y2 - 81.0).abs() < 1.0, "{:?}", line.bbox());
        // Text of another height beside it is not the same line.
        assert!(joined(&[left, rect(170.0, 40.0, 250.0, 100.0)]).is_empty());
    }

    #[test]
    fn input_sizes_are_multiples_of_32_within_the_limits() {
        assert_eq!(input_size(640, 480, 736, 1280), (992, 736));
        assert_eq!(input_size(4000, 3000, 736, 1280), (1280, 960));
        let (w, h) = input_size(50, 20, 96, 640);
        assert_eq!((w % 32, h % 32), (0, 0));
    }
}
