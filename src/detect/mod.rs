//! Detection: object detection with a YOLO-style model from the manifest, run through the shared
//! inference service.
//!
//! Preprocessing (crop, letterbox, colour conversion) reads the decoder's I420/NV12 buffer in
//! one pass ([`resample`]), so only the pixels the model sees are ever converted.
//! A frame or crop is scaled as for the model's training size (416 × 416 for YOLOX: its longer
//! side to 416), and when the model takes other sizes the canvas is only as large as the scaled
//! picture, rounded up to the largest stride: a 16:9 photo is 416 × 256 instead of 416 × 416, and
//! the padding it drops cost as much compute as picture. In video ([`Fit::Grid`]) a side just
//! past a stride is scaled onto it instead: a 16:9 frame is 416 × 224.
//! Decoding and NMS run on the caller's thread ([`yolox`]). [`Detector::submit`] queues a frame
//! and returns, so a camera can go on with its next frames while the model runs.

pub mod resample;
pub mod yolox;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use crate::config::{InferenceConfig, ModelsConfig};
use crate::inference::manifest::Manifest;
use crate::inference::{Batcher, InferenceError, Runtime, Ticket, Workload};
use crate::metrics::Metrics;

/// How much smaller a flexible model's picture may be scaled to land a side on a multiple of its
/// largest stride rather than pad it to the next. A 16:9 frame at 416 wide is 234 high, padded
/// to 256: scaled onto 224 instead, objects are 4 % smaller and the call does 12 % less work.
const GRID_SHRINK: f32 = 0.05;

/// How a picture is scaled into a flexible model's canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// As for the training size: the longer side to it, the other rounded up to the stride. For
    /// stills, where the one call is a small part of the work and the scale is worth keeping.
    Exact,
    /// As [`Fit::Exact`], but a side just past a multiple of the stride is scaled onto it (see
    /// [`GRID_SHRINK`]). For video, where detection recurs on every scheduled frame.
    Grid,
    /// A crop at the scale its whole frame (width, height) gets under [`Fit::Grid`], on a canvas
    /// only as large as the crop: objects in it look as they do to a whole-frame detection, and
    /// the call costs about the crop's share of one. Only a flexible model gains from it.
    Frame(u32, u32),
}

/// One detected object, in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub class: usize,
    pub score: f32,
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
}

/// A frame or crop laid out for the model.
pub struct Letterboxed {
    /// Planar BGR floats 0–255.
    pub tensor: Vec<f32>,
    /// Model pixels per frame pixel.
    pub scale: f32,
    /// The canvas: the model input's width and height.
    pub size: (u32, u32),
}

/// A detection submitted to the model and not yet collected.
pub struct Pending {
    ticket: Ticket,
    size: (u32, u32),
    scale: f32,
    offset: (f32, f32),
    limits: (f32, f32),
    min_score: f32,
}

impl Pending {
    /// Whether the model has answered (or failed); never waits.
    pub fn ready(&mut self) -> bool {
        self.ticket.ready()
    }

    /// The model input's pixels (width × height): what the call costs beside a whole frame's.
    pub fn pixels(&self) -> u64 {
        u64::from(self.size.0) * u64::from(self.size.1)
    }

    /// The detections in frame pixels, waiting for the model if need be, and when its call
    /// returned.
    pub fn wait(self, detector: &Detector) -> Result<(Vec<Detection>, Instant), InferenceError> {
        let out = self.ticket.wait()?;
        let grid = detector.grid(self.size.0, self.size.1);
        let rows = out.shape.first().copied().unwrap_or(0);
        if rows != grid.len() {
            return Err(InferenceError::Run(format!("detector gave {rows} rows, expected {}", grid.len())));
        }
        let (labels, iou) = (detector.labels.len(), detector.nms_iou);
        let found = yolox::decode(&out.data, &grid, labels, self.scale, self.offset, self.limits, self.min_score, iou);
        Ok((found, out.done))
    }
}

/// The anchors of one input size.
type Grid = Arc<Vec<yolox::Anchor>>;

/// A loaded detector; shared by every camera.
pub struct Detector {
    batcher: Batcher,
    /// Class names; the index is the class id.
    pub labels: Vec<String>,
    /// The size the model was trained at; every frame or crop is scaled to fit it.
    width: u32,
    height: u32,
    pad: u8,
    nms_iou: f32,
    strides: Vec<u32>,
    /// Whether the model takes image sizes other than its own (dynamic H and W).
    flexible: bool,
    /// Anchor grids by canvas size, made on first use: one per size a letterbox can take.
    grids: Mutex<HashMap<(u32, u32), Grid>>,
}

