//! Plate reading on the real plate sets: the still-image CLI, its accuracy report, and plates
//! read from an RTSP camera end to end.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Redis, Vigil};
use gstreamer as gst;
use gstreamer::prelude::*;
use serde_json::Value;
use vigil::anpr::queue::{QueueError, ReadQueue};
use vigil::anpr::{PlateReader, Search};
use vigil::config::{InferenceConfig, ModelsConfig};
use vigil::events::{EventType, Store};
use vigil::inference::Runtime;
use vigil::metrics::Metrics;
use vigil::plate::Formats;
use vigil::sample::SampleServer;

/// The accuracy report keeps both of this machine's cores busy for minutes, and a live camera
/// that shares them skips reads it does not skip alone; so the live-camera tests and the report
/// take turns, while the light tests run beside them.
static CORES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// `vigil bench anpr --json` on a set, as one row.
fn bench(args: &[&str], set: &str) -> Value {
    let dir = plates(set);
    let mut all = vec!["bench", "anpr", "--json"];
    all.extend(args);
    all.push(dir.to_str().unwrap());
    let (ok, out, err) = vigil(&all);
    assert!(ok, "{err}");
    let row: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    println!("{} {args:?}: {row}", set);
    row
}

/// The accuracy report on the development sets, held to floors a few points under what it
/// measured when written (with O/0 and I/1 as one glyph: EU under `eu` 97.2 %, BR under `br`
/// 97.4 %, US with no format 87.6 %; 0.06–0.13 reads per image elsewhere than the annotated
/// plate, some of them other vehicles' real plates), so a regression fails here. The EU ground
/// truth spells seven plates' digit 0 as the letter O.
///
/// The US figure swings with the vehicle boxes the reader searches: moving every box edge in or
/// out by 1.5–3 px read 77.1–83.8 % when it measured 81.0 %, so its floor sits under that band.
///
/// A dedicated camera's search (the whole picture; no vehicle boxes) on the US set, whose plates
/// are small in wide pictures, is held the same way: 84.8 % when written, 79.0 % before a scene
/// with no sure plate was looked at again closer around its small plate-shaped lines.
///
/// And a region's preset may re-rank and fix confusions where its formats say which class
/// belongs, but never reject a plausible plate: on each set, the wrong region's preset reads no
/// worse than no preset by more than two points. (One test, so the US set's run with no format
/// serves both.)
#[test]
fn the_accuracy_report_holds_its_floors_and_a_wrong_preset_reads_no_worse_than_none() {
    let _cores = CORES.blocking_lock();
    // Nine runs, two at a time (a run leaves much of the machine idle between model calls).
    let runs: [(&[&str], &str); 9] = [
        (&["--format", "eu"], "openalpr-eu"),
        (&["--format", "us"], "openalpr-eu"),
        (&["--format", "br"], "openalpr-br"),
        (&["--format", "eu"], "openalpr-us-dev"),
        (&[], "openalpr-us-dev"),
        (&["--format", "eu"], "openalpr-br"),
        (&[], "openalpr-eu"),
        (&[], "openalpr-br"),
        (&["--dedicated"], "openalpr-us-dev"),
    ];
    let rows: Vec<Value> = std::thread::scope(|s| {
        let halves: Vec<_> = runs
            .chunks(5)
            .map(|half| s.spawn(move || half.iter().map(|(args, set)| bench(args, set)).collect::<Vec<_>>()))
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let row = |args: &[&str], set: &str| &rows[runs.iter().position(|r| r.0 == args && r.1 == set).unwrap()];
    let num = |row: &Value, key: &str| row[key].as_f64().unwrap_or_else(|| panic!("no {key}: {row}"));
    let (eu, br, us) =
        (row(&["--format", "eu"], "openalpr-eu"), row(&["--format", "br"], "openalpr-br"), row(&[], "openalpr-us-dev"));
    assert_eq!((num(eu, "images"), num(br, "images"), num(us, "images")), (108.0, 114.0, 105.0));
    let dedicated = row(&["--dedicated"], "openalpr-us-dev");
    for (row, folded, wrong) in [(eu, 95.0, 4.0), (br, 95.0, 3.0), (us, 78.0, 15.0), (dedicated, 82.0, 15.0)] {
        assert!(num(row, "folded_pct") >= folded, "{row}");
        assert!(num(row, "exact_pct") <= num(row, "folded_pct") && num(row, "top1_pct") <= num(row, "folded_pct"));
        assert!(num(row, "wrong_pct") <= wrong, "{row}");
        assert!(num(row, "elsewhere_per_image") <= 0.15, "text elsewhere taken for plates: {row}");
        // The machine's speed while the set ran: one raw call of each model the search used.
        let raw: Vec<&str> = row["raw"].as_array().unwrap().iter().map(|r| r["model"].as_str().unwrap()).collect();
        let used = if row == dedicated { 2 } else { 3 };
        assert_eq!(raw.len(), used, "{row}");
        assert!(row["raw"].as_array().unwrap().iter().all(|r| r["ms"].as_f64().unwrap() > 0.0), "{row}");
    }
    for (set, wrong) in [("openalpr-eu", "us"), ("openalpr-us-dev", "eu"), ("openalpr-br", "eu")] {
        let none = num(row(&[], set), "folded_pct");
        let preset = num(row(&["--format", wrong], set), "folded_pct");
        assert!(preset >= none - 2.0, "{set}: {preset} % under `{wrong}` against {none} % with no format");
    }
}

/// A camera's burnt-in clock (GStreamer's `clockoverlay`, date and time) on a plate photo is
/// never reported as a plate, and the plate still is.
#[test]
fn a_burnt_in_clock_is_never_a_plate() {
    vigil::ingest::init().unwrap();
    let (image, plate) = truth("openalpr-br").into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clock.jpg");
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! jpegdec ! videoconvert ! imagefreeze num-buffers=1 \
         ! clockoverlay time-format=\"%Y-%m-%d %H:%M:%S\" font-desc=\"Sans Bold 28\" halignment=right valignment=top \
         ! videoconvert ! jpegenc ! filesink location={}",
        image.display(),
        out.display()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg =
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos, gst::MessageType::Error]);
    assert!(matches!(msg.map(|m| m.type_()), Some(gst::MessageType::Eos)), "overlay failed");
    pipeline.set_state(gst::State::Null).unwrap();
    // Read as a Brazilian camera is set up (`--format br`). Without a format the recogniser
    // splits this plate's O between O and 0, so its confidence sits on the 0.6 bar (0.59–0.66
    // with the clock's JPEG noise) and the test would hinge on the time burnt in.
    for args in [vec!["anpr", "--json", "--format", "br"], vec!["anpr", "--json", "--format", "br", "--dedicated"]] {
        let mut args = args.clone();
        let path = out.display().to_string();
        args.push(&path);
        let (ok, stdout, err) = vigil(&args);
        assert!(ok, "{err}");
        let line: Value = serde_json::from_str(stdout.trim()).unwrap();
        let found: Vec<&str> =
            line["plates"].as_array().unwrap().iter().map(|p| p["plate"].as_str().unwrap()).collect();
        let glyphs = |t: &str| t.replace('O', "0").replace('I', "1");
        assert!(
            found.iter().any(|p| glyphs(p) == glyphs(&plate)),
            "{args:?}: the plate {plate} is not read: {found:?}"
        );
        for p in &found {
            let digits = p.chars().filter(char::is_ascii_digit).count();
            assert!(digits < 6 || p.chars().any(|c| c.is_ascii_uppercase()), "{args:?}: the clock read as {p}");
        }
        assert_eq!(found.len(), 1, "{args:?}: {found:?}");
    }
}

