//! Print vigil events from every per-camera channel: `PSUBSCRIBE events:*`.
//!
//! ```sh
//! cargo run --release --example psubscribe -- [--url redis://127.0.0.1:6379] [--pattern 'events:*'] [--count N]
//! ```
//!
//! Needs `extra_channels = ["events:{camera_id}", …]` in vigil's `[redis]`. Each line is the
//! channel, a tab, and the event as JSON.

use clap::Parser;
use futures::StreamExt;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    url: String,
    #[arg(long, default_value = "events:*")]
    pattern: String,
    /// Exit after this many events (0: never).
    #[arg(long, default_value_t = 0)]
    count: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> redis::RedisResult<()> {
    let args = Args::parse();
    let client = redis::Client::open(args.url.as_str())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe(&args.pattern).await?;
    let mut messages = pubsub.on_message();
    let mut printed = 0;
    while let Some(msg) = messages.next().await {
        let payload: String = msg.get_payload()?;
        let event: serde_json::Value = match serde_json::from_str(&payload) {
            Ok(event) => event,
            Err(e) => {
                eprintln!("skipping a message that is not JSON on {}: {e}", msg.get_channel_name());
                continue;
            }
        };
        println!("{}\t{event}", msg.get_channel_name());
        printed += 1;
        if printed == args.count {
            break;
        }
    }
    Ok(())
}
