//! The event store on a real SQLite file: snapshots saved with the row, retention.

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

async fn save(store: &Store, dir: &Path, age_days: i64, publish: bool) -> i64 {
    let (ev, err) = store.save(&event("gate-1", age_days), Some((b"\xff\xd8jpeg", None)), dir).await.unwrap();
    assert!(err.is_none());
    if publish {
        store.mark_published(&[ev.id]).await.unwrap();
    }
    ev.id
}

#[tokio::test]
async fn retention_deletes_old_published_events_and_their_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("e.db").display())).await.unwrap();
    let snaps = dir.path().join("snaps");
    let old = save(&store, &snaps, 40, true).await;
    let old_unpublished = save(&store, &snaps, 40, false).await;
    let recent = save(&store, &snaps, 1, true).await;
    let old_path = snaps.join(store.get(old).await.unwrap().unwrap().snapshot_path.unwrap());
    assert!(old_path.is_file());

    assert_eq!(retention::sweep(&store, &snaps, 30).await.unwrap(), 1);
    assert!(store.get(old).await.unwrap().is_none());
    assert!(!old_path.exists(), "the snapshot goes with the row");
    assert!(store.get(old_unpublished).await.unwrap().is_some(), "the outbox is never pruned");
    assert!(store.get(recent).await.unwrap().is_some());
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
