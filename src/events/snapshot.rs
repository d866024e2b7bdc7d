//! JPEG snapshots: colour conversion with GStreamer's own converter, encoding with
//! `jpeg-encoder` (SIMD), files under `snapshots_dir/<camera>/<date>/<id>.jpg`.
//!
//! Encoding costs milliseconds, so callers run it off the analysis thread (the recorder does it
//! on the blocking pool).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use image::RgbImage;
use jpeg_encoder::{ColorType, Encoder};

use crate::error::{ErrorKind, Kinded, Refusal};
use crate::frame::Frame;

/// A snapshot that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("colour conversion failed: {0}")]
    Convert(String),
    #[error("JPEG encoding failed: {0}")]
    Encode(#[from] jpeg_encoder::EncodingError),
    #[error("{0}×{1} is too large for a JPEG")]
    TooLarge(u32, u32),
}

impl Kinded for SnapshotError {
    /// This frame cannot be made into a JPEG, however often it is tried.
    fn kind(&self) -> ErrorKind {
        ErrorKind::Refuse(Refusal::Invalid)
    }
}

/// Encode the frame, or a `[x1, y1, x2, y2]` region of it, as a JPEG of the given quality (1–100).
pub fn encode_jpeg(frame: &Frame, region: Option<[u32; 4]>, quality: u8) -> Result<Vec<u8>, SnapshotError> {
    jpeg(&frame_rgb(frame, region)?, quality)
}

/// Encode the whole frame as a JPEG at most `max_width` wide, scaled by GStreamer's converter
/// in the same pass as the colour conversion (a preview, not evidence).
pub fn encode_preview(frame: &Frame, max_width: u32, quality: u8) -> Result<Vec<u8>, SnapshotError> {
    let (w, h) = (frame.width().max(1), frame.height().max(1));
    let out_w = w.min(max_width.max(2)) & !1;
    let out_h = ((u64::from(h) * u64::from(out_w) / u64::from(w)) as u32).max(2) & !1;
    jpeg(&convert(frame, [0, 0, w, h], out_w, out_h)?, quality)
}

fn jpeg(rgb: &RgbImage, quality: u8) -> Result<Vec<u8>, SnapshotError> {
    let mut jpeg = Vec::with_capacity(rgb.len() / 8);
    let side = |v: u32| u16::try_from(v).map_err(|_| SnapshotError::TooLarge(rgb.width(), rgb.height()));
    Encoder::new(&mut jpeg, quality).encode(rgb.as_raw(), side(rgb.width())?, side(rgb.height())?, ColorType::Rgb)?;
    Ok(jpeg)
}

/// The frame, or a `[x1, y1, x2, y2]` region of it, as packed RGB (converting only that region).
pub fn frame_rgb(frame: &Frame, region: Option<[u32; 4]>) -> Result<RgbImage, SnapshotError> {
    let [x1, y1, x2, y2] = region.unwrap_or([0, 0, frame.width(), frame.height()]);
    let (x2, y2) = (x2.min(frame.width()), y2.min(frame.height()));
    let (x1, y1) = (x1.min(x2.saturating_sub(1)), y1.min(y2.saturating_sub(1)));
    let (w, h) = (x2.saturating_sub(x1).max(1), y2.saturating_sub(y1).max(1));
    convert(frame, [x1, y1, x1 + w, y1 + h], w, h)
}

