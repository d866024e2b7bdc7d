//! Glyph heights on a straightened text line.
//!
//! A plate's registration is printed in one character height. Marks beside it are printed
//! smaller: the country code under a coat of arms or in an EU band (`SK`, `D`), a stacked
//! series or usage suffix, a dealer's or a sticker's lettering. The recogniser would read them
//! as characters of the line, so where the ink at either end of a line stands lower than its
//! tall glyphs, that end is cut off before it is read.

use image::{GenericImageView, RgbImage};

/// Ink under this share of the tall glyphs' height is a mark beside the plate.
const SMALL: f32 = 0.6;
/// A registration is at least this many glyphs; a line with fewer tall ones is left whole.
const MIN_TALL: usize = 4;
/// The most of a line's width a cut end may take.
const MAX_CUT: f32 = 0.3;
/// Blank kept before the first and after the last tall glyph, in shares of their height.
const MARGIN: f32 = 0.2;
/// A row inked over more than this share of the line is a border or a shadow, not a glyph.
const BORDER_ROW: f32 = 0.6;
/// A frame's side stands within this many columns of the line's end ...
const SIDE: usize = 2;
/// ... over at least this share of its height.
const FRAME_SIDE: f32 = 0.75;
/// Ink whose saturation differs from the text's by more than this is another mark's colour.
const OFF_TONE: i32 = 40;

/// `line` without the ends that hold only ink smaller than its tall glyphs, and whether an end
/// was cut.
pub fn trim_small_marks(line: RgbImage) -> (RgbImage, bool) {
    match kept_span(&line) {
        Some((x1, x2)) => (line.view(x1, 0, x2 - x1, line.height()).to_image(), true),
        None => (line, false),
    }
}

/// The columns `x1..x2` of `line` to keep, where an end is cut off.
fn kept_span(line: &RgbImage) -> Option<(u32, u32)> {
    let (w, h) = line.dimensions();
    if w < 40 || h < 12 {
        return None;
    }
    // Specks (noise, screws) are not glyphs of either kind.
    let speck = (h / 8).max(2);
    let parts: Vec<Part> = ink_parts(line).into_iter().filter(|p| p.height() >= speck).collect();
    let tallest = parts.iter().map(Part::height).max()?;
    let mut heights: Vec<u32> = parts.iter().map(Part::height).filter(|&ph| 2 * ph >= tallest).collect();
    heights.sort_unstable();
    let glyph = heights[heights.len() / 2] as f32;
    let tall: Vec<&Part> = parts.iter().filter(|p| p.height() as f32 >= SMALL * glyph).collect();
    if tall.len() < MIN_TALL {
        return None;
    }
    let (first, last) =
        (tall.iter().map(|p| p.left).min().unwrap_or(0), tall.iter().map(|p| p.right).max().unwrap_or(0));
    // The registration's band, from its glyphs' tops to their feet. Ink centred above or below
    // it is another row of the plate (a state's name, a slogan, a dealer's lettering), which
    // tells nothing of what stands at the line's ends.
    let (top, bottom) =
        (tall.iter().map(|p| p.top).min().unwrap_or(0), tall.iter().map(|p| p.bottom).max().unwrap_or(0));
    let ends = |beyond: &dyn Fn(&Part) -> bool| -> Vec<&Part> {
        parts.iter().filter(|p| beyond(p) && (top..=bottom).contains(&((p.top + p.bottom) / 2))).collect()
    };
    let (before, after) = (ends(&|p| p.right < first), ends(&|p| p.left > last));
    // An end is cut where all its ink stands lower than the glyphs (a tall glyph broken into
    // faint pieces spreads over their height and keeps its end) and some of it is a mark apart
    // from the line's edge, not a piece of the frame or of the next text.
    let low = |ends: &[&Part]| {
        let (t, b) = (ends.iter().map(|p| p.top).min(), ends.iter().map(|p| p.bottom).max());
        matches!((t, b), (Some(t), Some(b)) if ((b - t + 1) as f32) < SMALL * glyph)
    };
    // A margin is kept beside the glyphs, but none of a mark's ink.
    let margin = (MARGIN * glyph) as u32;
    let left = first.saturating_sub(margin).max(before.iter().map(|p| p.right + 1).max().unwrap_or(0));
    let right = (last + 1 + margin).min(w).min(after.iter().map(|p| p.left).min().unwrap_or(w));
    let cut_left = left > 0
        && (left as f32) <= MAX_CUT * w as f32
        && low(&before)
        && before.iter().any(|p| p.left as usize > SIDE);
    let cut_right = right < w
        && ((w - right) as f32) <= MAX_CUT * w as f32
        && low(&after)
        && after.iter().any(|p| p.right as usize + 1 + SIDE < w as usize);
    (cut_left || cut_right).then_some((if cut_left { left } else { 0 }, if cut_right { right } else { w }))
}

