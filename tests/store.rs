//! The event store on a real SQLite file: snapshots saved with the row, retention; and the
//! cameras saved by the API, on SQLite and PostgreSQL.

mod common;

use std::path::Path;

use chrono::{Duration, Utc};
use vigil::events::{EventType, NewEvent, Store, retention};

fn event(camera: &str, age_days: i64) -> NewEvent {
    NewEvent {
        key: None,
        event_type: EventType::Motion,
        camera_id: camera.into(),
        timestamp: Utc::now() - Duration::days(age_days),
        frame_number: Some(7),
        data: serde_json::json!({"phase": "start"}),
        snapshot: None,
        crop: None,
    }
}

/// Save a motion event `age_days` old with a snapshot and a crop; its id.
async fn save(store: &Store, dir: &Path, age_days: i64, publish: bool) -> i64 {
    let (ev, err) =
        store.save(&event("gate-1", age_days), Some((b"\xff\xd8jpeg", Some(b"\xff\xd8crop"))), dir).await.unwrap();
    assert!(err.is_none());
    assert!(ev.event_data["crop_path"].is_string());
    if publish {
        store.mark_published(&[(ev.id, ev.revision)]).await.unwrap();
    }
    ev.id
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn retention_frees_the_disk_and_leaves_files_and_rows_in_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("e.db").display())).await.unwrap();
    let metrics = vigil::metrics::Metrics::new();
    let snaps = dir.path().join("snaps");
    let old = save(&store, &snaps, 40, true).await;
    let old_unpublished = save(&store, &snaps, 41, false).await;
    let recent = save(&store, &snaps, 1, true).await;
    let lost_file = save(&store, &snaps, 0, true).await;
    let old_ev = store.get(old).await.unwrap().unwrap();
    let old_day = snaps.join(old_ev.snapshot_path.as_ref().unwrap()).parent().unwrap().to_path_buf();
    // A file whose row is gone (a crash between the two), a write's staged file never
    // placed, and a row whose file was deleted by hand.
    let recent_ev = store.get(recent).await.unwrap().unwrap();
    let recent_day = snaps.join(recent_ev.snapshot_path.as_ref().unwrap()).parent().unwrap().to_path_buf();
    std::fs::write(recent_day.join("999999.jpg"), b"orphan").unwrap();
    std::fs::write(recent_day.join(".123-4.jpg.tmp"), b"staged").unwrap();
    std::fs::write(recent_day.join("notes.txt"), b"not ours").unwrap();
    let lost = store.get(lost_file).await.unwrap().unwrap();
    std::fs::remove_file(snaps.join(lost.snapshot_path.as_ref().unwrap())).unwrap();

    let policy =
        retention::Policy { snapshots_dir: snaps.clone(), days: 30, min_free: 0, settle: std::time::Duration::ZERO };
    let swept = retention::sweep(&store, &policy, &metrics).await.unwrap();
    println!("{swept:?}");
    assert_eq!((swept.events, swept.files), (2, 4), "old events go, published or not, with snapshot and crop");
    assert!(store.get(old).await.unwrap().is_none() && store.get(old_unpublished).await.unwrap().is_none());
    assert!(!old_day.exists(), "the emptied day folder goes");
    assert_eq!(metrics.retention_deleted_count("age"), 2);
    assert!(!recent_day.join("999999.jpg").exists() && !recent_day.join(".123-4.jpg.tmp").exists());
    assert!(recent_day.join("notes.txt").exists(), "files that are not snapshots are left alone");
    let lost = store.get(lost_file).await.unwrap().unwrap();
    assert_eq!((lost.snapshot_path, lost.event_data.get("crop_path")), (None, None), "no row names a missing file");

    // Agreement, both ways.
    let rows = store.after(0, 100).await.unwrap();
    let named: Vec<String> = rows
        .iter()
        .flat_map(|e| [e.snapshot_path.clone(), e.event_data["crop_path"].as_str().map(String::from)])
        .flatten()
        .collect();
    let mut on_disk = files_under(&snaps);
    on_disk.retain(|f| !f.ends_with("notes.txt"));
    assert!(named.iter().all(|n| snaps.join(n).is_file()), "a row names a missing file: {named:?}");
    assert!(on_disk.iter().all(|f| named.contains(f)), "a file without a row: {on_disk:?} vs {named:?}");
    assert_eq!(on_disk.len(), 2);

    // The disk guard: asked for more free space than the disk has, it deletes the oldest
    // events until none are left, and says so.
    let free = {
        let s = rustix::fs::statvfs(dir.path()).unwrap();
        s.f_bavail * s.f_frsize
    };
    let greedy = retention::Policy { min_free: free + (1 << 40), ..policy };
    assert_eq!(retention::guard_disk(&store, &greedy, &metrics).await.unwrap(), 2);
    assert!(store.after(0, 100).await.unwrap().is_empty());
    assert_eq!(metrics.retention_deleted_count("disk"), 2);
    assert!(metrics.disk_free_bytes.get() > 0);
    retention::sweep(&store, &greedy, &metrics).await.unwrap();
    assert_eq!(
        files_under(&snaps),
        vec![recent_day.join("notes.txt").strip_prefix(&snaps).unwrap().to_string_lossy().to_string()]
    );
}

