//! YOLOX through ONNX Runtime on a real image, against the reference results in shared/ASSETS.md
//! (which were made on a 416 × 416 letterbox; vigil's is 416 × 320 for this photo).

use std::path::Path;
use std::sync::Arc;

use gstreamer_video::prelude::*;
use vigil::config::{InferenceConfig, ModelsConfig};
use vigil::detect::{Detector, Fit};
use vigil::inference::{Batcher, Runtime, Workload};
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
    assert_eq!(d.input_size(768, 432, Fit::Exact), (416, 256), "a 16:9 photo");
    assert_eq!(d.input_size(768, 576, Fit::Exact), (416, 320), "a 4:3 photo");
    // For video, a side just past a multiple of 32 (234 for 16:9) is scaled onto it instead, 4 %
    // smaller; one that would shrink more (312 for 4:3 onto 288) is padded as for stills.
    assert_eq!(d.input_size(768, 432, Fit::Grid), (416, 224), "a 16:9 frame");
    assert_eq!(d.input_size(1920, 1080, Fit::Grid), (416, 224));
    assert_eq!(d.input_size(768, 576, Fit::Grid), (416, 320), "a 4:3 frame");
    for fit in [Fit::Exact, Fit::Grid] {
        assert_eq!(d.input_size(100, 400, fit), (128, 416), "a tall crop");
        assert_eq!(d.input_size(500, 500, fit), (416, 416));
        assert_eq!(d.input_size(3000, 10, fit), (416, 32), "never below the largest stride");
    }
    // A crop at its frame's scale (0.52 for 768 × 432 onto 416 × 224) is only as large as it is.
    let frame = Fit::Frame(768, 432);
    assert_eq!(d.scale(200, 100, frame), d.scale(768, 432, Fit::Grid));
    assert_eq!(d.input_size(200, 100, frame), (128, 64), "104 × 52, rounded up to 32");
    assert_eq!(d.input_size(768, 432, frame), (416, 224), "the whole frame");
}

/// A crop at its frame's scale sees what a whole-frame detection sees: the objects inside it are
/// found at a fraction of the input, their boxes within 6 px and scores within 0.05 (the dog: 5 px
/// and +0.04; only the context past the crop's edge differs).
#[test]
fn a_crop_at_the_frames_scale_finds_what_the_whole_frame_does() {
    let d = detector();
    let (buffer, info) = photo_as(gstreamer_video::VideoFormat::I420);
    let (w, h) = (info.width(), info.height());
    let whole = d.detect(&buffer, &info, None, Fit::Grid, 0.3).unwrap();
    // Around the dog (133, 207)–(326, 543), with room on every side.
    let crop = [60, 150, 400, h];
    let fit = Fit::Frame(w, h);
    let (cw, ch) = d.input_size(crop[2] - crop[0], crop[3] - crop[1], fit);
    let (fw, fh) = d.input_size(w, h, Fit::Grid);
    assert!(cw * ch * 2 <= fw * fh, "a {cw} × {ch} input against the frame's {fw} × {fh}");
    let cropped = d.detect(&buffer, &info, Some(crop), fit, 0.3).unwrap();
    let dog = |found: &[vigil::detect::Detection]| {
        *found.iter().find(|f| d.labels[f.class] == "dog").unwrap_or_else(|| panic!("no dog in {found:?}"))
    };
    let (a, b) = (dog(&whole), dog(&cropped));
    assert!((a.score - b.score).abs() < 0.05, "dog score {} in the crop against {}", b.score, a.score);
    for (x, y) in a.bbox.iter().zip(b.bbox) {
        assert!((x - y).abs() <= 6.0, "dog box {:?} in the crop against {:?}", b.bbox, a.bbox);
    }
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

/// The photo in `format`, converted by GStreamer (as a decoder or `videoconvert` would give it).
fn photo_as(format: gstreamer_video::VideoFormat) -> (gstreamer::Buffer, gstreamer_video::VideoInfo) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/images/dog.jpg");
    let img = image::open(&path).expect("../shared/images/dog.jpg").to_rgb8();
    let (w, h) = img.dimensions();
    vigil::ingest::init().unwrap();
    let rgb = gstreamer_video::VideoInfo::builder(gstreamer_video::VideoFormat::Rgb, w, h).build().unwrap();
    let mut buffer = gstreamer::Buffer::with_size(rgb.size()).unwrap();
    {
        let mut frame = gstreamer_video::VideoFrameRef::from_buffer_ref_writable(buffer.make_mut(), &rgb).unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data_mut(0).unwrap();
        for (dst, src) in data.chunks_mut(stride).zip(img.chunks(w as usize * 3)) {
            dst[..src.len()].copy_from_slice(src);
        }
    }
    let out = gstreamer_video::VideoInfo::builder(format, w, h).build().unwrap();
    let converter = gstreamer_video::VideoConverter::new(&rgb, &out, None).unwrap();
    let input = gstreamer_video::VideoFrame::from_buffer_readable(buffer, &rgb).unwrap();
    let mut output =
        gstreamer_video::VideoFrame::from_buffer_writable(gstreamer::Buffer::with_size(out.size()).unwrap(), &out)
            .unwrap();
    converter.frame(&input, &mut output);
    (output.into_buffer(), out)
}

