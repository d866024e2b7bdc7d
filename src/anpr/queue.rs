//! Plate reads off the cameras' analysis threads. A few workers share the [`PlateReader`], and a
//! short queue sits in front of them. A live camera whose read finds the queue full skips that
//! read (counted) and tries again on a later frame, so reads stay fresh, detection never waits
//! on plate reading, and memory does not grow under overload. File sources wait for a place
//! instead, so that nothing is skipped.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use image::RgbImage;

use super::{PlateRead, PlateReader, Search};
use crate::error::{ErrorKind, Kinded};
use crate::inference::InferenceError;
use crate::plate::Formats;

/// Reads that run at once: one can be in text detection while another is in recognition.
const WORKERS: usize = 2;
/// Reads waiting for a worker; beyond this, live cameras skip their read.
const WAITING: usize = 2;

/// The result of one job: per image, its plate candidates (see [`PlateReader::read`]).
pub type Reads = Vec<Result<Vec<PlateRead>, InferenceError>>;

struct Job {
    images: Vec<RgbImage>,
    search: Search,
    formats: Arc<Formats>,
    reply: SyncSender<Reads>,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the plate-read queue is full")]
    Full,
    #[error("the plate readers have stopped")]
    Stopped,
}

impl Kinded for QueueError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Full => ErrorKind::Retry,
            Self::Stopped => ErrorKind::Fatal,
        }
    }
}

/// The shared plate-read queue; cheap to clone, one handle per camera.
#[derive(Clone)]
pub struct ReadQueue {
    tx: SyncSender<Job>,
}

impl ReadQueue {
    /// Start the workers. They end when every handle is dropped.
    pub fn spawn(reader: Arc<PlateReader>) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(WAITING);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WORKERS {
            let (reader, rx) = (reader.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("plates-{i}"))
                .spawn(move || work(&reader, &rx))
                .expect("spawn plate reader thread");
        }
        Self { tx }
    }

    /// Queue a read of `images`, each showing what `search` says; its result arrives on the returned receiver. With `wait`, block
    /// for a place in the queue; without, fail with [`QueueError::Full`].
    pub fn submit(
        &self,
        images: Vec<RgbImage>,
        search: Search,
        formats: Arc<Formats>,
        wait: bool,
    ) -> Result<Receiver<Reads>, QueueError> {
        let (reply, rx) = mpsc::sync_channel(1);
        let job = Job { images, search, formats, reply };
        if wait {
            self.tx.send(job).map_err(|_| QueueError::Stopped)?;
        } else {
            self.tx.try_send(job).map_err(|e| match e {
                TrySendError::Full(_) => QueueError::Full,
                TrySendError::Disconnected(_) => QueueError::Stopped,
            })?;
        }
        Ok(rx)
    }
}

fn work(reader: &PlateReader, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let reads = job.images.iter().map(|image| reader.read(image, None, job.search, &job.formats)).collect();
        // The camera may have stopped meanwhile; its result is then not wanted.
        let _ = job.reply.send(reads);
    }
}
