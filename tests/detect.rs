//! YOLOX through ONNX Runtime on a real image, against the reference results in shared/ASSETS.md
//! (which were made on a 416 × 416 letterbox; vigil's is 416 × 320 for this photo).

use std::path::Path;
use std::sync::Arc;

use vigil::config::{InferenceConfig, ModelsConfig};
use vigil::detect::Detector;
use vigil::inference::Runtime;
use vigil::metrics::Metrics;

fn detector() -> Detector {
    let models = ModelsConfig { dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("models"), ..Default::default() };
    let inference = InferenceConfig::default();
    let runtime = Runtime::load(&inference).expect("ONNX Runtime (run scripts/setup)");
    Detector::load(&models, &runtime, &inference, Arc::new(Metrics::new())).expect("detector")
}

#[test]
fn the_letterbox_is_no_larger_than_the_picture() {
    let d = detector();
    // Scaled as for 416 × 416 (the longer side to 416), the other side rounded up to 32.
    assert_eq!(d.input_size(768, 432), (416, 256), "a 16:9 frame");
    assert_eq!(d.input_size(1920, 1080), (416, 256));
    assert_eq!(d.input_size(768, 576), (416, 320), "a 4:3 photo");
    assert_eq!(d.input_size(100, 400), (128, 416), "a tall crop");
    assert_eq!(d.input_size(500, 500), (416, 416));
    assert_eq!(d.input_size(3000, 10), (416, 32), "never below the largest stride");
}

#[test]
fn yolox_finds_the_dog_bicycle_and_car_where_the_reference_does() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/images/dog.jpg");
    let img = image::open(&path).expect("../shared/images/dog.jpg").to_rgb8();
    let d = detector();
    let found = d.detect_rgb(img.as_raw(), img.width(), img.height(), 0.3).unwrap();
    for f in &found {
        println!("{} {:.3} {:?}", d.labels[f.class], f.score, f.bbox.map(|v| v.round()));
    }
    let reference: [(&str, f32, [f32; 4]); 3] = [
        ("dog", 0.855, [133.0, 207.0, 326.0, 543.0]),
        ("bicycle", 0.803, [52.0, 137.0, 572.0, 424.0]),
        ("car", 0.798, [466.0, 78.0, 692.0, 171.0]),
    ];
    for (label, score, bbox) in reference {
        let hit =
            found.iter().find(|f| d.labels[f.class] == label).unwrap_or_else(|| panic!("no {label} in {found:?}"));
        assert!((hit.score - score).abs() < 0.05, "{label} score {} vs {score}", hit.score);
        // The reference decoded the JPEG with libjpeg; the `image` crate's decoder differs by a
        // grey level here and there, which moves a faint edge (the bicycle's back wheel) a little.
        let tolerance = [bbox[2] - bbox[0], bbox[3] - bbox[1]].map(|side| (side * 0.025).max(6.0));
        for (i, (got, want)) in hit.bbox.iter().zip(bbox).enumerate() {
            assert!((got - want).abs() <= tolerance[i % 2], "{label} box {:?} vs {bbox:?}", hit.bbox);
        }
    }
    let strong: Vec<_> = found.iter().filter(|f| f.score >= 0.5).map(|f| d.labels[f.class].as_str()).collect();
    assert_eq!(strong.len(), 3, "only the three objects score >= 0.5: {strong:?}");
}