impl Detector {
    /// Load the detector named in `[models] detector` and start its batching service.
    pub fn load(
        models: &ModelsConfig,
        runtime: &Runtime,
        inference: &InferenceConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, InferenceError> {
        // Preprocessing uses GStreamer's converter, also for stills.
        crate::ingest::init().map_err(|e| InferenceError::Run(e.to_string()))?;
        let manifest = Manifest::load(models)?;
        let entry = manifest.get(&models.detector)?;
        let path = manifest.path(&entry.file);
        let err = |reason: &str| InferenceError::Model { path: path.display().to_string(), reason: reason.into() };
        let (Some(input), Some(output)) = (&entry.input, &entry.output) else {
            return Err(err("manifest entry needs `input` and `output`"));
        };
        if output.kind != "yolox" {
            return Err(err("only `yolox` outputs are supported"));
        }
        let label_file = manifest.path(entry.labels.as_deref().ok_or_else(|| err("manifest entry needs `labels`"))?);
        let labels: Vec<String> = std::fs::read_to_string(&label_file)
            .map_err(|e| err(&format!("labels {}: {e}", label_file.display())))?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        let sessions = runtime.sessions(&path, Workload::Frames)?;
        let session = &sessions[0];
        let grid = yolox::grid(input.width, input.height, &output.strides);
        let flexible =
            check_contract(session, input.width, input.height, grid.len(), labels.len()).map_err(|r| err(&r))?;
        let batcher = Batcher::spawn(&entry.name, sessions, inference, metrics);
        Ok(Self {
            batcher,
            labels,
            width: input.width,
            height: input.height,
            pad: input.pad,
            nms_iou: entry.nms_iou.unwrap_or(0.45),
            strides: output.strides.clone(),
            flexible,
            grids: Mutex::new(HashMap::from([((input.width, input.height), Arc::new(grid))])),
        })
    }

    /// The class id of a label name.
    pub fn class_of(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }

    /// Detect in `crop` (`[x1, y1, x2, y2]`, default the whole frame) of a decoded buffer.
    /// Boxes come back in frame pixels; only scores of at least `min_score` are kept.
    pub fn detect(
        &self,
        buffer: &gst::Buffer,
        info: &gst_video::VideoInfo,
        crop: Option<[u32; 4]>,
        fit: Fit,
        min_score: f32,
    ) -> Result<Vec<Detection>, InferenceError> {
        self.submit(buffer, info, crop, fit, min_score)?.wait(self).map(|(found, _)| found)
    }

    /// [`Self::detect`] without waiting: the frame is laid out and queued for the model, and the
    /// returned [`Pending`] gives the detections once they are in.
    pub fn submit(
        &self,
        buffer: &gst::Buffer,
        info: &gst_video::VideoInfo,
        crop: Option<[u32; 4]>,
        fit: Fit,
        min_score: f32,
    ) -> Result<Pending, InferenceError> {
        let crop = crop.unwrap_or([0, 0, info.width(), info.height()]);
        let Letterboxed { tensor, scale, size: (w, h) } = self.letterbox(buffer, info, crop, fit)?;
        let ticket = self.batcher.submit(&[3, h as usize, w as usize], tensor)?;
        Ok(Pending {
            ticket,
            size: (w, h),
            scale,
            offset: (crop[0] as f32, crop[1] as f32),
            limits: (info.width() as f32, info.height() as f32),
            min_score,
        })
    }

    /// The anchor grid of a `w` × `h` input.
    fn grid(&self, w: u32, h: u32) -> Grid {
        let mut grids = self.grids.lock().unwrap_or_else(|p| p.into_inner());
        grids.entry((w, h)).or_insert_with(|| Arc::new(yolox::grid(w, h, &self.strides))).clone()
    }

    /// The model input (width, height) for a `width` × `height` frame or crop.
    pub fn input_size(&self, width: u32, height: u32, fit: Fit) -> (u32, u32) {
        self.canvas(width.max(1), height.max(1), fit).2
    }

    /// Model pixels per frame pixel for a `width` × `height` frame or crop.
    pub fn scale(&self, width: u32, height: u32, fit: Fit) -> f32 {
        self.canvas(width.max(1), height.max(1), fit).0
    }

    /// For a `cw` × `ch` crop: the scale that fits it in the training size (as `fit` says), the
    /// scaled picture's size, and the canvas (the training size, or for a flexible model the
    /// picture rounded up to the largest stride, which every input side must be a multiple of).
    fn canvas(&self, cw: u32, ch: u32, fit: Fit) -> (f32, (i32, i32), (u32, u32)) {
        let (w, h) = (self.width, self.height);
        let step = self.strides.iter().copied().max().unwrap_or(32);
        let sides = |scale: f32| {
            let side = |v: u32, max: u32| ((v as f32 * scale).round() as i32).clamp(1, max as i32);
            (side(cw, w), side(ch, h))
        };
        let mut scale = match fit {
            Fit::Frame(fw, fh) => self.scale(fw, fh, Fit::Grid),
            Fit::Exact | Fit::Grid => (w as f32 / cw as f32).min(h as f32 / ch as f32),
        };
        if self.flexible && fit == Fit::Grid {
            // A side just past a multiple of the stride would be padded by most of a stride:
            // shrink the picture onto the multiple below instead, when that costs at most
            // GRID_SHRINK.
            let onto_grid = |v: i32| {
                let down = v as u32 / step * step;
                if down >= step && down as f32 >= (1.0 - GRID_SHRINK) * v as f32 { down as f32 / v as f32 } else { 1.0 }
            };
            let (dw, dh) = sides(scale);
            scale *= onto_grid(dw).min(onto_grid(dh));
        }
        let (dw, dh) = sides(scale);
        if !self.flexible {
            return (scale, (dw, dh), (w, h));
        }
        let up = |v: i32, max: u32| (v as u32).div_ceil(step).saturating_mul(step).clamp(step, max.max(step));
        (scale, (dw, dh), (up(dw, w), up(dh, h)))
    }

    /// Detect in a packed RGB image (stills: `vigil anpr`, tests).
    pub fn detect_rgb(
        &self,
        rgb: &[u8],
        width: u32,
        height: u32,
        min_score: f32,
    ) -> Result<Vec<Detection>, InferenceError> {
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, width, height)
            .build()
            .map_err(|e| InferenceError::Run(e.to_string()))?;
        let mut buffer = gst::Buffer::with_size(info.size()).map_err(|e| InferenceError::Run(e.to_string()))?;
        {
            let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer.make_mut(), &info)
                .map_err(|e| InferenceError::Run(e.to_string()))?;
            let stride = frame.plane_stride()[0] as usize;
            let row = width as usize * 3;
            let data = frame.plane_data_mut(0).map_err(|e| InferenceError::Run(e.to_string()))?;
            for (dst, src) in data.chunks_mut(stride).zip(rgb.chunks(row)) {
                dst[..row].copy_from_slice(src);
            }
        }
        self.detect(&buffer, &info, None, Fit::Exact, min_score)
    }

    /// Crop, scale (keeping aspect) into the top-left of a padded canvas (see [`Self::canvas`]),
    /// and lay out as planar BGR floats 0–255 ([`resample`]).
    pub fn letterbox(
        &self,
        buffer: &gst::Buffer,
        info: &gst_video::VideoInfo,
        crop: [u32; 4],
        fit: Fit,
    ) -> Result<Letterboxed, InferenceError> {
        let err = |what: String| InferenceError::Run(format!("letterbox: {what}"));
        let crop = [
            crop[0].min(info.width().saturating_sub(1)),
            crop[1].min(info.height().saturating_sub(1)),
            crop[2].min(info.width()),
            crop[3].min(info.height()),
        ];
        let (cw, ch) = (crop[2].saturating_sub(crop[0]).max(1), crop[3].saturating_sub(crop[1]).max(1));
        let crop = [crop[0], crop[1], crop[0] + cw, crop[1] + ch];
        let (scale, (dw, dh), (w, h)) = self.canvas(cw, ch, fit);
        let frame = gst_video::VideoFrame::from_buffer_readable(buffer.clone(), info)
            .map_err(|_| err("cannot map the frame".into()))?;
        let source = resample::Source::of(&frame)
            .ok_or_else(|| err(format!("frames in {:?} are not supported", info.format())))?;
        let tensor = source.letterbox(crop, (dw as usize, dh as usize), (w as usize, h as usize), self.pad);
        Ok(Letterboxed { tensor, scale, size: (w, h) })
    }
}

