//! Plate reading on the real plate sets: the still-image CLI, its accuracy report, and plates
//! read from an RTSP camera end to end.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Redis, Vigil};
use gstreamer as gst;
use gstreamer::prelude::*;
use serde_json::Value;
use vigil::events::{EventType, Store};
use vigil::sample::SampleServer;

fn plates(set: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/plates").join(set)
}

fn vigil(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_vigil")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `(image, plate)` from each ground-truth file of a set, in name order.
fn truth(set: &str) -> Vec<(PathBuf, String)> {
    let dir = plates(set);
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            if path.extension()? != "txt" {
                return None;
            }
            let text = std::fs::read_to_string(&path).ok()?;
            let fields: Vec<&str> = text.trim().split('\t').collect();
            Some((dir.join(fields[0]), fields[5].to_string()))
        })
        .collect();
    out.sort();
    out
}

/// The accuracy report on both development sets, held to floors a few points under what it
/// measured when written (EU 87.0 % exact, 96.3 % with O and 0 as one glyph; BR 97.4 %), so a
/// regression fails here. The EU ground truth spells seven plates' digit 0 as the letter O.
#[test]
fn the_accuracy_report_holds_its_floors() {
    let eu = plates("openalpr-eu");
    let br = plates("openalpr-br");
    let mut rows = HashMap::new();
    for (format, dir) in [("eu", &eu), ("br", &br)] {
        let (ok, out, err) = vigil(&["bench", "anpr", "--json", "--format", format, dir.to_str().unwrap()]);
        assert!(ok, "{err}");
        let row: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        println!("{row}");
        rows.insert(format, row);
    }
    let num = |set: &str, key: &str| rows[set][key].as_f64().unwrap();
    assert_eq!(num("eu", "images"), 108.0);
    assert_eq!(num("br", "images"), 114.0);
    assert!(num("eu", "exact_pct") >= 84.0, "{}", rows["eu"]);
    assert!(num("eu", "exact_o0_pct") >= 93.0, "{}", rows["eu"]);
    assert!(num("br", "exact_pct") >= 94.0, "{}", rows["br"]);
    assert!(num("br", "false_pct") <= 4.0, "{}", rows["br"]);
}

/// `vigil anpr --json`: one line per image in the documented shape, plates best first.
#[test]
fn the_cli_prints_one_json_line_per_image() {
    let picked: Vec<(PathBuf, String)> = truth("openalpr-br").into_iter().step_by(23).collect();
    let mut args = vec!["anpr", "--json", "--format", "br"];
    let paths: Vec<String> = picked.iter().map(|(p, _)| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let (ok, out, err) = vigil(&args);
    assert!(ok, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), picked.len());
    let mut right = 0;
    for (line, (path, plate)) in lines.iter().zip(&picked) {
        assert_eq!(line["file"], path.display().to_string());
        let found = line["plates"].as_array().unwrap();
        for p in found {
            assert!(p["confidence"].as_f64().unwrap() >= 0.8, "{p}");
            assert_eq!(p["box"].as_array().unwrap().len(), 4);
            assert!(p["plate"].as_str().unwrap().chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        }
        right += usize::from(found.iter().any(|p| p["plate"] == plate.as_str()));
    }
    assert!(right + 1 >= picked.len(), "{right} of {}: {out}", picked.len());

    let (ok, _, err) = vigil(&["anpr", "--json", "no-such-image.jpg"]);
    assert!(!ok);
    assert!(err.contains("no-such-image.jpg"), "{err}");
}

/// Images held `HOLD` frames each, with `GAP` black frames between (so one vehicle's track ends
/// before the next appears), 1280×720 at 10 fps, H.264 in MP4.
const HOLD: usize = 15;
const GAP: usize = 15;

fn plate_video(images: &[PathBuf], out: &Path) {
    vigil::ingest::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width=1280,height=720,framerate=10/1 \
         ! videoconvert ! x264enc pass=quant quantizer=20 speed-preset=veryfast key-int-max=10 \
         ! video/x-h264,profile=high ! h264parse ! mp4mux ! filesink location={}",
        out.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline.by_name("src").unwrap().downcast::<gstreamer_app::AppSrc>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let black = image::RgbImage::new(1280, 720);
    let mut n = 0u64;
    for path in images {
        let img = image::open(path).unwrap().to_rgb8();
        let scale = (1280.0 / img.width() as f32).min(720.0 / img.height() as f32);
        let (w, h) = ((img.width() as f32 * scale) as u32, (img.height() as f32 * scale) as u32);
        let resized = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
        let mut canvas = black.clone();
        image::imageops::overlay(&mut canvas, &resized, ((1280 - w) / 2) as i64, ((720 - h) / 2) as i64);
        for frame in std::iter::repeat_n(&canvas, HOLD).chain(std::iter::repeat_n(&black, GAP)) {
            let mut buffer = gst::Buffer::from_slice(frame.as_raw().clone());
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(n * 100));
            b.set_duration(gst::ClockTime::from_mseconds(100));
            src.push_buffer(buffer).unwrap();
            n += 1;
        }
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let msg =
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(120), &[gst::MessageType::Eos, gst::MessageType::Error]);
    assert!(matches!(msg.map(|m| m.type_()), Some(gst::MessageType::Eos)), "encoding failed");
    pipeline.set_state(gst::State::Null).unwrap();
}

