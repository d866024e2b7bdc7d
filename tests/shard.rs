//! Several `vigil run` processes on one Redis and one PostgreSQL: cameras split by `--shard`
//! and by leases, each camera run by exactly one process; cameras added, changed and removed
//! through any process's API reach the one that runs them; a killed process's cameras move to
//! the others within the lease time; a stale writer is fenced out of the database.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Redis, Vigil, free_port, media, postgres_url};
use serde_json::Value;
use vigil::cluster::Shard;
use vigil::events::{EventType, NewEvent, Store, StoreError};
use vigil::sample::SampleServer;

/// Held by each test that starts processes. They all share the test database, so every process
/// loads the cameras saved through any test's API: a camera the static test adds would also be
/// run by the lease test's processes (they take leases on every saved camera), as by any
/// deployment on that database.
static PROCESSES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Six cameras, each on its own RTSP server; ids unique to this test run.
fn cameras(tag: &str) -> (Vec<SampleServer>, Vec<(String, String)>) {
    let video = media("car-detection.mp4");
    let servers: Vec<SampleServer> =
        (0..6).map(|i| SampleServer::start(&video, &format!("c{i}"), 0).unwrap()).collect();
    let ids = servers.iter().enumerate().map(|(i, s)| (format!("{tag}-{}-{i}", std::process::id()), s.url())).collect();
    (servers, ids)
}

fn config(dir: &Path, redis: &str, api: u16, cameras: &[(String, String)], cluster: &str) -> String {
    let mut toml = format!(
        "[database]\nurl = \"{}\"\n[server]\nlisten = \"127.0.0.1:{api}\"\n[redis]\nurl = \"{redis}\"\n\
         [storage]\nsnapshots_dir = \"{}\"\n{cluster}\n",
        postgres_url(),
        dir.join("snaps").display()
    );
    for (id, url) in cameras {
        toml.push_str(&format!("[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\n[cameras.detection]\nenabled = false\n"));
    }
    toml
}

/// A `vigil run` with its own directory and API port.
struct Node {
    vigil: Vigil,
    api: u16,
    _dir: tempfile::TempDir,
}

/// How a node is told its place.
enum Place<'a> {
    /// `--shard INDEX/COUNT`.
    Shard(&'a str),
    /// `--shard auto/COUNT` in a process whose HOSTNAME is a StatefulSet pod's name.
    Pod(&'a str, &'a str),
    /// Leases, or no sharding.
    Free,
}

fn start(redis: &str, cameras: &[(String, String)], cluster: &str, place: Place) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let toml = config(dir.path(), redis, api, cameras, cluster);
    let vigil = match place {
        Place::Shard(s) => Vigil::start_with(dir.path(), &toml, &["--shard", s]),
        Place::Pod(host, s) => Vigil::start_env(dir.path(), &toml, &["--shard", s], &[("HOSTNAME", host)]),
        Place::Free => Vigil::start(dir.path(), &toml),
    };
    Node { vigil, api, _dir: dir }
}