#[tokio::test]
async fn an_unwritable_snapshot_dir_still_saves_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("e.db").display())).await.unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"file").unwrap();
    let (ev, err) = store.save(&event("gate-1", 0), Some((b"jpeg", None)), &blocker).await.unwrap();
    assert!(err.is_some());
    assert_eq!(store.get(ev.id).await.unwrap().unwrap().snapshot_path, None);
}

/// A plate vote that gets better: the recorder rewrites the row under the same id (plate column
/// included), marks it unpublished again, and tells the publisher to go through the outbox.
#[tokio::test]
async fn a_keyed_event_is_revised_in_place_and_goes_out_again() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use vigil::metrics::Metrics;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("e.db").display())).await.unwrap();
    let (recorder, mut handed) = common::recorder(&store, dir.path(), Arc::new(Metrics::new()));
    let lagged = recorder.lagged.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(recorder.run(rx, Default::default()));
    let plate = |text: &str, key: &str| NewEvent {
        key: Some(key.into()),
        event_type: EventType::Anpr,
        data: serde_json::json!({"plate": text, "track_id": 1}),
        ..event("gate-1", 0)
    };
    tx.send(plate("AB123CO", "anpr:gate-1:1")).await.unwrap();
    let first = handed.recv().await.unwrap();
    store.mark_published(&[(first.id, first.revision)]).await.unwrap();
    tx.send(plate("AB123CD", "anpr:gate-1:1")).await.unwrap();
    tx.send(plate("XY987ZZ", "anpr:gate-1:2")).await.unwrap();
    drop(tx);
    task.await.unwrap();

    let rows = store.after(0, 10).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0].id, first.id);
    assert_eq!(rows[0].event_data["plate"], "AB123CD");
    assert_eq!(rows[0].created_at, first.created_at);
    assert_eq!((first.revision, rows[0].revision, rows[1].revision), (0, 1, 0));
    let unpublished: Vec<i64> = store.unpublished(10).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(unpublished, vec![rows[0].id, rows[1].id], "the revision goes out again");
    // Marking the revision that was sent before leaves the newer one unpublished.
    store.mark_published(&[(first.id, 0)]).await.unwrap();
    assert_eq!(store.unpublished(10).await.unwrap().len(), 2, "a stale revision's mark is ignored");
    store.mark_published(&[(first.id, 1)]).await.unwrap();
    assert_eq!(store.unpublished(10).await.unwrap().len(), 1);
    // Readers that follow the change sequence see the revision again, after the first read.
    let changed: Vec<(i64, i64)> =
        store.changed_after(first.seq, 10).await.unwrap().iter().map(|e| (e.id, e.revision)).collect();
    assert_eq!(changed, vec![(first.id, 1), (rows[1].id, 0)]);
    assert!(lagged.load(Ordering::Acquire), "revisions take the outbox path");
    let q = vigil::events::EventQuery {
        plate: Some(vigil::events::PlateMatch::Exact("AB123CD".into())),
        ..vigil::events::EventQuery::default()
    };
    assert_eq!(store.list(&q).await.unwrap().len(), 1, "the plate column follows the revision");
}

