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
fn the_example_config_is_valid() {
    let (ok, stderr) = check(include_str!("../cameras.example.toml"));
    assert!(ok, "{stderr}");
}
