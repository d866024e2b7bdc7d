//! `vigil bench pipeline`: the raw limit is the machine's best, and the plain Python reference
//! (`../shared/reference`, run by the Python scripts/test installs its packages for) runs beside
//! vigil on the same clip.

mod common;

use std::process::{Command, Output};

use common::{Redis, media};
use serde_json::Value;

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("VIGIL_REFERENCE_PYTHON")
        .output()
        .unwrap()
}

#[test]
fn the_pipeline_bench_runs_the_reference_beside_vigil_against_the_best_limit() {
    let python = std::env::var("VIGIL_TEST_REFERENCE_PYTHON")
        .expect("VIGIL_TEST_REFERENCE_PYTHON names the reference's Python (scripts/test sets it)");
    let redis = Redis::start();
    let video = media("car-detection.mp4");
    let out = vigil(&[
        "bench",
        "pipeline",
        "--video",
        video.to_str().unwrap(),
        "--cameras",
        "1",
        "--stages",
        "detect",
        "--seconds",
        "3",
        "--warmup",
        "0.5",
        "--json",
        "--redis",
        &redis.url(),
        "--reference",
        &python,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("{report:#}");

    // The limit is the best of the sweep at each caller count, and names its setting; the
    // pipeline's own setting is one of those swept, so it can never beat the limit.
    let (best, own) =
        (report["limits"]["best"].as_array().unwrap(), report["limits"]["configured"].as_array().unwrap());
    let callers: Vec<u64> = best.iter().map(|s| s["callers"].as_u64().unwrap()).collect();
    assert_eq!(callers, [1, 2, 4, 8]);
    assert_eq!(own.len(), 4, "{own:?}");
    for (b, o) in best.iter().zip(own) {
        assert!(b["threads"].as_u64().unwrap() >= 1 && b["spinning"].is_boolean(), "{b}");
        let (fps, model_ms, call_ms) =
            (b["fps"].as_f64().unwrap(), b["model_ms"].as_f64().unwrap(), b["call_ms"].as_f64().unwrap());
        assert!(fps > 0.0 && model_ms > 0.0, "{b}");
        // With several callers, calls overlap and share batches, so the model's time per frame
        // is at most a whole call's share.
        assert!(model_ms <= call_ms * b["callers"].as_f64().unwrap() * 1.01, "{b}");
        assert!(o["fps"].as_f64().unwrap() <= fps, "own setting {o} beat the best {b}");
    }

    // The reference really ran the clip: at detect_fps 5 it runs its detector on about 31 % of
    // car-detection's 12.5 fps frames, only where there is motion (at most 40 % by schedule).
    let row = &report["reference"][0];
    assert_eq!((row["cameras"].as_u64(), row["rounds"].as_u64()), (Some(1), Some(1)), "{row}");
    let (mine, theirs) = (row["vigil_fps"].as_f64().unwrap(), row["reference_fps"].as_f64().unwrap());
    assert!(mine > 0.0 && theirs > 0.0, "{row}");
    assert!((row["ratio"].as_f64().unwrap() - mine / theirs).abs() < 1e-9, "{row}");
    let share = row["reference_detected_share"].as_f64().unwrap();
    assert!((0.2..=0.4).contains(&share), "reference detection share {share}");
    assert!(row["vigil_detected_share"].as_f64().unwrap() <= 0.4, "{row}");
}

#[test]
fn a_python_without_the_reference_packages_is_refused_before_anything_runs() {
    let out = vigil(&["bench", "pipeline", "--reference", "/bin/false", "--cameras", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("reference python /bin/false lacks its packages"), "{stderr}");
    assert!(!stderr.contains("measuring"), "it measured before refusing: {stderr}");
}
