//! Several looks at one picture, combined: where a second look goes (closer, around text a scene
//! search found too small to read), and how its reads join the first look's.

use super::textdet::{Quad, stride};
use super::{MIN_PLATE_WIDTH, PlateRead, pool};
use crate::plate::PlateText;

/// A scene's text line shorter than this, in the text detector's pixels, is too small for it:
/// PP-OCR's detector finds such a plate in pieces (a frame's lettering, one group of its
/// characters) or not at all, and the recogniser reads the pieces short.
const SMALL_LINE: f32 = 32.0;
/// A closer look scales the small line it goes to to this height, in the text detector's
/// pixels: the plate around it, whose characters are as tall or taller, comes out 40–80 px, which
/// the detector finds whole.
const LOOK_LINE: f32 = 40.0;
/// A closer look's text-detector input, in pixels: a plate is at most about twice as wide as
/// tall around its characters' line, so this holds a plate up to about six times the line's
/// height wide with the line anywhere on it, at a quarter of a scene search's pixels.
const LOOK_SIZE: (f32, f32) = (512.0, 256.0);
/// Closer looks per scene, at most: a plate's pieces are among the few largest small lines.
const CLOSER_LOOKS: usize = 3;
/// A plate's text line is at most this many times as wide as tall (eight characters of about
/// 0.6 of their height and their gaps); longer lines are signs and stickers.
const PLATE_LINE_ASPECT: f32 = 6.0;
/// Characters are at least this share of their plate's width (an EU plate's 75 mm of 520, a US
/// plate's 3 in of 12), so a line shorter than this share of [`MIN_PLATE_WIDTH`] belongs to a plate
/// too narrow to read.
const LEAST_LINE_SHARE: f32 = 1.0 / 8.0;

/// Where to look closer, given the lines a scene search found (largest first, in image pixels)
/// at `scale` (detector pixels per image pixel): around each of the [`CLOSER_LOOKS`] largest
/// plate-shaped lines too small for the detector ([`SMALL_LINE`]), a region (`[x1, y1, x2, y2]`
/// in image pixels) and the detector input size it is scaled to, so that the line comes out
/// [`LOOK_LINE`] high. The caller looks only where the scene gave no sure plate: a plate read
/// sure was not too small.
pub fn closer_looks(lines: &[Quad], scale: f32, (width, height): (u32, u32)) -> Vec<([u32; 4], (u32, u32))> {
    lines
        .iter()
        .filter(|q| {
            let (w, h) = q.size();
            h * scale < SMALL_LINE && h >= LEAST_LINE_SHARE * MIN_PLATE_WIDTH && w <= PLATE_LINE_ASPECT * h
        })
        .take(CLOSER_LOOKS)
        .map(|q| {
            let [x1, y1, x2, y2] = q.bbox();
            let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
            let zoom = LOOK_LINE / q.size().1;
            let (hw, hh) = (LOOK_SIZE.0 / zoom / 2.0, LOOK_SIZE.1 / zoom / 2.0);
            let clamp = |v: f32, most: u32| v.clamp(0.0, most as f32) as u32;
            let region = [clamp(cx - hw, width), clamp(cy - hh, height), clamp(cx + hw, width), clamp(cy + hh, height)];
            // A region the border cut keeps the zoom.
            let side = |from: u32, to: u32| stride((to - from) as f32 * zoom);
            (region, (side(region[0], region[2]), side(region[1], region[3])))
        })
        .collect()
}

/// Two looks at one place, combined: a line of the second look in the same place as one of the
/// first is the same line, and its reads are pooled (see [`pool`]); the rest are added. Most
/// plate-like first.
pub fn pool_looks(mut first: Vec<PlateRead>, again: Vec<PlateRead>) -> Vec<PlateRead> {
    // Every read of one place is pooled at once, so two second-look lines over one first-look
    // line weigh as much as each other.
    let mut places: Vec<Vec<PlateText>> = first.iter().map(|r| vec![r.text.clone()]).collect();
    let mut added = Vec::new();
    for read in again {
        match first.iter().position(|r| overlaps(r.bbox(), read.bbox())) {
            Some(i) => places[i].push(read.text),
            None => added.push(read),
        }
    }
    for (read, texts) in first.iter_mut().zip(places) {
        if texts.len() > 1
            && let Some(pooled) = pool(texts)
        {
            read.text = pooled;
        }
    }
    first.extend(added);
    first.sort_by(|a, b| b.text.likeness.total_cmp(&a.text.likeness));
    first
}