/// The frame's region `[x1, y1, x2, y2]` (inside the frame), converted to `w`×`h` packed RGB.
fn convert(frame: &Frame, [x1, y1, x2, y2]: [u32; 4], w: u32, h: u32) -> Result<RgbImage, SnapshotError> {
    let conv = |e: &dyn std::fmt::Display| SnapshotError::Convert(e.to_string());
    let out_info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
        .fps(frame.info.fps())
        .par(frame.info.par())
        .build()
        .map_err(|e| conv(&e))?;
    let mut config = gst_video::VideoConverterConfig::new();
    config.set_src_x(x1 as i32);
    config.set_src_y(y1 as i32);
    config.set_src_width(Some((x2 - x1) as i32));
    config.set_src_height(Some((y2 - y1) as i32));
    let converter = gst_video::VideoConverter::new(&frame.info, &out_info, Some(config)).map_err(|e| conv(&e))?;
    let input = gst_video::VideoFrame::from_buffer_readable(frame.buffer.clone(), &frame.info)
        .map_err(|_| conv(&"cannot map input"))?;
    let buffer = gst::Buffer::with_size(out_info.size()).map_err(|e| conv(&e))?;
    let mut output =
        gst_video::VideoFrame::from_buffer_writable(buffer, &out_info).map_err(|_| conv(&"cannot map output"))?;
    converter.frame(&input, &mut output);
    let stride = output.plane_stride()[0] as usize;
    let data = output.plane_data(0).map_err(|e| conv(&e))?;
    let row = w as usize * 3;
    let rgb: Vec<u8> = if stride == row {
        data[..row * h as usize].to_vec()
    } else {
        data.chunks(stride).take(h as usize).flat_map(|line| &line[..row]).copied().collect()
    };
    RgbImage::from_raw(w, h, rgb).ok_or_else(|| conv(&"short output"))
}

/// `camera/YYYY-MM-DD/id.jpg` (or `id-crop.jpg`), relative to the snapshots directory.
pub fn relative_path(camera: &str, timestamp: &DateTime<Utc>, id: i64, crop: bool) -> String {
    format!("{camera}/{}/{id}{}.jpg", timestamp.format("%Y-%m-%d"), if crop { "-crop" } else { "" })
}

/// Snapshot files written under temporary names (`.PID-N.jpg.tmp` in the day's folder),
/// waiting for their event's id.
pub struct Staged {
    full: PathBuf,
    crop: Option<PathBuf>,
}

/// Numbers staged files apart within this process.
static STAGED: AtomicU64 = AtomicU64::new(0);

/// Write `full` (and `crop`) into the day's folder under temporary names, creating folders.
pub async fn stage(
    dir: &Path,
    camera: &str,
    timestamp: &DateTime<Utc>,
    (full, crop): (&[u8], Option<&[u8]>),
) -> std::io::Result<Staged> {
    let day = dir.join(camera).join(timestamp.format("%Y-%m-%d").to_string());
    tokio::fs::create_dir_all(&day).await?;
    let n = STAGED.fetch_add(1, Ordering::Relaxed);
    let name = |kind: &str| day.join(format!(".{}-{n}{kind}.jpg.tmp", std::process::id()));
    let staged = Staged { full: name(""), crop: crop.map(|_| name("-crop")) };
    let written = async {
        tokio::fs::write(&staged.full, full).await?;
        if let (Some(path), Some(bytes)) = (&staged.crop, crop) {
            tokio::fs::write(path, bytes).await?;
        }
        Ok(())
    };
    match written.await {
        Ok(()) => Ok(staged),
        Err(e) => {
            staged.discard().await;
            Err(e)
        }
    }
}

impl Staged {
    /// Give the files their event's names (replacing an older revision's); the paths relative
    /// to `dir`, the crop's second.
    pub async fn place(
        &self,
        dir: &Path,
        camera: &str,
        timestamp: &DateTime<Utc>,
        id: i64,
    ) -> std::io::Result<(String, Option<String>)> {
        let rel = relative_path(camera, timestamp, id, false);
        tokio::fs::rename(&self.full, dir.join(&rel)).await?;
        let crop = match &self.crop {
            Some(path) => {
                let crop_rel = relative_path(camera, timestamp, id, true);
                tokio::fs::rename(path, dir.join(&crop_rel)).await?;
                Some(crop_rel)
            }
            None => None,
        };
        Ok((rel, crop))
    }

    /// Remove the files not placed (after a failed write); placed ones are already gone.
    pub async fn discard(&self) {
        for path in std::iter::once(&self.full).chain(self.crop.iter()) {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}