/// The shared plate-read queue: reads beyond its places are refused at once (a live camera skips
/// them), a submitter that waits always gets a place, and every read it took comes back the same
/// as reading the image directly.
#[test]
fn the_plate_read_queue_refuses_reads_when_full_and_returns_all_it_took() {
    let inference = InferenceConfig::default();
    let models = ModelsConfig { dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("models"), ..Default::default() };
    let runtime = Runtime::load(&inference).expect("ONNX Runtime (run scripts/setup)");
    let reader = Arc::new(PlateReader::load(&models, &runtime, &inference, Arc::new(Metrics::new())).expect("models"));
    let formats = Arc::new(Formats::parse(&["eu".to_string()]).unwrap());
    let (path, plate) = truth("openalpr-eu").into_iter().next().unwrap();
    let image = image::open(&path).unwrap().to_rgb8();
    let direct = reader.read(&image, None, Search::Scene, &formats).unwrap();
    assert!(direct.iter().any(|r| r.text.text == plate), "{plate} not read directly: {direct:?}");
    let queue = ReadQueue::spawn(reader);

    // Eight at once: two workers and two waiting places take at most four.
    let (mut taken, mut refused) = (Vec::new(), 0);
    for _ in 0..8 {
        match queue.submit(vec![image.clone()], Search::Scene, formats.clone(), false) {
            Ok(reply) => taken.push(reply),
            Err(QueueError::Full) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!((1..=4).contains(&taken.len()) && refused == 8 - taken.len(), "{} taken, {refused} refused", taken.len());
    // Waiting for a place: none refused, even with the queue still busy.
    for _ in 0..4 {
        taken.push(queue.submit(vec![image.clone()], Search::Scene, formats.clone(), true).expect("a place"));
    }
    for reply in taken {
        let reads = reply.recv_timeout(Duration::from_secs(60)).expect("every read taken comes back");
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].as_ref().unwrap(), &direct);
    }
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
            assert!(p["confidence"].as_f64().unwrap() >= 0.6, "{p}");
            assert_eq!(p["box"].as_array().unwrap().len(), 4);
            assert!(p["plate"].as_str().unwrap().chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        }
        right += usize::from(found.iter().any(|p| p["plate"] == plate.as_str()));
    }
    assert!(right + 1 >= picked.len(), "{right} of {}: {out}", picked.len());

    // A GPU provider asked of a library without it: the same reads on the CPU, and a warning.
    args.splice(1..1, ["--provider", "cuda"]);
    let (ok, on_cuda, err) = vigil(&args);
    assert!(ok, "{err}");
    if err.contains("no CUDA execution provider; falling back to CPU") {
        assert_eq!(on_cuda, out);
    } else {
        assert_eq!(on_cuda.lines().count(), picked.len(), "{err}");
    }

    let (ok, _, err) = vigil(&["anpr", "--json", "no-such-image.jpg"]);
    assert!(!ok);
    assert!(err.contains("no-such-image.jpg"), "{err}");
}

