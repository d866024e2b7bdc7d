//! `vigil check-config`: errors name FILE:LINE:COL and the process exits non-zero.

use std::process::Command;

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cams.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil")).arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.success(), stderr.trim().to_string())
}

#[test]
fn each_config_error_names_file_line_and_column() {
    let cases = [
        ("[redis\nurl = 1\n", "FILE:1:7:"),
        ("[storage]\nsnapshot_dir = \"x\"\n", "FILE:2:1: unknown field `snapshot_dir`"),
        (
            "[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/1\"\n[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/2\"\n",
            "FILE:5:6: duplicate camera id `a`",
        ),
        ("[[cameras]]\nid = \"a\"\nurl = \"rtsp//u:pw@h\"\n", "FILE:3:7: bad URL"),
        ("[[cameras]]\nid = \"a\"\nurl = \"file:///nope/x.mp4\"\n", "FILE:3:7: file not found: /nope/x.mp4"),
        ("[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/1\"\ndecoder = \"gpu\"\n", "FILE:4:11: unknown decoder `gpu`"),
    ];
    for (text, expected) in cases {
        let (ok, stderr) = check(text);
        assert!(!ok, "accepted: {text}");
        assert!(stderr.starts_with(expected), "for {text:?}\n  got: {stderr}\n  want: {expected}");
        assert!(!stderr.contains("pw@"), "secret in error: {stderr}");
    }
}

#[test]
fn a_valid_config_passes() {
    let (ok, stderr) = check("[[cameras]]\nid = \"gate-1\"\nurl = \"rtsp://user:pass@10.0.0.5:554/stream1\"\n");
    assert!(ok, "{stderr}");
}

#[test]
fn the_example_configs_are_valid() {
    for example in [include_str!("../cameras.example.toml"), include_str!("../docker/cameras.docker.toml")] {
        let (ok, stderr) = check(example);
        assert!(ok, "{stderr}");
    }
}

/// `vigil run` on a config whose camera needs the detector; returns (success, stderr).
fn run_briefly(extra: &str, dir: &std::path::Path) -> (bool, String) {
    let config = dir.join("cams.toml");
    let video = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/media/road.mp4");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[[cameras]]\nid = \"a\"\nurl = \"file://{}\"\n",
            dir.join("e.db").display(),
            video.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil")).args(["run", "-c"]).arg(&config).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

fn models() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// `run_briefly` with a models directory whose detector file holds `onnx`.
fn run_with_detector(onnx: &[u8], dir: &std::path::Path) -> (bool, String) {
    let copy = dir.join("models");
    std::fs::create_dir(&copy).unwrap();
    for f in ["manifest.toml", "coco80_labels.txt"] {
        std::fs::copy(models().join(f), copy.join(f)).unwrap();
    }
    std::fs::write(copy.join("yolox_nano_coco80.prepared.onnx"), onnx).unwrap();
    run_briefly(&format!("[models]\ndir = \"{}\"", copy.display()), dir)
}

#[test]
fn a_missing_onnx_runtime_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = run_briefly("[inference]\nlibrary = \"/nonexistent/libonnxruntime.so.1.31.1\"", dir.path());
    assert!(!ok);
    assert!(stderr.contains("cannot load ONNX Runtime 1.31.1 from /nonexistent/libonnxruntime.so.1.31.1"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_truncated_model_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = std::fs::read(models().join("yolox_nano_coco80.prepared.onnx")).unwrap();
    let (ok, stderr) = run_with_detector(&onnx[..onnx.len() / 3], dir.path());
    assert!(!ok);
    assert!(
        stderr.contains("loading the object detector") && stderr.contains("yolox_nano_coco80.prepared.onnx"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_library_that_is_not_onnx_runtime_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let zlib = ["/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let (ok, stderr) = run_briefly(&format!("[inference]\nlibrary = \"{}\"", zlib.expect("zlib")), dir.path());
    assert!(!ok);
    assert!(stderr.contains("does not export `OrtGetApiBase`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_wrong_model_file_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A real ONNX model, but the plate recogniser, where the detector should be.
    let (ok, stderr) = run_with_detector(&std::fs::read(models().join("PP-OCRv6_rec_small.onnx")).unwrap(), dir.path());
    assert!(!ok);
    assert!(stderr.contains("not a YOLOX model for this manifest"), "{stderr}");
}

#[test]
fn an_older_onnx_runtime_is_one_clear_error() {
    let old =
        std::env::var("VIGIL_TEST_OLD_ORT").expect("VIGIL_TEST_OLD_ORT is not set: run the tests through scripts/test");
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = run_briefly(&format!("[inference]\nlibrary = \"{old}\""), dir.path());
    assert!(!ok);
    assert!(stderr.contains("expected version >= '1.31.x', but got '1.20.1'"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.contains("ONNX Runtime")).count(), 1, "one line: {stderr}");
}

#[test]
fn a_text_detector_without_its_normalisation_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(models().join("manifest.toml")).unwrap();
    let without: String = manifest.lines().filter(|l| !l.starts_with("normalise")).map(|l| format!("{l}\n")).collect();
    assert_ne!(without, manifest, "the shipped manifest gives the text detector its normalisation");
    std::fs::write(dir.path().join("manifest.toml"), without).unwrap();
    let image = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("media/plates/AYO9034.jpg");
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["anpr", "--dedicated", "--models"])
        .arg(dir.path())
        .arg(&image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("`ppocr-v4-det` needs `normalise`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