/// An event PostgreSQL refuses for good (a NUL byte, which no text column may hold) is set
/// aside in the journal directory, counted, and does not hold up the events behind it, which a
/// database that is merely down would.
#[tokio::test]
async fn an_event_the_database_refuses_is_set_aside_and_the_rest_are_written() {
    use std::sync::Arc;
    use vigil::metrics::Metrics;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&common::postgres_url()).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let (recorder, _handed) = common::recorder(&store, dir.path(), metrics.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(recorder.run(rx, Default::default()));
    let camera = format!("refused-{}", std::process::id());
    let started = std::time::Instant::now();
    tx.send(event(&camera, 0)).await.unwrap();
    // Two refused events of one frame (the same camera and time) are both kept.
    let refused = || NewEvent { camera_id: format!("{camera}\0"), ..event(&camera, 0) };
    let first = refused();
    let at = first.timestamp;
    tx.send(first).await.unwrap();
    tx.send(NewEvent { timestamp: at, ..refused() }).await.unwrap();
    tx.send(event(&camera, 0)).await.unwrap();
    drop(tx);
    // A refusal treated as an outage would retry the event forever, and the recorder never end.
    tokio::time::timeout(std::time::Duration::from_secs(10), task).await.expect("the recorder was held up").unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "held up: {:?}", started.elapsed());

    let q = vigil::events::EventQuery { camera: Some(camera.clone()), ..Default::default() };
    assert_eq!(store.list(&q).await.unwrap().len(), 2, "the events either side were written");
    assert_eq!(metrics.events_rejected("motion"), 2);
    let aside: Vec<_> =
        std::fs::read_dir(dir.path().join("journal/rejected")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(aside.len(), 2, "{aside:?}");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&aside[0]).unwrap()).unwrap();
    assert_eq!(record["event"]["camera_id"], format!("{camera}\0"));
    assert_eq!(record["event"]["data"]["phase"], "start");
    assert!(record["reason"].as_str().unwrap().contains("0x00"), "{record}");
}

