//! Prometheus metrics, one registry per running instance (so tests can run several side by side).
//!
//! Hot paths hold pre-resolved handles ([`CameraMetrics`]) and never look up labels per frame.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// All of vigil's metrics and the registry they are exported from.
pub struct Metrics {
    pub registry: Registry,
    frames_decoded: IntCounterVec,
    frames_dropped: IntCounterVec,
    frames_analysed: IntCounterVec,
    queue_depth: IntGaugeVec,
    events_saved: IntCounterVec,
    events_published: IntCounterVec,
    events_dropped: IntCounterVec,
    events_rejected: IntCounterVec,
    /// Saved events not yet published.
    pub outbox_backlog: IntGauge,
    /// Events held in the local journal, waiting for the database.
    pub journal_backlog: IntGauge,
    /// Free bytes on the snapshots' filesystem, as the disk guard last saw them.
    pub disk_free_bytes: IntGauge,
    retention_deleted: IntCounterVec,
    /// Failed Redis commands.
    pub redis_errors: IntCounter,
    /// Failed database statements.
    pub db_errors: IntCounter,
    /// Snapshots that could not be encoded or written.
    pub snapshot_errors: IntCounter,
    /// Items per model call, by model.
    pub inference_batch: HistogramVec,
    /// Seconds per model call, by model.
    pub inference_seconds: HistogramVec,
    /// Seconds from a frame's wall time to its event being published.
    pub frame_to_publish: prometheus::Histogram,
    frames_detected: IntCounterVec,
    detection_pixels: IntCounterVec,
    analysis_restarts: IntCounterVec,
    events_blocked: IntCounterVec,
    events_blocked_ms: IntCounterVec,
    plate_reads: IntCounterVec,
    /// Webhook POSTs, by webhook name and outcome (`delivered`, `failed`).
    pub webhook_posts: IntCounterVec,
}