/// 20 EU plate images as a dedicated ANPR camera over RTSP: each image is at most one `anpr`
/// event (revisions keep its id), most with the right plate, published on Redis with a plate crop.
/// Still-image accuracy on these 20 (O and 0 as one glyph) predicts about 17.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plates_from_an_rtsp_camera_become_one_anpr_event_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    let picked: Vec<(PathBuf, String)> =
        truth("openalpr-eu").into_iter().filter(|(_, p)| seen.insert(p.clone())).step_by(4).take(20).collect();
    assert_eq!(picked.len(), 20);
    let video = dir.path().join("plates.mp4");
    let images: Vec<PathBuf> = picked.iter().map(|(p, _)| p.clone()).collect();
    plate_video(&images, &video);

    let redis = Redis::start();
    let server = SampleServer::once(&video, "plates", 0).unwrap();
    let extra = "detect_fps = 5\n[cameras.reconnect]\ninitial_secs = 30.0\nmax_secs = 30.0\n\
                 [cameras.tracker]\nmin_hits = 2\nmax_age_secs = 0.5\n\
                 [cameras.anpr]\nenabled = true\nmode = \"dedicated\"\nformats = [\"eu\"]\nmax_reads = 3";
    let (config, db) = common::one_camera(dir.path(), &redis.url(), "gate", &server.url(), extra);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("events").await.unwrap();
    let vigil = Vigil::start(dir.path(), &config);
    vigil.wait_log("streaming", Duration::from_secs(30)).await;
    // The clip plays once in real time; then give the last reads time to land.
    let length = Duration::from_millis((picked.len() * (HOLD + GAP) * 100) as u64);
    tokio::time::sleep(length + Duration::from_secs(5)).await;
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));

    let store = Store::connect(&db).await.unwrap();
    let events = store.after(0, 100_000).await.unwrap();
    let anpr: Vec<_> = events.iter().filter(|e| e.event_type == EventType::Anpr).collect();
    let mut per_plate: HashMap<&str, usize> = HashMap::new();
    for e in &anpr {
        let d = &e.event_data;
        for key in ["track_id", "plate", "confidence", "reads", "raw", "plate_box", "vehicle_box", "crop_path"] {
            assert!(!d[key].is_null(), "anpr event without {key}: {d}");
        }
        assert!(dir.path().join("snaps").join(d["crop_path"].as_str().unwrap()).is_file());
        *per_plate.entry(d["plate"].as_str().unwrap()).or_default() += 1;
    }
    // The ground truth spells some plates' digit 0 as the letter O (see the accuracy report).
    let glyphs = |t: &str| t.replace('O', "0");
    let read: std::collections::HashSet<String> = per_plate.keys().map(|p| glyphs(p)).collect();
    let right = picked.iter().filter(|(_, p)| read.contains(&glyphs(p))).count();
    let wanted: Vec<&str> = picked.iter().map(|(_, p)| p.as_str()).collect();
    println!(
        "{} anpr events for {} images, {right} with the right plate: {per_plate:?}; wanted {wanted:?}",
        anpr.len(),
        picked.len()
    );
    assert!(anpr.len() <= picked.len(), "an image gave more than one event: {per_plate:?}");
    assert!(picked.iter().all(|(_, p)| per_plate.get(p.as_str()).copied().unwrap_or(0) <= 1), "{per_plate:?}");
    assert!(right >= 13, "only {right} of {} plates read right: {per_plate:?}\n{}", picked.len(), vigil_log(&dir));

    // Every saved anpr event went out on the channel (revisions again under the same id).
    let mut on_redis = std::collections::HashSet::new();
    let mut messages = pubsub.on_message();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), futures_next(&mut messages)).await {
        let ev: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        if ev["event_type"] == "anpr" {
            on_redis.insert(ev["id"].as_i64().unwrap());
        }
    }
    for e in &anpr {
        assert!(on_redis.contains(&e.id), "anpr event {} not published", e.id);
    }
}

fn vigil_log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("vigil.log")).unwrap_or_default()
}

async fn futures_next<S: tokio_stream::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    tokio_stream::StreamExt::next(s).await
}