async fn saved_cameras_round_trip(store: &Store, id: &str) {
    let _ = store.forget_camera(id).await;
    assert!(!store.update_camera(id, r#"{"id": "none"}"#).await.unwrap(), "an update of a camera never added");
    assert!(store.add_camera(id, r#"{"id": "first"}"#).await.unwrap());
    assert!(!store.add_camera(id, r#"{"id": "clash"}"#).await.unwrap(), "a second add of the same id");
    assert!(store.update_camera(id, r#"{"id": "second"}"#).await.unwrap());
    let mine = |all: Vec<(String, String)>| all.into_iter().filter(|(i, _)| i == id).collect::<Vec<_>>();
    assert_eq!(mine(store.saved_cameras().await.unwrap()), [(id.to_string(), r#"{"id": "second"}"#.to_string())]);
    store.forget_camera(id).await.unwrap();
    assert!(mine(store.saved_cameras().await.unwrap()).is_empty());
}

#[tokio::test]
async fn api_cameras_are_saved_replaced_and_forgotten_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect(&format!("sqlite://{}", dir.path().join("e.db").display())).await.unwrap();
    saved_cameras_round_trip(&sqlite, "cam").await;
    let pg = Store::connect(&common::postgres_url()).await.unwrap();
    saved_cameras_round_trip(&pg, &format!("cam-{}", std::process::id())).await;
}

/// A real GStreamer I420 frame of `w`×`h` with a gradient, so it compresses like an image.
fn frame(w: u32, h: u32) -> vigil::frame::Frame {
    use gstreamer_video as gst_video;
    vigil::ingest::init().unwrap();
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, w, h).build().unwrap();
    let pixels: Vec<u8> = (0..info.size()).map(|i| (i * 7 % 251) as u8).collect();
    vigil::frame::Frame {
        camera: "burst".into(),
        seq: 0,
        pts: None,
        wall: Utc::now(),
        info: std::sync::Arc::new(info),
        buffer: gstreamer::Buffer::from_mut_slice(pixels),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_encodes_ahead_but_saves_and_publishes_in_arrival_order() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("e.db").display())).await.unwrap();
    let (events, rx) = tokio::sync::mpsc::channel(64);
    let (recorder, mut published) = common::recorder(&store, dir.path(), Arc::new(vigil::metrics::Metrics::new()));
    // Large snapshots (with a crop) between small ones and none: encoded at once, the small ones
    // finish first.
    let sizes = [Some((1920, 1080)), None, Some((64, 48)), Some((1920, 1080)), Some((64, 48)), None];
    for (n, size) in sizes.iter().cycle().take(12).enumerate() {
        let mut ev = event("burst", 0);
        ev.data = serde_json::json!({"phase": "start", "n": n});
        ev.snapshot = size.map(|(w, h)| frame(w, h));
        ev.crop = size.filter(|s| s.0 > 64).map(|_| [100, 100, 400, 300]);
        events.send(ev).await.unwrap();
    }
    drop(events);
    tokio::time::timeout(std::time::Duration::from_secs(60), recorder.run(rx, Default::default()))
        .await
        .expect("recorder finishes");

    let mut order = Vec::new();
    while let Ok(ev) = published.try_recv() {
        order.push((ev.id, ev.event_data["n"].as_u64().unwrap()));
    }
    assert_eq!(order.len(), 12, "every event handed to the publisher: {order:?}");
    assert!(order.windows(2).all(|p| p[0].0 < p[1].0 && p[0].1 + 1 == p[1].1), "ids follow arrival: {order:?}");
    for (id, n) in order {
        let ev = store.get(id).await.unwrap().expect("saved");
        let size = sizes[n as usize % sizes.len()];
        assert_eq!(ev.snapshot_path.is_some(), size.is_some(), "event {n}");
        if let (Some(rel), Some((w, h))) = (ev.snapshot_path, size) {
            let jpeg = image::open(dir.path().join("snaps").join(&rel)).expect("a JPEG");
            assert_eq!((jpeg.width(), jpeg.height()), (w, h), "event {n}");
            if w > 64 {
                let crop = image::open(dir.path().join("snaps").join(rel.replace(".jpg", "-crop.jpg"))).unwrap();
                assert_eq!((crop.width(), crop.height()), (300, 200), "event {n} crop");
            }
        }
    }
}

/// Follow `camera`'s events by id, as a keyset-paging client or `vigil replay --after-id` does,
/// until `done` and one more empty page; every id seen.
async fn follow(store: &Store, camera: &str, done: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Vec<i64> {
    let mut seen = Vec::new();
    loop {
        let finished = done.load(std::sync::atomic::Ordering::Acquire);
        let q = vigil::events::EventQuery {
            camera: Some(camera.into()),
            after_id: seen.last().copied(),
            newest_first: false,
            limit: 50,
            ..Default::default()
        };
        let page = store.list(&q).await.unwrap();
        if page.is_empty() && finished {
            return seen;
        }
        seen.extend(page.iter().map(|e| e.id));
        if page.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_reader_never_skips_a_row_that_commits_late() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let camera = format!("cursor-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let reader = Store::connect(&common::postgres_url()).await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let following = tokio::spawn(follow_both(reader.clone(), camera.clone(), done.clone()));
    // Three writers on pools of their own, as three processes would be, each saving with a
    // snapshot (file I/O inside the write transaction) as fast as it can.
    let mut writers = Vec::new();
    for w in 0..3 {
        let store = Store::connect(&common::postgres_url()).await.unwrap();
        let (camera, snaps) = (camera.clone(), dir.path().join(format!("w{w}")));
        writers.push(tokio::spawn(async move {
            for _ in 0..150 {
                let jpeg = vec![0xffu8; 20_000 + w * 7_000];
                store.save(&event(&camera, 0), Some((&jpeg, None)), &snaps).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::Release);
    let (by_id, by_seq) = following.await.unwrap();
    let q = vigil::events::EventQuery {
        camera: Some(camera.clone()),
        newest_first: false,
        limit: 1000,
        ..Default::default()
    };
    let all: Vec<i64> = reader.list(&q).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(all.len(), 450);
    let missed = |seen: &[i64]| all.iter().filter(|id| !seen.contains(id)).count();
    println!(
        "followed by id: {} of 450 ({} missed); by change: {} ({} missed)",
        by_id.len(),
        missed(&by_id),
        by_seq.len(),
        missed(&by_seq)
    );
    assert_eq!(by_id, all, "an after_id reader got every row, in id order, once");
    assert_eq!(by_seq.len(), 450, "a change-sequence reader got every row once");
    assert_eq!(missed(&by_seq), 0);
}

/// Follow by id and by change sequence at once.
async fn follow_both(
    store: Store,
    camera: String,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<i64>, Vec<i64>) {
    let by_seq = {
        let (store, camera, done) = (store.clone(), camera.clone(), done.clone());
        tokio::spawn(async move {
            let (mut seen, mut cursor) = (Vec::new(), 0);
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                let page = store.changed_after(cursor, 50).await.unwrap();
                if page.is_empty() && finished {
                    return seen;
                }
                for e in &page {
                    cursor = e.seq;
                    if e.camera_id == camera {
                        seen.push(e.id);
                    }
                }
                if page.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
        })
    };
    let by_id = follow(&store, &camera, done).await;
    (by_id, by_seq.await.unwrap())
}
