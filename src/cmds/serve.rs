//! `vigil serve`: a video file served as looping RTSP cameras on 127.0.0.1, to try vigil, or to
//! measure it, without real cameras.

use std::path::PathBuf;

use anyhow::Context;
use vigil::sample::SampleServer;

#[derive(clap::Args)]
pub struct Args {
    /// H.264 MP4 to serve (default: the demo sample).
    #[arg(long)]
    video: Option<PathBuf>,
    /// RTSP port.
    #[arg(long, default_value_t = 8554)]
    port: u16,
    /// Cameras to serve, each a stream of its own at `/cam0`, `/cam1`, …
    #[arg(long, default_value_t = 1)]
    cameras: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let video = match args.video {
        Some(v) => v,
        None => super::demo::default_video().context("no sample video; run scripts/setup or pass --video")?,
    };
    let server = SampleServer::many(&video, args.cameras, args.port)?;
    for i in 0..args.cameras.max(1) {
        println!("{}", server.url_of(i));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let shutdown = super::shutdown_on_signal()?;
        shutdown.cancelled().await;
        anyhow::Ok(())
    })?;
    drop(server);
    Ok(())
}
