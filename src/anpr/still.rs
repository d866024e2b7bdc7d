//! Plate reading on still images (`vigil anpr`, the accuracy bench): vehicles first, then plates
//! inside them, falling back to the whole image.

use image::RgbImage;

use super::{PlateRead, PlateReader, Search};
use crate::detect::Detector;
use crate::inference::InferenceError;

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
    /// The plates in an image, one per place, highest likeness first. Each vehicle is searched
    /// first; the whole scene (plates too close to the camera for a vehicle to be detected,
    /// vehicles the detector misses) only when no vehicle gave a sure plate.
    pub fn read(&self, image: &RgbImage) -> Result<Vec<PlateRead>, InferenceError> {
        let mut plates: Vec<PlateRead> = Vec::new();
        if let Some((detector, classes)) = &self.vehicles {
            let (w, h) = image.dimensions();
            for d in detector.detect_rgb(image.as_raw(), w, h, VEHICLE_SCORE)? {
                if !classes.contains(&d.class) {
                    continue;
                }
                let [x1, y1, x2, y2] = d.bbox;
                let (mx, my) = ((x2 - x1) * VEHICLE_MARGIN, (y2 - y1) * VEHICLE_MARGIN);
                let region = [
                    (x1 - mx).max(0.0) as u32,
                    (y1 - my).max(0.0) as u32,
                    ((x2 + mx) as u32).min(w),
                    ((y2 + my) as u32).min(h),
                ];
                plates.extend(self.reader.read(image, Some(region), Search::Vehicle, self.formats)?);
            }
        }
        // The reader keeps only plates (serials, and a vehicle's vanity plate), so a sure read is a
        // sure plate.
        if !plates.iter().any(|p| p.text.confidence >= self.min_confidence) {
            plates.extend(self.reader.read(image, None, Search::Scene, self.formats)?);
        }
        plates.sort_by(|a, b| b.text.likeness.total_cmp(&a.text.likeness));
        let mut kept: Vec<PlateRead> = Vec::new();
        for p in plates {
            if !kept.iter().any(|k| overlaps(k.bbox(), p.bbox())) {
                kept.push(p);
            }
        }
        Ok(kept)
    }
}

/// Whether two boxes cover the same place: half the smaller one inside the other.
pub fn overlaps(a: [f32; 4], b: [f32; 4]) -> bool {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: [f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    iw * ih >= 0.5 * area(a).min(area(b))
}