/// Whether two boxes cover the same place: half the smaller one inside the other.
pub fn overlaps(a: [f32; 4], b: [f32; 4]) -> bool {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: [f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    iw * ih >= 0.5 * area(a).min(area(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read of `text` on the line boxed `[x1, y1, x2, y2]`.
    fn at(text: &str, probs: &[f32], [x1, y1, x2, y2]: [f32; 4]) -> PlateRead {
        PlateRead { text: PlateText::sample(text, probs), quad: boxed([x1, y1, x2, y2]) }
    }

    fn boxed([x1, y1, x2, y2]: [f32; 4]) -> Quad {
        Quad([(x1, y1), (x2, y1), (x2, y2), (x1, y2)])
    }

    #[test]
    fn a_second_look_pools_with_the_first_in_the_same_place_and_adds_the_rest() {
        let first = vec![at("UF2V55", &[0.99, 0.99, 0.99, 0.77, 0.99, 0.59], [350.0, 320.0, 420.0, 360.0])];
        let again = vec![
            // The same line, boxed a little differently, its last glyph read sure.
            at("UF2V5S", &[0.99, 0.98, 0.99, 0.9, 0.99, 0.95], [352.0, 322.0, 418.0, 358.0]),
            // A line the first look did not find.
            at("ABC123", &[0.9; 6], [100.0, 300.0, 160.0, 330.0]),
        ];
        let looks = pool_looks(first, again);
        let texts: Vec<&str> = looks.iter().map(|r| r.text.text.as_str()).collect();
        assert_eq!(texts, ["UF2V5S", "ABC123"]);
        // Each character is as sure as its surest read: the weakest is now the V, at 0.9.
        assert!((looks[0].text.confidence - 0.9).abs() < 1e-6, "{}", looks[0].text.confidence);
        assert_eq!(looks[0].bbox(), [350.0, 320.0, 420.0, 360.0], "the first look's box is kept");
    }

    #[test]
    fn two_second_look_lines_over_one_first_look_line_are_pooled_at_once() {
        // The first look reads the last glyph as 3 at 0.6; two lines of the second look over it
        // both read 8 at 0.5. Pooled two at a time, the 3 would beat each 8 alone.
        let first = vec![at("ABC123", &[0.9, 0.9, 0.9, 0.9, 0.9, 0.6], [100.0, 100.0, 200.0, 130.0])];
        let again = vec![
            at("ABC128", &[0.9, 0.9, 0.9, 0.9, 0.9, 0.5], [104.0, 101.0, 198.0, 129.0]),
            at("ABC128", &[0.9, 0.9, 0.9, 0.9, 0.9, 0.5], [106.0, 100.0, 199.0, 131.0]),
        ];
        let looks = pool_looks(first, again);
        assert_eq!(looks.len(), 1);
        assert_eq!(looks[0].text.text, "ABC128");
    }

    #[test]
    fn small_plate_shaped_lines_are_looked_at_closer_and_the_rest_are_not() {
        // A 1280 x 720 scene searched at 960 x 544 (0.75 detector pixels per image pixel).
        let lines = [
            // A sign's line: large enough for the detector.
            boxed([100.0, 50.0, 400.0, 100.0]),
            // A shop's slogan: small, but longer than any plate's line.
            boxed([500.0, 50.0, 800.0, 80.0]),
            // One group of a small plate's characters, 32 px high (24 in the detector).
            boxed([300.0, 400.0, 348.0, 432.0]),
            // A speck: its plate would be too narrow to read.
            boxed([700.0, 400.0, 710.0, 406.0]),
        ];
        let looks = closer_looks(&lines, 0.75, (1280, 720));
        // The group scaled 40 / 32: a 409 x 205 px region around it, whole inside the picture.
        assert_eq!(looks, vec![([119, 313, 528, 518], (512, 256))]);
    }

    #[test]
    fn a_closer_look_stops_at_the_pictures_border() {
        let lines = [boxed([0.0, 0.0, 40.0, 20.0])];
        let looks = closer_looks(&lines, 1.0, (1024, 768));
        // 40 / 20: 256 x 128 px centred on the line, cut at the top-left corner, and still
        // enlarged twice: 296 x 148, rounded to 32.
        assert_eq!(looks, vec![([0, 0, 148, 74], (288, 160))]);
    }
}
