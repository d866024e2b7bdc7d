//! The decoded frame every stage after ingest works on. A leaf: it imports nothing of ours, so
//! events and analysis need not depend on the ingest stage to name a frame.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use gstreamer as gst;
use gstreamer_video as gst_video;

/// One decoded frame, as the decoder produced it (I420 or NV12).
#[derive(Clone)]
pub struct Frame {
    pub camera: Arc<str>,
    /// Frame number within this camera's run, across reconnects.
    pub seq: u64,
    /// Stream time of the frame.
    pub pts: Option<gst::ClockTime>,
    /// Wall time when the frame left the decoder.
    pub wall: DateTime<Utc>,
    pub info: Arc<gst_video::VideoInfo>,
    pub buffer: gst::Buffer,
}

impl Frame {
    pub fn width(&self) -> u32 {
        self.info.width()
    }

    pub fn height(&self) -> u32 {
        self.info.height()
    }

    /// A copy that owns its pixels, for keeping past the next few frames without holding on to
    /// the decoder's buffer pool.
    pub fn detached(&self) -> Result<Frame, gst::glib::BoolError> {
        Ok(Frame { buffer: self.buffer.copy_deep()?, ..self.clone() })
    }

    /// Map the frame for reading (no copy).
    pub fn map(&self) -> Result<gst_video::VideoFrameRef<&gst::BufferRef>, gst::glib::BoolError> {
        gst_video::VideoFrameRef::from_buffer_ref_readable(self.buffer.as_ref(), &self.info)
    }
}
