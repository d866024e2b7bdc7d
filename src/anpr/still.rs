//! Plate reading on still images (`vigil anpr`, the accuracy bench): vehicles first, then plates
//! inside them, falling back to the whole image.

use image::RgbImage;

use super::looks::{overlaps, pool_looks};
use super::{PlateRead, PlateReader, SAME_VEHICLE, Search, legible_vehicle};
use crate::detect::{Detection, Detector};
use crate::geometry::iou;
use crate::inference::InferenceError;
use crate::plate::SURE;

/// Lowest score for a vehicle box to be searched.
const VEHICLE_SCORE: f32 = 0.3;
/// Vehicle boxes are searched with this much margin, as a fraction of their size: plates sit at
/// the box edge and boxes are loose.
const VEHICLE_MARGIN: f32 = 0.05;

/// Reads plates in stills.
pub struct StillReader<'a> {
    pub reader: &'a PlateReader,
    /// Vehicle detector and the class ids of vehicles; `None` searches whole images (dedicated).
    pub vehicles: Option<(&'a Detector, Vec<usize>)>,
    pub formats: &'a crate::plate::Formats,
    /// The confidence a plate needs to be reported.
    pub min_confidence: f32,
}

impl StillReader<'_> {
    /// The plates in an image, one per place, those that reach `min_confidence` first, then the
    /// most plate-like. Each vehicle is searched first, and searched again finer where its most
    /// plate-like read is not [`SURE`]; the whole scene (plates too close to the camera for a
    /// vehicle to be detected, vehicles the detector misses) only when no vehicle gave a plate of
    /// `min_confidence`.
    pub fn read(&self, image: &RgbImage) -> Result<Vec<PlateRead>, InferenceError> {
        let mut plates: Vec<PlateRead> = Vec::new();
        if let Some((detector, classes)) = &self.vehicles {
            let (w, h) = image.dimensions();
            for region in vehicle_regions(detector.detect_rgb(image.as_raw(), w, h, VEHICLE_SCORE)?, classes, (w, h)) {
                let mut reads = self.reader.read(image, Some(region), Search::Vehicle, self.formats)?;
                // A still is one frame: where a track would read an unsure plate again on its next
                // frames, a still's vehicle is read again at a finer scale and the two looks are
                // pooled. A vehicle with no plate-like line at all (seen side on, plate out of
                // view) is not searched again.
                if reads.first().is_some_and(|r| r.text.confidence < SURE) {
                    let again = self.reader.read_vehicle_finer(image, region, self.formats)?;
                    reads = pool_looks(reads, again);
                }
                plates.extend(reads);
            }
        }
        // The reader keeps only plates (serials, and a vehicle's vanity plate), so a sure read is a
        // sure plate.
        if !plates.iter().any(|p| p.text.confidence >= self.min_confidence) {
            let search = if self.vehicles.is_some() { Search::Unboxed } else { Search::Scene };
            plates.extend(self.reader.read(image, None, search, self.formats)?);
        }
        Ok(one_per_place(plates, self.min_confidence))
    }
}

/// One read per place: reads that reach `min_confidence` (which are reported) before those that
/// do not, then the most plate-like. An unsure vehicle read in the place of a sure one from the
/// scene search would otherwise hide it.
fn one_per_place(mut plates: Vec<PlateRead>, min_confidence: f32) -> Vec<PlateRead> {
    let reported = |p: &PlateRead| p.text.confidence >= min_confidence;
    plates.sort_by(|a, b| reported(b).cmp(&reported(a)).then(b.text.likeness.total_cmp(&a.text.likeness)));
    let mut kept: Vec<PlateRead> = Vec::new();
    for p in plates {
        if !kept.iter().any(|k| overlaps(k.bbox(), p.bbox())) {
            kept.push(p);
        }
    }
    kept
}

/// The regions to search for plates: each vehicle near enough to show a legible plate, once,
/// under its surest label, with a margin.
fn vehicle_regions(detections: Vec<Detection>, classes: &[usize], (w, h): (u32, u32)) -> Vec<[u32; 4]> {
    let mut searched: Vec<[f32; 4]> = Vec::new();
    // Detections come best first.
    for d in detections {
        if classes.contains(&d.class) && searched.iter().all(|s| iou(s, &d.bbox) < SAME_VEHICLE) {
            searched.push(d.bbox);
        }
    }
    searched
        .into_iter()
        .filter(|b| legible_vehicle(*b, (w, h)))
        .map(|[x1, y1, x2, y2]| {
            let (mx, my) = ((x2 - x1) * VEHICLE_MARGIN, (y2 - y1) * VEHICLE_MARGIN);
            [(x1 - mx).max(0.0) as u32, (y1 - my).max(0.0) as u32, ((x2 + mx) as u32).min(w), ((y2 + my) as u32).min(h)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anpr::textdet::Quad;
    use crate::plate::PlateText;

    /// A read of `text` on the line boxed `[x1, y1, x2, y2]`.
    fn at(text: &str, probs: &[f32], [x1, y1, x2, y2]: [f32; 4]) -> PlateRead {
        PlateRead { text: PlateText::sample(text, probs), quad: Quad([(x1, y1), (x2, y1), (x2, y2), (x1, y2)]) }
    }

    #[test]
    fn an_unsure_read_does_not_hide_a_reported_one_in_the_same_place() {
        let mut unsure = at("BA2681M", &[0.55; 7], [230.0, 130.0, 336.0, 153.0]);
        unsure.text.likeness = 0.9;
        let sure = at("BA268IM", &[0.69; 7], [233.0, 131.0, 334.0, 152.0]);
        let elsewhere = at("ZG1234A", &[0.4; 7], [10.0, 10.0, 80.0, 30.0]);
        let kept = one_per_place(vec![unsure, sure, elsewhere], 0.6);
        let texts: Vec<&str> = kept.iter().map(|r| r.text.text.as_str()).collect();
        assert_eq!(texts, ["BA268IM", "ZG1234A"]);
    }

    fn det(class: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { class, score, bbox }
    }

    #[test]
    fn a_vehicle_boxed_under_two_labels_is_searched_once() {
        let (car, truck, person) = (2, 7, 0);
        let found = vec![
            det(car, 0.87, [300.0, 100.0, 700.0, 400.0]),
            // The same van, also called a truck: one search, the car's.
            det(truck, 0.38, [296.0, 96.0, 704.0, 410.0]),
            // The next car in the row overlaps it, but is another vehicle.
            det(car, 0.6, [600.0, 120.0, 900.0, 380.0]),
            det(person, 0.9, [100.0, 100.0, 160.0, 300.0]),
        ];
        let regions = vehicle_regions(found, &[car, truck], (1000, 1000));
        assert_eq!(regions, vec![[280, 85, 720, 415], [585, 107, 915, 393]]);
    }

    #[test]
    fn a_vehicle_too_far_away_to_show_a_legible_plate_is_not_searched() {
        let car = 2;
        let found = vec![
            // 100 px wide: its plate would be under 64 px.
            det(car, 0.9, [400.0, 300.0, 500.0, 360.0]),
            // As narrow, cut by the picture's left edge: it may be all plate.
            det(car, 0.8, [0.0, 300.0, 100.0, 360.0]),
            det(car, 0.7, [600.0, 300.0, 740.0, 400.0]),
        ];
        let regions = vehicle_regions(found, &[car], (1000, 1000));
        assert_eq!(regions, vec![[0, 297, 105, 363], [593, 295, 747, 405]]);
    }
}