/// The cameras streaming in each node (empty for one that does not answer).
async fn streaming(nodes: &[&Node]) -> Vec<BTreeSet<String>> {
    let mut out = Vec::new();
    for node in nodes {
        let cams: Vec<Value> = match reqwest::get(format!("http://127.0.0.1:{}/api/cameras", node.api)).await {
            Ok(res) => res.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        out.push(
            cams.iter().filter(|c| c["state"] == "streaming").map(|c| c["id"].as_str().unwrap().to_string()).collect(),
        );
    }
    out
}

/// Waits until every camera streams in exactly one node and `shape` accepts the split.
async fn wait_split(
    nodes: &[&Node],
    all: &BTreeSet<String>,
    limit: Duration,
    shape: impl Fn(&[BTreeSet<String>]) -> bool,
) -> Vec<BTreeSet<String>> {
    let deadline = Instant::now() + limit;
    loop {
        let split = streaming(nodes).await;
        let total: usize = split.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<String> = split.iter().flatten().cloned().collect();
        if total == all.len() && union == *all && shape(&split) {
            return split;
        }
        assert!(Instant::now() < deadline, "cameras not split as wanted: {split:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_shards_run_each_camera_once() {
    let _alone = PROCESSES.lock().await;
    let redis = Redis::start();
    let (_servers, cams) = cameras("shard");
    let all: BTreeSet<String> = cams.iter().map(|(id, _)| id.clone()).collect();
    // As a StatefulSet runs them: each pod finds its shard in its own name.
    let nodes: Vec<Node> =
        (0..3).map(|i| start(&redis.url(), &cams, "", Place::Pod(&format!("vigil-{i}"), "auto/3"))).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    let split = wait_split(&refs, &all, Duration::from_secs(30), |_| true).await;
    for (i, ids) in split.iter().enumerate() {
        let shard: Shard = format!("{i}/3").parse().unwrap();
        assert!(ids.iter().all(|id| shard.owns(id)), "shard {i} runs {ids:?}");
    }

    // A camera that belongs to shard 1, added through all three at once (as clients retrying
    // through a load balancer might), changed through shard 2 and removed through shard 0: each
    // change reaches shard 1 (announced in Redis), and the camera never runs anywhere else.
    let owner: Shard = "1/3".parse().unwrap();
    let id = (0..).map(|i| format!("api-{}-{i}", std::process::id())).find(|id| owner.owns(id)).unwrap();
    let server = SampleServer::start(&media("car-detection.mp4"), "api", 0).unwrap();
    let http = reqwest::Client::new();
    let url = |node: &Node, path: &str| format!("http://127.0.0.1:{}/api/cameras{path}", node.api);
    let body = serde_json::json!({"camera_id": id, "stream_url": server.url(), "detection": {"enabled": false}});
    // Posted to all three at once: the shared database's insert decides, so exactly one wins.
    let sent = Instant::now();
    let posts = nodes.iter().map(|node| http.post(url(node, "")).json(&body).send());
    let mut codes: Vec<u16> =
        futures::future::join_all(posts).await.into_iter().map(|res| res.unwrap().status().as_u16()).collect();
    codes.sort();
    assert_eq!(codes, [201, 409, 409], "one add of the same camera through each process");
    let mut with_new = all.clone();
    with_new.insert(id.clone());
    let split = wait_split(&refs, &with_new, Duration::from_secs(20), |s| s[1].contains(&id)).await;
    println!("added through shard 0, streaming in shard 1 after {:?}: {split:?}", sent.elapsed());
    let store = Store::connect(&postgres_url()).await.unwrap();
    // The source's own states, from whichever process ran it.
    let states = async || {
        let all = common::camera_states(&store.after(0, 1_000_000).await.unwrap(), &id);
        all.into_iter().filter(|s| s == "connected" || s == "disconnected").collect::<Vec<_>>()
    };
    let changed = serde_json::json!({"stream_url": server.url(), "detect_fps": 2, "detection": {"enabled": false}});
    let res = http.put(url(&nodes[2], &format!("/{id}"))).json(&changed).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while states().await.iter().filter(|s| *s == "connected").count() < 2 {
        assert!(Instant::now() < deadline, "the owner did not restart the changed camera: {:?}", states().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = http.delete(url(&nodes[0], &format!("/{id}"))).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 204);
    wait_split(&refs, &all, Duration::from_secs(20), |_| true).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while states().await.last().map(String::as_str) != Some("disconnected") {
        assert!(Instant::now() < deadline, "the owner did not stop the removed camera: {:?}", states().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let states = states().await;
    println!("camera states: {states:?}");
    let overlaps = states.windows(2).filter(|w| w[0] == "connected" && w[1] == "connected").count();
    assert_eq!(overlaps, 0, "run by two processes at once: {states:?}");
    for node in nodes {
        assert_eq!(node.vigil.terminate().0, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_post_each_event_to_the_webhook_once() {
    let _alone = PROCESSES.lock().await;
    let redis = Redis::start();
    let (_servers, cams) = cameras("hook");
    let hook_port = free_port();
    let received = common::hook_endpoint(hook_port).await;
    let hook = format!(
        "[[webhooks]]\nname = \"ops-{}\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nevents = [\"motion\", \"camera\"]\n",
        std::process::id()
    );
    let nodes: Vec<Node> = (0..3).map(|i| start(&redis.url(), &cams, &hook, Place::Shard(&format!("{i}/3")))).collect();
    let ours = |camera: &str| cams.iter().any(|(id, _)| id == camera);
    tokio::time::sleep(Duration::from_secs(10)).await;

    // Everything saved for these cameras since the first delivery reaches the endpoint...
    let got = |received: &std::sync::Mutex<Vec<axum::body::Bytes>>| -> Vec<(i64, i64)> {
        let bodies = received.lock().unwrap();
        bodies
            .iter()
            .map(|b| serde_json::from_slice::<vigil::events::Event>(b).unwrap())
            .map(|e| (e.id, e.revision))
            .collect()
    };
    let store = Store::connect(&postgres_url()).await.unwrap();
    let first = got(&received).iter().map(|(id, _)| *id).min().expect("the webhook got nothing");
    let due: BTreeSet<i64> = store
        .after(first - 1, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| ours(&e.camera_id) && matches!(e.event_type, EventType::Motion | EventType::Camera))
        .map(|e| e.id)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !due.iter().all(|id| got(&received).iter().any(|(g, _)| g == id)) {
        assert!(
            Instant::now() < deadline,
            "not delivered: {:?}",
            due.iter().filter(|id| !got(&received).iter().any(|(g, _)| g == *id)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in nodes {
        assert_eq!(node.vigil.terminate().0, Some(0));
    }
    // ...once: three processes run the webhook, one at a time holds its lease.
    let all = got(&received);
    let unique: BTreeSet<(i64, i64)> = all.iter().copied().collect();
    println!("{} POSTs, {} distinct events, {} due", all.len(), unique.len(), due.len());
    assert_eq!(all.len(), unique.len(), "an event was POSTed more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_share_cameras_and_move_them_off_a_dead_process() {
    let _alone = PROCESSES.lock().await;
    let redis = Redis::start();
    let (_servers, cams) = cameras("lease");
    let all: BTreeSet<String> = cams.iter().map(|(id, _)| id.clone()).collect();
    let cluster = "[cluster]\nleases = true\nlease_secs = 2\nprefix = \"test\"";
    // As if Redis had been reset: the database has seen a later token than Redis will hand out.
    let store = Store::connect(&postgres_url()).await.unwrap();
    assert_eq!(store.fence(&cams[0].0, 1000).await.unwrap(), 1000);
    let a = start(&redis.url(), &cams, cluster, Place::Free);
    let b = start(&redis.url(), &cams, cluster, Place::Free);
    let c = start(&redis.url(), &cams, cluster, Place::Free);
    let even = |split: &[BTreeSet<String>]| split.iter().all(|s| s.len() == 2);
    let split = wait_split(&[&a, &b, &c], &all, Duration::from_secs(40), even).await;
    println!("three processes: {split:?}");

    // Kill one: its cameras go to the other two once its leases run out (2 s).
    let orphans = split[2].clone();
    let killed = Instant::now();
    drop(c);
    let split = wait_split(&[&a, &b], &all, Duration::from_secs(20), |s| s.iter().all(|s| s.len() == 3)).await;
    let moved = killed.elapsed();
    println!("after the kill, {moved:?}: {split:?}");
    assert!(moved < Duration::from_secs(5), "cameras {orphans:?} took {moved:?} to move");

    for node in [a, b] {
        assert_eq!(node.vigil.terminate().0, Some(0));
    }

    // One process at a time per camera: its `connected` and `disconnected` events alternate (a
    // handover stops the camera before the lease is given up), except once for each camera of
    // the killed process, which never wrote its `disconnected`.
    let events = store.after(0, 1_000_000).await.unwrap();
    for id in &all {
        let states = common::camera_states(&events, id);
        let overlaps = states.windows(2).filter(|w| w[0] == "connected" && w[1] == "connected").count();
        let allowed = usize::from(orphans.contains(id));
        assert!(overlaps <= allowed, "{id} connected twice without a disconnect: {states:?}");
        let connected = states.iter().filter(|s| *s == "connected").count();
        assert!(connected > allowed, "{id} connected again in a live process: {states:?}");
    }
}

#[tokio::test]
async fn a_writer_with_a_stale_lease_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let camera = format!("fenced-{}", std::process::id());
    let ev = NewEvent {
        key: None,
        event_type: EventType::Motion,
        camera_id: camera.clone(),
        timestamp: Utc::now(),
        frame_number: Some(1),
        data: serde_json::json!({"phase": "start"}),
        snapshot: None,
        crop: None,
    };
    // Two processes' stores on one database: the old owner holds token 4, the new one takes 5.
    let old = Store::connect(&postgres_url()).await.unwrap();
    let new = Store::connect(&postgres_url()).await.unwrap();
    old.fence(&camera, 4).await.unwrap();
    old.save(&ev, None, dir.path()).await.unwrap();
    new.fence(&camera, 5).await.unwrap();
    new.save(&ev, None, dir.path()).await.unwrap();
    match old.save(&ev, None, dir.path()).await {
        Err(StoreError::Fenced { token: 4, .. }) => {}
        other => panic!("the stale writer was not refused: {:?}", other.map(|(e, _)| e.id)),
    }
    // A lower token never lowers the fence.
    old.fence(&camera, 3).await.unwrap();
    assert!(matches!(old.save(&ev, None, dir.path()).await, Err(StoreError::Fenced { .. })));
    new.save(&ev, None, dir.path()).await.unwrap();
}