/// A connected piece of ink, by its bounding box.
struct Part {
    left: u32,
    right: u32,
    top: u32,
    bottom: u32,
}

impl Part {
    fn height(&self) -> u32 {
        self.bottom - self.top + 1
    }
}

/// The line's connected pieces of ink (8-connected), split from the background at Otsu's
/// threshold (the ink is the lesser part), without borders and the plate frame's sides.
fn ink_parts(line: &RgbImage) -> Vec<Part> {
    let (w, h) = (line.width() as usize, line.height() as usize);
    let grey: Vec<u8> =
        line.pixels().map(|p| ((u32::from(p[0]) * 3 + u32::from(p[1]) * 6 + u32::from(p[2])) / 10) as u8).collect();
    let t = otsu(&grey);
    let dark = grey.iter().filter(|&&g| g <= t).count();
    let ink_is_dark = dark * 2 <= grey.len();
    let dark_or_light: Vec<bool> = grey.iter().map(|&g| (g <= t) == ink_is_dark).collect();
    // Emblems beside the text (a coat of arms, a flag) are as dark as it, but coloured: ink is
    // also the text's own colour, as far as its saturation tells.
    let chroma =
        |p: &image::Rgb<u8>| i32::from(*p.0.iter().max().unwrap_or(&0)) - i32::from(*p.0.iter().min().unwrap_or(&0));
    let mut text: Vec<i32> = line.pixels().zip(&dark_or_light).filter(|(_, i)| **i).map(|(p, _)| chroma(p)).collect();
    text.sort_unstable();
    let tone = text.get(text.len() / 2).copied().unwrap_or(0);
    let mut inked: Vec<bool> =
        line.pixels().zip(dark_or_light).map(|(p, i)| i && (chroma(p) - tone).abs() <= OFF_TONE).collect();
    for row in inked.chunks_exact_mut(w) {
        if row.iter().filter(|&&b| b).count() as f32 > BORDER_ROW * w as f32 {
            row.fill(false);
        }
    }
    let mut parts = Vec::new();
    let mut queue = Vec::new();
    for start in 0..w * h {
        if !inked[start] {
            continue;
        }
        // Each pixel is taken off the ink as it joins its piece, so no piece is found twice.
        inked[start] = false;
        queue.push(start);
        let mut part = Part { left: u32::MAX, right: 0, top: u32::MAX, bottom: 0 };
        while let Some(p) = queue.pop() {
            let (x, y) = (p % w, p / w);
            (part.left, part.right) = (part.left.min(x as u32), part.right.max(x as u32));
            (part.top, part.bottom) = (part.top.min(y as u32), part.bottom.max(y as u32));
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let n = ny * w + nx;
                    if inked[n] {
                        inked[n] = false;
                        queue.push(n);
                    }
                }
            }
        }
        // The plate frame's sides: thin marks at the line's left or right end over most of its
        // height.
        let at_side = part.left as usize <= SIDE || part.right as usize + 1 + SIDE >= w;
        let thin = ((part.right - part.left + 1) * 4) as usize <= h;
        if !(at_side && thin && part.height() as f32 >= FRAME_SIDE * h as f32) {
            parts.push(part);
        }
    }
    parts
}