/// Plates two mechanisms lost, read now: a plain plate on a pale car, which the text detector
/// missed when fed the recogniser's normalisation instead of the ImageNet one it was trained
/// with, and vanity plates (letters only, digits only) on vehicles with no other serial in view.
/// (`DH7X317`, the other pale car, was read from the vehicle box of GStreamer's letterbox and is
/// not from the box of the one-pass letterbox, which matches OpenCV's resize to 0.2 levels: its
/// line is found or not with a pixel's shift of the vehicle box, so it cannot guard anything.)
#[test]
fn plain_plates_on_pale_cars_and_vanity_plates_are_read() {
    let cases = [
        ("openalpr-us-dev", "wts-lg-000113.jpg", "AG4V3U"),
        ("openalpr-eu", "eu2.jpg", "GWAGEN"),
        ("openalpr-eu", "test_049.jpg", "KMBORAK"),
        ("openalpr-us-dev", "wts-lg-000154.jpg", "1366026"),
    ];
    let paths: Vec<String> = cases.iter().map(|(set, file, _)| plates(set).join(file).display().to_string()).collect();
    let mut args = vec!["anpr", "--json"];
    args.extend(paths.iter().map(String::as_str));
    let (ok, out, err) = vigil(&args);
    assert!(ok, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), cases.len());
    for (line, (_, file, plate)) in lines.iter().zip(&cases) {
        let found: Vec<&str> = line["plates"].as_array().unwrap().iter().filter_map(|p| p["plate"].as_str()).collect();
        assert!(found.contains(plate), "{file}: {plate} not among {found:?}");
    }
}

