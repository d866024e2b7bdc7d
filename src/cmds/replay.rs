//! `vigil replay`: print saved events as JSON lines, oldest first, for rebuilding a consumer's
//! state from the database (the source of truth) after it missed Pub/Sub messages.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use vigil::config::Config;
use vigil::events::{EventQuery, EventType, Store, parse_ts};

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("from").required(true).args(["since", "after_id"]))]
pub struct Args {
    /// The config file whose `[database]` to read.
    #[arg(short, long, default_value = "cameras.toml")]
    config: PathBuf,
    /// Read this database instead (`sqlite://FILE` or `postgres://…`).
    #[arg(long)]
    database: Option<String>,
    /// Events whose frame time is at or after this RFC 3339 time.
    #[arg(long, value_parser = |s: &str| parse_ts(s).map_err(|e| format!("not an RFC 3339 time: {e}")))]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Events with a larger id than this (the last id the consumer has).
    #[arg(long)]
    after_id: Option<i64>,
    /// Only this camera's events.
    #[arg(long)]
    camera: Option<String>,
    /// Only events of this type: motion, tracking, anpr or camera.
    #[arg(long = "type", value_parser = |s: &str| EventType::parse(s).ok_or("expected motion, tracking, anpr or camera"))]
    event_type: Option<EventType>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let url = match args.database {
        Some(url) => url,
        None => Config::load(&args.config)?.database.url,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = Store::connect(&url).await.context("opening the event database")?;
        let mut query = EventQuery {
            camera: args.camera,
            event_type: args.event_type,
            since: args.since,
            after_id: args.after_id,
            limit: 1000,
            newest_first: false,
            ..EventQuery::default()
        };
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        loop {
            let page = store.list(&query).await?;
            for ev in &page {
                serde_json::to_writer(&mut out, ev)?;
                out.write_all(b"\n")?;
            }
            match page.last() {
                Some(last) if page.len() as i64 == query.limit => query.after_id = Some(last.id),
                _ => break,
            }
        }
        out.flush()?;
        store.close().await;
        Ok(())
    })
}