#[test]
fn the_letterbox_reads_decoder_formats_as_the_same_picture() {
    use gstreamer_video::VideoFormat::{Bgr, I420, Nv12, Rgb};
    let d = detector();
    let (buffer, info) = photo_as(Rgb);
    let crops = [[0, 0, info.width(), info.height()], [101, 57, 500, 431]];
    for crop in crops {
        let want = d.letterbox(&buffer, &info, crop, Fit::Grid).unwrap();
        for format in [Bgr, I420, Nv12] {
            let (buffer, info) = photo_as(format);
            let got = d.letterbox(&buffer, &info, crop, Fit::Grid).unwrap();
            assert_eq!((got.size, got.scale), (want.size, want.scale));
            // YUV keeps chroma at half resolution and rounds each sample: a few levels apart at
            // edges, the same picture on average.
            let diff: Vec<f32> = got.tensor.iter().zip(&want.tensor).map(|(a, b)| (a - b).abs()).collect();
            let mean = diff.iter().sum::<f32>() / diff.len() as f32;
            let near = diff.iter().filter(|d| **d <= 12.0).count() as f32 / diff.len() as f32;
            assert!(
                mean < 2.5 && near > 0.98,
                "{format:?} crop {crop:?}: mean difference {mean:.2}, {near:.3} within 12"
            );
        }
    }
    // Padding is the model's grey, below the picture.
    let full = d.letterbox(&buffer, &info, crops[0], Fit::Grid).unwrap();
    assert_eq!(full.size, (416, 320));
    assert!(full.tensor[316 * 416..320 * 416].iter().all(|v| *v == 114.0));
}

/// The letterboxed picture is what OpenCV's `INTER_LINEAR` resize, the model's training
/// preprocessing, makes of the same pixels, run in the reference pipeline's own Python.
#[test]
fn the_letterbox_is_opencvs_resize() {
    let python = std::env::var("VIGIL_TEST_REFERENCE_PYTHON")
        .expect("VIGIL_TEST_REFERENCE_PYTHON names the reference's Python (scripts/test sets it)");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/images/dog.jpg");
    let rgb = image::open(&path).expect("../shared/images/dog.jpg").to_rgb8();
    let (w, h) = rgb.dimensions();
    let (buffer, info) = photo_as(gstreamer_video::VideoFormat::Rgb);
    let lb = detector().letterbox(&buffer, &info, [0, 0, w, h], Fit::Exact).unwrap();
    let (dw, dh) = ((w as f32 * lb.scale).round() as usize, (h as f32 * lb.scale).round() as usize);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("rgb.raw"), dir.path().join("bgr.raw"));
    std::fs::write(&input, rgb.as_raw()).unwrap();
    let script = format!(
        "import cv2, numpy as np\n\
         img = np.fromfile('{}', np.uint8).reshape({h}, {w}, 3)[:, :, ::-1]\n\
         cv2.resize(np.ascontiguousarray(img), ({dw}, {dh}), interpolation=cv2.INTER_LINEAR).tofile('{}')\n",
        input.display(),
        output.display()
    );
    let run = std::process::Command::new(&python).args(["-c", &script]).output().expect("run the reference's Python");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let cv = std::fs::read(&output).unwrap();
    assert_eq!(cv.len(), dw * dh * 3);
    let (cw, ch) = (lb.size.0 as usize, lb.size.1 as usize);
    let mut diffs = Vec::with_capacity(cv.len());
    for y in 0..dh {
        for x in 0..dw {
            for c in 0..3 {
                let ours = lb.tensor[c * cw * ch + y * cw + x];
                diffs.push((ours - cv[(y * dw + x) * 3 + c] as f32).abs());
            }
        }
    }
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    let worst = diffs.iter().copied().fold(0.0, f32::max);
    // OpenCV interpolates 8-bit images in fixed point; a level apart at most.
    assert!(mean < 0.25 && worst <= 1.0, "mean {mean:.3}, worst {worst} levels from cv2.resize");
}

/// Two requests queued at once, with two sessions free: each runs in its own call, side by side,
/// rather than both in one call while the other session waits (a batch costs each item about
/// what it costs alone on a CPU). The batch window would otherwise gather the second request
/// into the first call.
#[test]
fn a_free_session_takes_a_request_rather_than_it_joining_a_batch() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/yolox_nano_coco80.prepared.onnx");
    let inference = InferenceConfig { max_batch: 8, batch_window_ms: 50.0, ..Default::default() };
    let runtime = Runtime::load(&inference).expect("ONNX Runtime (run scripts/setup)");
    let sessions = (0..2).map(|_| runtime.session(&path, Workload::Frames).unwrap()).collect();
    let metrics = Arc::new(Metrics::new());
    let batcher = Batcher::spawn("yolox-nano", sessions, &inference, metrics.clone());
    assert!(batcher.dynamic_batch, "the prepared model takes batches");
    // Both session threads are waiting for work before anything is queued.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let shape = [3, 256, 416];
    let tickets: Vec<_> = (0..2).map(|_| batcher.submit(&shape, vec![114.0; 3 * 256 * 416]).unwrap()).collect();
    for t in tickets {
        // Anchors at strides 8, 16 and 32 over 256 × 416, each with 4 box terms, objectness and 80
        // classes.
        assert_eq!(t.wait().unwrap().shape, [32 * 52 + 16 * 26 + 8 * 13, 85]);
    }
    let batches = metrics.inference_batch.with_label_values(&["yolox-nano"]);
    assert_eq!((batches.get_sample_count(), batches.get_sample_sum() as u64), (2, 2), "two calls of one frame each");
}