/// Plates whose text the detector splits into pieces, read whole: `DH7 X317` around a state emblem
/// and `K17 9658` at its gap, whose maroon characters (two of them bold) were once painted over
/// as emblems. Each piece alone reads as a shorter plate or as none.
#[test]
fn a_plate_split_at_its_gap_is_read_whole() {
    let cases = [("wts-lg-000196.jpg", "DH7X317"), ("316b64c0-55bf-4079-a1c0-d93f461a576f.jpg", "K179658")];
    let paths: Vec<String> =
        cases.iter().map(|(file, _)| plates("openalpr-us-dev").join(file).display().to_string()).collect();
    let mut args = vec!["anpr", "--json"];
    args.extend(paths.iter().map(String::as_str));
    let (ok, out, err) = vigil(&args);
    assert!(ok, "{err}");
    for (line, (file, plate)) in out.lines().zip(&cases) {
        let line: Value = serde_json::from_str(line).unwrap();
        let found: Vec<&str> = line["plates"].as_array().unwrap().iter().filter_map(|p| p["plate"].as_str()).collect();
        assert_eq!(found.first(), Some(plate), "{file}: {found:?}");
    }
}

/// What one run of the plate video through a camera gave.
struct PlateRun {
    dir: tempfile::TempDir,
    picked: Vec<(PathBuf, String)>,
    anpr: Vec<vigil::events::Event>,
    /// Ids of the `anpr` events published on Redis.
    on_redis: std::collections::HashSet<i64>,
}

/// Tracks that end within the black between two plates, so each plate starts a track of its own.
const SHORT_TRACKS: &str = "min_hits = 2\nmax_age_secs = 0.5";

/// 20 different plate images of `set`, spread over it, played once over RTSP to a camera with
/// the given `[cameras.tracker]` and `[cameras.anpr]` settings (`vigil::sample::plate_video`:
/// each drives in and stands for 1.5 s, then 1.5 s of black). Mostly BR, so the stream is checked
/// on a set the still-image rules were not made on.
async fn plate_run(set: &str, tracker: &str, anpr: &str) -> PlateRun {
    let _cores = CORES.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    let picked: Vec<(PathBuf, String)> =
        truth(set).into_iter().filter(|(_, p)| seen.insert(p.clone())).step_by(5).take(20).collect();
    assert_eq!(picked.len(), 20);
    let video = dir.path().join("plates.mp4");
    let images: Vec<PathBuf> = picked.iter().map(|(p, _)| p.clone()).collect();
    let length = vigil::sample::plate_video(&images, vigil::sample::Arrival::Drive, &video).unwrap();

    let redis = Redis::start();
    let server = SampleServer::once(&video, "plates", 0).unwrap();
    let extra = format!(
        "detect_fps = 5\n[cameras.reconnect]\ninitial_secs = 30.0\nmax_secs = 30.0\n\
         [cameras.tracker]\n{tracker}\n[cameras.anpr]\nenabled = true\n{anpr}"
    );
    let (config, db) = common::one_camera(dir.path(), &redis.url(), "gate", &server.url(), &extra);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("events").await.unwrap();
    let vigil = Vigil::start(dir.path(), &config);
    vigil.wait_log("streaming", Duration::from_secs(30)).await;
    // The clip plays once in real time; then give the last reads time to land.
    tokio::time::sleep(length + Duration::from_secs(5)).await;
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));

    let store = Store::connect(&db).await.unwrap();
    let events = store.after(0, 100_000).await.unwrap();
    let anpr: Vec<_> = events.into_iter().filter(|e| e.event_type == EventType::Anpr).collect();
    for e in &anpr {
        let d = &e.event_data;
        for key in ["track_id", "plate", "confidence", "reads", "raw", "plate_box", "vehicle_box", "crop_path"] {
            assert!(!d[key].is_null(), "anpr event without {key}: {d}");
        }
        assert!(dir.path().join("snaps").join(d["crop_path"].as_str().unwrap()).is_file());
    }
    let mut on_redis = std::collections::HashSet::new();
    let mut messages = pubsub.on_message();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), futures_next(&mut messages)).await {
        let ev: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        if ev["event_type"] == "anpr" {
            on_redis.insert(ev["id"].as_i64().unwrap());
        }
    }
    PlateRun { dir, picked, anpr, on_redis }
}