/// Otsu's threshold of grey levels: the level that best splits them into two classes.
fn otsu(grey: &[u8]) -> u8 {
    let mut hist = [0u64; 256];
    for &g in grey {
        hist[g as usize] += 1;
    }
    let total = grey.len() as f64;
    let sum: f64 = hist.iter().enumerate().map(|(i, &n)| i as f64 * n as f64).sum();
    let (mut below, mut below_sum, mut best, mut level) = (0.0, 0.0, 0.0, 0u8);
    for (i, &n) in hist.iter().enumerate() {
        below += n as f64;
        below_sum += i as f64 * n as f64;
        let above = total - below;
        if below == 0.0 || above == 0.0 {
            continue;
        }
        let between = below * above * (below_sum / below - (sum - below_sum) / above).powi(2);
        if between > best {
            (best, level) = (between, i as u8);
        }
    }
    level
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A white line 200 × 40 with dark bars: `(x, width, top, bottom)` each.
    fn line(bars: &[(u32, u32, u32, u32)]) -> RgbImage {
        let mut img = RgbImage::from_pixel(200, 40, Rgb([230, 230, 230]));
        for &(x, w, top, bottom) in bars {
            for xx in x..x + w {
                for y in top..bottom {
                    img.put_pixel(xx, y, Rgb([20, 20, 20]));
                }
            }
        }
        img
    }

    #[test]
    fn a_small_country_code_before_the_registration_is_cut_off() {
        // `SK` at the foot of the line, then seven full-height glyphs from x = 46.
        let mut bars = vec![(6, 6, 26, 36), (20, 6, 26, 36)];
        bars.extend((0..7).map(|k| (46 + 20 * k, 10, 4, 36)));
        let (out, cut) = trim_small_marks(line(&bars));
        assert!(cut);
        // The cut keeps a fifth of the glyph height (32 px) before the first glyph.
        assert_eq!((out.width(), out.height()), (200 - 40, 40));
    }

    #[test]
    fn a_small_suffix_after_the_registration_is_cut_off() {
        // Seven glyphs end at x = 136; a small two-glyph mark stands at the top after them.
        let mut bars: Vec<(u32, u32, u32, u32)> = (0..7).map(|k| (6 + 20 * k, 10, 4, 36)).collect();
        bars.extend([(150, 6, 4, 14), (160, 6, 4, 14)]);
        assert_eq!(trim_small_marks(line(&bars)).0.width(), 136 + 6);
    }

    #[test]
    fn a_row_of_text_above_the_registration_does_not_keep_a_small_mark() {
        // A state's name in small letters along the top, over the glyphs and the suffix alike
        // (New Jersey's `10-DTM 59`).
        let mut bars: Vec<(u32, u32, u32, u32)> = (0..25).map(|k| (10 + 6 * k, 4, 1, 7)).collect();
        bars.extend((0..7).map(|k| (6 + 20 * k, 10, 10, 36)));
        // The mark starts 14 px after the last glyph: the cut keeps a fifth of the glyph height.
        bars.extend([(150, 6, 20, 30), (160, 6, 20, 30)]);
        assert_eq!(trim_small_marks(line(&bars)).0.width(), 136 + 5);
        // Nearer than that margin, the cut falls where the mark begins.
        let mut bars: Vec<(u32, u32, u32, u32)> = (0..7).map(|k| (16 + 20 * k, 10, 10, 36)).collect();
        bars.extend([(149, 6, 20, 30), (159, 6, 20, 30)]);
        assert_eq!(trim_small_marks(line(&bars)).0.width(), 149);
    }

    #[test]
    fn even_glyphs_a_frame_and_a_faint_broken_glyph_keep_the_whole_line() {
        // A border along the top and a frame's side at each end are not glyphs.
        let mut bars = vec![(0, 200, 0, 2), (0, 2, 0, 40), (198, 2, 0, 40)];
        bars.extend((0..7).map(|k| (16 + 24 * k, 10, 6, 36)));
        assert_eq!(trim_small_marks(line(&bars)).0.width(), 200);
        // A first glyph read in two faint pieces, top and bottom, spans the glyphs' height.
        let mut bars = vec![(6, 10, 4, 12), (6, 10, 28, 36)];
        bars.extend((1..8).map(|k| (6 + 20 * k, 10, 4, 36)));
        assert_eq!(trim_small_marks(line(&bars)).0.width(), 200);
    }

    #[test]
    fn low_ink_at_the_lines_edge_keeps_its_end() {
        // A piece of the frame at the left edge, as low as a mark, is no mark: nothing is cut
        // (cut, a blurred first glyph read differently: US-dev `4FCW533`).
        let mut bars = vec![(0, 8, 26, 36)];
        bars.extend((0..7).map(|k| (30 + 20 * k, 10, 4, 36)));
        assert_eq!(trim_small_marks(line(&bars)).0.width(), 200);
    }

    #[test]
    fn a_line_of_small_text_with_few_tall_glyphs_is_left_whole() {
        let mut bars: Vec<(u32, u32, u32, u32)> = (0..6).map(|k| (6 + 12 * k, 6, 26, 36)).collect();
        bars.extend((0..3).map(|k| (100 + 20 * k, 10, 4, 36)));
        assert_eq!(trim_small_marks(line(&bars)).0.width(), 200);
    }
}