/// Fail at load, not at the first frame, when the file is not the model the manifest describes.
/// Returns whether it takes other image sizes (its height and width are left open).
fn check_contract(
    session: &ort::session::Session,
    width: u32,
    height: u32,
    rows: usize,
    classes: usize,
) -> Result<bool, String> {
    let dims = |outlet: Option<&ort::value::Outlet>| match outlet.map(|o| o.dtype()) {
        Some(ort::value::ValueType::Tensor { shape, .. }) => shape.iter().copied().collect::<Vec<i64>>(),
        _ => Vec::new(),
    };
    // -1 is a dimension the model leaves open; anything fixed must match.
    let fits = |got: &[i64], want: &[i64]| {
        got.len() == want.len() && got.iter().zip(want).all(|(g, w)| *g == -1 || *w == -1 || g == w)
    };
    let (input, output) = (dims(session.inputs().first()), dims(session.outputs().first()));
    let want_in = [-1, 3, height as i64, width as i64];
    let want_out = [-1, rows as i64, 5 + classes as i64];
    if fits(&input, &want_in) && fits(&output, &want_out) {
        Ok(input.get(2) == Some(&-1) && input.get(3) == Some(&-1))
    } else {
        Err(format!(
            "not a YOLOX model for this manifest: input {input:?}, output {output:?}; expected {want_in:?} and {want_out:?}"
        ))
    }
}