/// One camera's counters, resolved once.
#[derive(Clone)]
pub struct CameraMetrics {
    pub decoded: IntCounter,
    pub dropped_backpressure: IntCounter,
    pub analysed: IntCounter,
    /// Frames that went through the object detector.
    pub detected: IntCounter,
    /// Model input pixels (canvas width × height) of those detector runs.
    pub detection_pixels: IntCounter,
    /// Regions (vehicles, or whole frames) read for plates.
    pub plate_reads: IntCounter,
    /// Plate reads skipped because the plate-read queue was full.
    pub plate_reads_skipped: IntCounter,
    pub queue_depth: IntGauge,
    /// Frames dropped while analysis was down, waiting to restart.
    pub dropped_analysis_down: IntCounter,
    /// Analysis restarts after a panic.
    pub analysis_panics: IntCounter,
    /// Analysis restarts after it stopped making progress.
    pub analysis_stalls: IntCounter,
    /// Events that found the recorder's queue full and waited for room.
    pub events_blocked: IntCounter,
    /// Milliseconds analysis spent waiting for room in the recorder's queue.
    pub events_blocked_ms: IntCounter,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let r = Registry::new();
        let queue_depth =
            IntGaugeVec::new(Opts::new("vigil_queue_depth", "Frames waiting between decode and analysis"), &["camera"])
                .expect("valid metric");
        r.register(Box::new(queue_depth.clone())).expect("unique metric");
        let outbox_backlog =
            IntGauge::new("vigil_outbox_backlog", "Saved events not yet published").expect("valid metric");
        r.register(Box::new(outbox_backlog.clone())).expect("unique metric");
        let journal_backlog =
            IntGauge::new("vigil_journal_backlog", "Events held in the local journal, waiting for the database")
                .expect("valid metric");
        r.register(Box::new(journal_backlog.clone())).expect("unique metric");
        let disk_free_bytes =
            IntGauge::new("vigil_disk_free_bytes", "Free bytes on the snapshots' filesystem").expect("valid metric");
        r.register(Box::new(disk_free_bytes.clone())).expect("unique metric");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h =
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["model"]).expect("valid metric");
            r.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        Self {
            inference_batch: histogram(
                "vigil_inference_batch_size",
                "Items per model call",
                vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0],
            ),
            inference_seconds: histogram(
                "vigil_inference_seconds",
                "Seconds per model call",
                prometheus::exponential_buckets(0.001, 2.0, 12).expect("valid buckets"),
            ),
            frame_to_publish: {
                let opts = HistogramOpts::new("vigil_frame_to_publish_seconds", "Frame wall time to Redis publish")
                    .buckets(prometheus::exponential_buckets(0.005, 2.0, 13).expect("valid buckets"));
                let h = prometheus::Histogram::with_opts(opts).expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            frames_detected: counter_vec(
                &r,
                "vigil_detections_total",
                "Detector runs (frames or crops), by camera",
                &["camera"],
            ),
            detection_pixels: counter_vec(
                &r,
                "vigil_detection_pixels_total",
                "Model input pixels (width x height) of the detector runs, by camera: a crop costs its share of a frame",
                &["camera"],
            ),
            analysis_restarts: counter_vec(
                &r,
                "vigil_analysis_restarts_total",
                "Analysis restarts, by camera and reason (panic, stall)",
                &["camera", "reason"],
            ),
            plate_reads: counter_vec(
                &r,
                "vigil_plate_reads_total",
                "Regions read for plates (`done`), or not because the plate readers were busy (`skipped`)",
                &["camera", "outcome"],
            ),
            frames_decoded: counter_vec(&r, "vigil_frames_decoded_total", "Frames out of the decoder", &["camera"]),
            frames_dropped: counter_vec(
                &r,
                "vigil_frames_dropped_total",
                "Frames dropped before analysis",
                &["camera", "reason"],
            ),
            frames_analysed: counter_vec(&r, "vigil_frames_analysed_total", "Frames through analysis", &["camera"]),
            events_saved: counter_vec(&r, "vigil_events_saved_total", "Events written to the database", &["type"]),
            events_published: counter_vec(&r, "vigil_events_published_total", "Events published to Redis", &["type"]),
            events_dropped: counter_vec(
                &r,
                "vigil_events_dropped_total",
                "Events dropped before they were saved: the database and the journal both unavailable",
                &["type"],
            ),
            events_blocked: counter_vec(
                &r,
                "vigil_events_blocked_total",
                "Events that found the recorder's queue full and waited for room (backpressure.events = block)",
                &["camera"],
            ),
            events_blocked_ms: counter_vec(
                &r,
                "vigil_events_blocked_milliseconds_total",
                "Time a camera's analysis waited for room in the recorder's queue",
                &["camera"],
            ),
            events_rejected: counter_vec(
                &r,
                "vigil_events_rejected_total",
                "Events the database refused for good (bad data, a broken rule), set aside in the journal directory's rejected/",
                &["type"],
            ),
            retention_deleted: counter_vec(
                &r,
                "vigil_retention_deleted_total",
                "Events deleted by retention, by reason (age, disk)",
                &["reason"],
            ),
            webhook_posts: counter_vec(
                &r,
                "vigil_webhook_posts_total",
                "Webhook POSTs by outcome",
                &["webhook", "outcome"],
            ),
            redis_errors: counter(&r, "vigil_redis_errors_total", "Failed Redis commands"),
            db_errors: counter(&r, "vigil_db_errors_total", "Failed database statements"),
            snapshot_errors: counter(&r, "vigil_snapshot_errors_total", "Snapshots not encoded or not written"),
            queue_depth,
            outbox_backlog,
            journal_backlog,
            disk_free_bytes,
            registry: r,
        }
    }

    /// The handles for one camera.
    pub fn camera(&self, id: &str) -> CameraMetrics {
        CameraMetrics {
            decoded: self.frames_decoded.with_label_values(&[id]),
            dropped_backpressure: self.frames_dropped.with_label_values(&[id, "backpressure"]),
            analysed: self.frames_analysed.with_label_values(&[id]),
            detected: self.frames_detected.with_label_values(&[id]),
            detection_pixels: self.detection_pixels.with_label_values(&[id]),
            plate_reads: self.plate_reads.with_label_values(&[id, "done"]),
            plate_reads_skipped: self.plate_reads.with_label_values(&[id, "skipped"]),
            queue_depth: self.queue_depth.with_label_values(&[id]),
            dropped_analysis_down: self.frames_dropped.with_label_values(&[id, "analysis_down"]),
            analysis_panics: self.analysis_restarts.with_label_values(&[id, "panic"]),
            analysis_stalls: self.analysis_restarts.with_label_values(&[id, "stall"]),
            events_blocked: self.events_blocked.with_label_values(&[id]),
            events_blocked_ms: self.events_blocked_ms.with_label_values(&[id]),
        }
    }

    /// Record one model call of `batch` items.
    pub fn inference_observed(&self, model: &str, batch: usize, took: Duration) {
        self.inference_batch.with_label_values(&[model]).observe(batch as f64);
        self.inference_seconds.with_label_values(&[model]).observe(took.as_secs_f64());
    }

    /// Count a saved event of `event_type`.
    pub fn event_saved(&self, event_type: &str) {
        self.events_saved.with_label_values(&[event_type]).inc();
    }

    /// Count an event dropped before it could be saved.
    pub fn event_dropped(&self, event_type: &str) {
        self.events_dropped.with_label_values(&[event_type]).inc();
    }

    /// Count an event of `event_type` the database refused for good.
    pub fn event_rejected(&self, event_type: &str) {
        self.events_rejected.with_label_values(&[event_type]).inc();
    }

    /// Events of `event_type` the database refused so far.
    pub fn events_rejected(&self, event_type: &str) -> u64 {
        self.events_rejected.with_label_values(&[event_type]).get()
    }

    /// Events dropped so far of `event_type`.
    pub fn events_dropped(&self, event_type: &str) -> u64 {
        self.events_dropped.with_label_values(&[event_type]).get()
    }

    /// Count `n` events deleted by retention for `reason`.
    pub fn retention_deleted(&self, reason: &str, n: usize) {
        self.retention_deleted.with_label_values(&[reason]).inc_by(n as u64);
    }

    /// Events deleted by retention so far for `reason`.
    pub fn retention_deleted_count(&self, reason: &str) -> u64 {
        self.retention_deleted.with_label_values(&[reason]).get()
    }

    /// Count a published event of `event_type`.
    pub fn event_published(&self, event_type: &str) {
        self.events_published.with_label_values(&[event_type]).inc();
    }
}