impl PlateRun {
    /// Events per plate read, how many of the images' plates are among them (the ground truth
    /// spells some plates' digit 0 as the letter O, see the accuracy report), and how many events
    /// carry a plate no image shows.
    fn tally(&self) -> (HashMap<String, usize>, usize, usize) {
        let mut per_plate: HashMap<String, usize> = HashMap::new();
        for e in &self.anpr {
            *per_plate.entry(e.event_data["plate"].as_str().unwrap().to_string()).or_default() += 1;
        }
        let glyphs = |t: &str| t.replace('O', "0");
        let read: std::collections::HashSet<String> = per_plate.keys().map(|p| glyphs(p)).collect();
        let right = self.picked.iter().filter(|(_, p)| read.contains(&glyphs(p))).count();
        let wanted: std::collections::HashSet<String> = self.picked.iter().map(|(_, p)| glyphs(p)).collect();
        let wrong = per_plate.iter().filter(|(p, _)| !wanted.contains(&glyphs(p))).map(|(_, n)| n).sum();
        println!("{} anpr events, {right} of the 20 plates right, {wrong} wrong: {per_plate:?}", self.anpr.len());
        (per_plate, right, wrong)
    }

    /// Every saved anpr event went out on the channel (revisions again under the same id).
    fn assert_published(&self) {
        for e in &self.anpr {
            assert!(self.on_redis.contains(&e.id), "anpr event {} not published", e.id);
        }
    }
}

/// A dedicated ANPR camera: each plate is at most one `anpr` event (revisions keep its id), most
/// with the right plate, published on Redis with a plate crop. The run measured 19 of 20 right
/// and 1–2 wrong (OEL1145 read as DEL1145; `ACT5`, other text) when written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plates_from_an_rtsp_camera_become_one_anpr_event_each() {
    let run = plate_run("openalpr-br", SHORT_TRACKS, "mode = \"dedicated\"\nformats = [\"br\"]").await;
    let (per_plate, right, wrong) = run.tally();
    assert!(run.anpr.len() <= run.picked.len() + 1, "more events than plates: {per_plate:?}");
    assert!(run.picked.iter().all(|(_, p)| per_plate.get(p).copied().unwrap_or(0) <= 1), "{per_plate:?}");
    assert!(right >= 17, "only {right} of 20 plates read right: {per_plate:?}\n{}", vigil_log(&run.dir));
    assert!(wrong <= 3, "{wrong} wrong plates: {per_plate:?}");
    run.assert_published();
}

