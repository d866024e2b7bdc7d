//! Redis SIGKILLed under load and restarted: analysis never stops, the outbox backlog rises and
//! drains to zero, and every saved event reaches the stream exactly once, in id order.

mod common;

use std::time::{Duration, Instant};

use common::{Redis, Vigil, free_port, media};
use vigil::events::Store;
use vigil::sample::SampleServer;

async fn scrape(api: u16) -> prometheus_parse::Scrape {
    let text = reqwest::get(format!("http://127.0.0.1:{api}/metrics")).await.unwrap().text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start();
    let server = SampleServer::start(&media("car-detection.mp4"), "cam", 0).unwrap();
    let api = free_port();
    let db = format!("sqlite://{}", dir.path().join("events.db").display());
    let mut config = format!(
        "[database]\nurl = \"{db}\"\n[server]\nlisten = \"127.0.0.1:{api}\"\n[redis]\nurl = \"{}\"\nstream = \"stream:events\"\n\
         [storage]\nsnapshots_dir = \"{}\"\n",
        redis.url(),
        dir.path().join("snaps").display()
    );
    for id in ["one", "two"] {
        config.push_str(&format!(
            "[[cameras]]\nid = \"{id}\"\nurl = \"{}\"\n[cameras.detection]\nenabled = false\n[cameras.motion]\nquiet_secs = 0.5\n",
            server.url()
        ));
    }
    let vigil = Vigil::start(dir.path(), &config);
    vigil.wait_log("HTTP API and page up", Duration::from_secs(30)).await;
    let store = Store::connect(&db).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    redis.kill();
    let analysed_at_kill = value(&scrape(api).await, "vigil_frames_analysed_total");
    let mut peak_backlog = 0.0f64;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_backlog = peak_backlog.max(value(&scrape(api).await, "vigil_outbox_backlog"));
    }
    let analysed_in_outage = value(&scrape(api).await, "vigil_frames_analysed_total") - analysed_at_kill;
    let held = store.unpublished_count().await.unwrap();
    redis.resume();

    let deadline = Instant::now() + Duration::from_secs(20);
    while store.unpublished_count().await.unwrap() > 0 || value(&scrape(api).await, "vigil_outbox_backlog") > 0.0 {
        assert!(Instant::now() < deadline, "outbox did not drain:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));

    println!("outage 10 s: {analysed_in_outage} frames analysed, {held} events held, backlog peak {peak_backlog}");
    assert!(analysed_in_outage > 150.0, "two cameras at 12.5 fps kept being analysed: {analysed_in_outage}");
    assert!(held >= 1 && peak_backlog >= 1.0, "events were held ({held}) and the backlog showed it ({peak_backlog})");
    // The stream was wiped with the Redis process, so it holds what was published after the
    // restart: everything held during the outage and after, once each, in id order.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("stream:events").arg("-").arg("+").query_async(&mut conn).await.unwrap();
    let ids: Vec<i64> =
        entries.iter().map(|(_, f)| f.iter().find(|(k, _)| k == "id").unwrap().1.parse().unwrap()).collect();
    let saved: Vec<i64> = store.after(0, 100_000).await.unwrap().iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order, no repeats: {ids:?}");
    assert!(saved.ends_with(&ids), "the tail of the saved events: {ids:?} vs {saved:?}");
    assert!(ids.len() as i64 >= held, "every held event was published after the restart");
    drop(server);
}