/// The default mode: plates are read inside vehicle tracks, one event per vehicle, and a plate on
/// the known list (one edit away here) carries its name. The run read 19 of 20 right, with 1–2
/// wrong (DEL1145 for OEL1145; `ACT5`), when written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plates_on_vehicle_tracks_are_read_and_known_plates_named() {
    let run = plate_run(
        "openalpr-br",
        SHORT_TRACKS,
        "formats = [\"br\"]\n\
         [[cameras.anpr.known]]\nplate = \"JQS5688\"\nname = \"resident\"",
    )
    .await;
    let (per_plate, right, wrong) = run.tally();
    assert!(run.picked.iter().all(|(_, p)| per_plate.get(p).copied().unwrap_or(0) <= 1), "{per_plate:?}");
    assert!(right >= 17, "only {right} of 20 plates read right: {per_plate:?}\n{}", vigil_log(&run.dir));
    assert!(wrong <= 3, "{wrong} wrong plates: {per_plate:?}");
    for e in &run.anpr {
        let d = &e.event_data;
        let [x1, y1, x2, y2] = [0, 1, 2, 3].map(|i| d["plate_box"][i].as_f64().unwrap());
        let [vx1, vy1, vx2, vy2] = [0, 1, 2, 3].map(|i| d["vehicle_box"][i].as_f64().unwrap());
        // Plates are searched inside the vehicle box, with a small margin.
        let (mx, my) = ((vx2 - vx1) * 0.1, (vy2 - vy1) * 0.1);
        assert!(x1 >= vx1 - mx && y1 >= vy1 - my && x2 <= vx2 + mx && y2 <= vy2 + my, "{d}");
        let known = d["plate"] == "JQS5683";
        assert_eq!(d["known"]["name"].as_str() == Some("resident"), known, "{d}");
    }
    assert!(per_plate.contains_key("JQS5683"), "the known plate was not read: {per_plate:?}");
    run.assert_published();
}

/// Vehicle mode on EU photos with the default tracker, which carries a car's track over the black
/// to the next car, and where one car often has two boxes (car and truck): no plate goes out as
/// two events. Before the change that lets such a track join the event another box has just
/// published, this run gave `RK248AH` and `RK019AF` two events each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_car_is_one_anpr_event_whichever_of_its_boxes_reads_it() {
    let run = plate_run("openalpr-eu", "", "formats = [\"eu\"]").await;
    let (per_plate, right, _) = run.tally();
    assert!(per_plate.values().all(|&n| n == 1), "a plate in two events: {per_plate:?}");
    assert!(right >= 17, "only {right} of 20 plates read right: {per_plate:?}\n{}", vigil_log(&run.dir));
    run.assert_published();
}

fn vigil_log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("vigil.log")).unwrap_or_default()
}

async fn futures_next<S: tokio_stream::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    tokio_stream::StreamExt::next(s).await
}

/// `vigil bench anpr --stream`: the images played to a live camera over RTSP, its events scored
/// next to the still-image rate of the same images. Six BR plates, dedicated mode.
#[test]
fn the_stream_report_scores_a_live_camera_against_stills() {
    let _cores = CORES.blocking_lock();
    let redis = Redis::start();
    let dir = plates("openalpr-br");
    let url = redis.url();
    let args =
        ["bench", "anpr", "--stream", "--dedicated", "--images", "6", "--json", "--format", "br", "--redis", &url];
    let mut all: Vec<&str> = args.to_vec();
    let path = dir.display().to_string();
    all.push(&path);
    let (ok, out, err) = vigil(&all);
    assert!(ok, "{err}");
    let row: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    println!("{row}");
    let num = |key: &str| row[key].as_f64().unwrap_or_else(|| panic!("no {key}: {row}"));
    assert_eq!((row["mode"].as_str(), num("images")), (Some("dedicated"), 6.0));
    assert!(num("still_pct") >= 80.0 && num("stream_pct") >= 80.0, "{row}");
    let read = (num("stream_pct") * 6.0 / 100.0).round();
    assert!(num("events") >= read && num("plate_reads") >= num("events"), "{row}");
    assert!(num("wrong") <= 1.0, "{row}");
}
