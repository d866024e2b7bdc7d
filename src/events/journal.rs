//! The recorder's journal: events it could not write to the database, kept on local disk in
//! arrival order until it can, across restarts.
//!
//! ```text
//! <journal_dir>/<created-ms>-<pid>.journal
//!   "VIGILJ01" | u64 read offset | record* ;  record = u32 header len | u32 blob len | u32 crc32
//!                                                     | header (JSON) | JPEG | crop JPEG
//! ```
//!
//! Each process appends to a file of its own and holds an exclusive lock on every file it reads
//! or writes, so processes sharing the directory never replay one file twice. At start a process
//! adopts every file nobody holds (a stopped process's) and reads them, oldest first, before its
//! own. Each append is fsynced before the event counts as held. The read offset is written in
//! place after each record reaches the database; a crash between the two re-sends that record
//! (at least once, as everywhere else on the event path). A torn last record (power lost
//! mid-append) fails its length or checksum and ends that file's replay, with a warning.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{EventType, NewEvent};

const MAGIC: &[u8; 8] = b"VIGILJ01";
/// Magic, then the read offset.
const FILE_HEADER: u64 = 16;
/// Header length, blob length, checksum.
const RECORD_PREFIX: usize = 12;
/// No record is larger; a length beyond it is a torn or corrupt record, not an allocation.
const MAX_RECORD: usize = 256 << 20;

/// An event with its snapshot already encoded: what the recorder writes, and what the journal
/// keeps.
pub struct Held {
    pub ev: NewEvent,
    pub jpeg: Option<Vec<u8>>,
    pub crop: Option<Vec<u8>>,
    /// The saved row this event revises, when known as it was journaled (its key was saved
    /// before).
    pub revises: Option<i64>,
}

/// Everything of a [`Held`] event but its JPEGs.
#[derive(Serialize, Deserialize)]
struct Header {
    event_type: EventType,
    camera_id: String,
    timestamp: DateTime<Utc>,
    frame_number: Option<i64>,
    data: serde_json::Value,
    crop: Option<[u32; 4]>,
    key: Option<String>,
    revises: Option<i64>,
    jpeg_len: Option<usize>,
    crop_len: Option<usize>,
}

/// One journal file, locked by this process.
struct Segment {
    path: PathBuf,
    file: File,
    /// Offset of the next record to read.
    read: u64,
    /// Where the next append goes (the file's length).
    end: u64,
    /// Created by this process (appends go only to such a file).
    own: bool,
}

/// The journal directory, as one queue; see the module docs.
pub struct Journal {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// Records appended and not yet read back, across segments.
    held: usize,
}

impl Journal {
    /// Open `dir` (created if missing) and adopt the files no running process holds.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut journal = Self { dir: dir.to_path_buf(), segments: VecDeque::new(), held: 0 };
        for path in journal_files(dir)? {
            match adopt(&path) {
                Ok(Some(seg)) => {
                    let count = count_records(&seg)?;
                    if count == 0 {
                        remove(&seg);
                        continue;
                    }
                    journal.held += count;
                    journal.segments.push_back(seg);
                }
                Ok(None) => {}
                Err(e) => warn!(path = %path.display(), "journal file not readable, left in place: {e}"),
            }
        }
        Ok(journal)
    }

    /// Events held, not yet read back.
    pub fn len(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Append `held` and fsync it.
    pub fn append(&mut self, held: &Held) -> io::Result<()> {
        let record = encode(held)?;
        if !self.segments.back().is_some_and(|s| s.own) {
            self.segments.push_back(create(&self.dir)?);
        }
        let seg = self.segments.back_mut().expect("pushed above");
        seg.file.write_all_at(&record, seg.end)?;
        seg.file.sync_data()?;
        seg.end += record.len() as u64;
        self.held += 1;
        Ok(())
    }

    /// The oldest held event, without consuming it; `advance` once it is in the database. A
    /// record that cannot be read ends its file's replay (with a warning) and the next file's
    /// first record is returned instead.
    pub fn peek(&mut self) -> Option<(Held, u64)> {
        while let Some(seg) = self.segments.front_mut() {
            if seg.read < seg.end {
                match read_record(seg) {
                    Ok(found) => return Some(found),
                    Err(e) => {
                        let lost = count_records(seg).unwrap_or(0);
                        warn!(path = %seg.path.display(), offset = seg.read, "journal record unreadable; the rest of this file is skipped: {e}");
                        self.held = self.held.saturating_sub(lost);
                        seg.read = seg.end;
                    }
                }
            }
            let seg = self.segments.pop_front().expect("front exists");
            remove(&seg);
        }
        None
    }

    /// Consume the record `peek` returned, of `size` bytes.
    pub fn advance(&mut self, size: u64) -> io::Result<()> {
        let seg = self.segments.front_mut().expect("advance follows peek");
        seg.read += size;
        self.held = self.held.saturating_sub(1);
        if seg.read >= seg.end {
            let seg = self.segments.pop_front().expect("front exists");
            remove(&seg);
            return Ok(());
        }
        seg.file.write_all_at(&seg.read.to_le_bytes(), 8)
    }

    /// Make the read offsets durable (appends already are).
    pub fn sync(&self) -> io::Result<()> {
        self.segments.iter().try_for_each(|s| s.file.sync_data())
    }
}

/// The events held in `dir`'s journal files, oldest first, read without taking or changing
/// anything (for inspection while no process runs on them).
pub fn held_events(dir: &Path) -> io::Result<Vec<Held>> {
    let mut all = Vec::new();
    for path in journal_files(dir)? {
        let file = File::open(&path)?;
        let mut seg = segment(path, file)?;
        while seg.read < seg.end {
            let Ok((held, size)) = read_record(&seg) else { break };
            all.push(held);
            seg.read += size;
        }
    }
    Ok(all)
}

/// The `*.journal` files in `dir`, oldest first (names start with their creation time).
fn journal_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .collect();
    names.sort();
    Ok(names)
}

/// An existing journal file as a segment of another process's, read from its saved offset.
fn segment(path: PathBuf, mut file: File) -> io::Result<Segment> {
    let mut header = [0u8; FILE_HEADER as usize];
    file.read_exact(&mut header)?;
    if &header[..8] != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a vigil journal"));
    }
    let end = file.seek(SeekFrom::End(0))?;
    let read = u64::from_le_bytes(header[8..].try_into().expect("8 bytes")).clamp(FILE_HEADER, end);
    Ok(Segment { path, file, read, end, own: false })
}

/// A new file of this process's, locked.
fn create(dir: &Path) -> io::Result<Segment> {
    let name = format!("{:013}-{}.journal", Utc::now().timestamp_millis(), std::process::id());
    let path = dir.join(name);
    let mut file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    file.lock()?;
    file.write_all(MAGIC)?;
    file.write_all(&FILE_HEADER.to_le_bytes())?;
    file.sync_all()?;
    if let Ok(d) = File::open(dir) {
        // The new name must survive a crash too.
        let _ = d.sync_all();
    }
    Ok(Segment { path, file, read: FILE_HEADER, end: FILE_HEADER, own: true })
}

/// Lock and open another process's file; `None` while a running process holds it.
fn adopt(path: &Path) -> io::Result<Option<Segment>> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    segment(path.to_path_buf(), file).map(Some)
}

fn remove(seg: &Segment) {
    if let Err(e) = std::fs::remove_file(&seg.path) {
        warn!(path = %seg.path.display(), "journal file read back but not removed: {e}");
    }
}

/// Records from the read offset to the first unreadable one.
fn count_records(seg: &Segment) -> io::Result<usize> {
    let (mut at, mut count) = (seg.read, 0);
    let mut prefix = [0u8; RECORD_PREFIX];
    while at + RECORD_PREFIX as u64 <= seg.end {
        seg.file.read_exact_at(&mut prefix, at)?;
        let size = record_size(&prefix);
        if size > MAX_RECORD as u64 || at + size > seg.end {
            break;
        }
        at += size;
        count += 1;
    }
    Ok(count)
}

fn record_size(prefix: &[u8; RECORD_PREFIX]) -> u64 {
    let word = |i: usize| u32::from_le_bytes(prefix[i..i + 4].try_into().expect("4 bytes")) as u64;
    RECORD_PREFIX as u64 + word(0) + word(4)
}

impl Held {
    fn header(&self) -> Header {
        let ev = &self.ev;
        Header {
            event_type: ev.event_type,
            camera_id: ev.camera_id.clone(),
            timestamp: ev.timestamp,
            frame_number: ev.frame_number,
            data: ev.data.clone(),
            crop: ev.crop,
            key: ev.key.clone(),
            revises: self.revises,
            jpeg_len: self.jpeg.as_ref().map(Vec::len),
            crop_len: self.crop.as_ref().map(Vec::len),
        }
    }
}

/// Keeps an event the database refused for good in `{dir}/rejected/`: its JSON (with why)
/// beside its snapshot and crop, for an operator to read or replay. Returns the JSON's path.
pub fn set_aside(dir: &Path, held: &Held, reason: &str) -> io::Result<PathBuf> {
    let dir = dir.join("rejected");
    std::fs::create_dir_all(&dir)?;
    let camera: String =
        held.ev.camera_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    // Events of one frame share a timestamp (two tracks that end together): the process and a
    // count make each name its own.
    static SET_ASIDE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SET_ASIDE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stem = format!("{}-{camera}-{}-{n}", held.ev.timestamp.format("%Y%m%dT%H%M%S%.3fZ"), std::process::id());
    let record = serde_json::json!({ "reason": reason, "event": held.header() });
    let path = dir.join(format!("{stem}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&record)?)?;
    for (blob, suffix) in [(&held.jpeg, "jpg"), (&held.crop, "crop.jpg")] {
        if let Some(bytes) = blob {
            std::fs::write(dir.join(format!("{stem}.{suffix}")), bytes)?;
        }
    }
    Ok(path)
}

fn encode(held: &Held) -> io::Result<Vec<u8>> {
    let header = serde_json::to_vec(&held.header())?;
    let blobs = held.jpeg.iter().chain(held.crop.iter());
    let blob_len: usize = blobs.clone().map(Vec::len).sum();
    if header.len() + blob_len > MAX_RECORD {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "event too large to journal"));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    blobs.clone().for_each(|b| crc.update(b));
    let mut out = Vec::with_capacity(RECORD_PREFIX + header.len() + blob_len);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&(blob_len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&header);
    blobs.for_each(|b| out.extend_from_slice(b));
    Ok(out)
}

fn read_record(seg: &Segment) -> io::Result<(Held, u64)> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut prefix = [0u8; RECORD_PREFIX];
    if seg.read + RECORD_PREFIX as u64 > seg.end {
        return Err(invalid("torn record"));
    }
    seg.file.read_exact_at(&mut prefix, seg.read)?;
    let size = record_size(&prefix);
    if size > MAX_RECORD as u64 || seg.read + size > seg.end {
        return Err(invalid("torn record"));
    }
    let mut body = vec![0u8; size as usize - RECORD_PREFIX];
    seg.file.read_exact_at(&mut body, seg.read + RECORD_PREFIX as u64)?;
    let crc = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes"));
    if crc32fast::hash(&body) != crc {
        return Err(invalid("checksum mismatch"));
    }
    let header_len = u32::from_le_bytes(prefix[..4].try_into().expect("4 bytes")) as usize;
    let (header, mut blobs) = body.split_at(header_len);
    let h: Header = serde_json::from_slice(header)?;
    let mut take = |len: Option<usize>| -> io::Result<Option<Vec<u8>>> {
        let Some(len) = len else { return Ok(None) };
        if len > blobs.len() {
            return Err(invalid("blob lengths disagree"));
        }
        let (blob, rest) = blobs.split_at(len);
        blobs = rest;
        Ok(Some(blob.to_vec()))
    };
    let (jpeg, crop) = (take(h.jpeg_len)?, take(h.crop_len)?);
    let ev = NewEvent {
        frame_number: h.frame_number,
        crop: h.crop,
        key: h.key,
        ..NewEvent::new(h.event_type, &h.camera_id, h.timestamp, h.data)
    };
    Ok((Held { ev, jpeg, crop, revises: h.revises }, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(n: i64, jpeg: Option<Vec<u8>>) -> Held {
        let ev = NewEvent {
            frame_number: Some(n),
            ..NewEvent::new(EventType::Tracking, "gate", Utc::now(), serde_json::json!({"n": n}))
        };
        Held { ev, jpeg, crop: None, revises: None }
    }

    fn drain(j: &mut Journal) -> Vec<i64> {
        let mut seen = Vec::new();
        while let Some((h, size)) = j.peek() {
            seen.push(h.ev.frame_number.unwrap());
            j.advance(size).unwrap();
        }
        seen
    }

    #[test]
    fn a_second_process_replays_what_the_first_held_in_order_then_the_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Journal::open(dir.path()).unwrap();
        for n in 0..5 {
            first.append(&held(n, Some(vec![n as u8; 1000]))).unwrap();
        }
        let (h, size) = first.peek().unwrap();
        assert_eq!(h.jpeg.unwrap(), vec![0u8; 1000]);
        first.advance(size).unwrap();
        // Held by a running process: not adopted.
        assert_eq!(Journal::open(dir.path()).unwrap().len(), 0);
        first.sync().unwrap();
        drop(first);
        let mut second = Journal::open(dir.path()).unwrap();
        assert_eq!(second.len(), 4);
        second.append(&held(5, None)).unwrap();
        assert_eq!(drain(&mut second), vec![1, 2, 3, 4, 5]);
        assert!(second.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "read-back files are removed");
    }

    #[test]
    fn a_torn_last_record_ends_the_replay_and_keeps_the_ones_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        for n in 0..3 {
            j.append(&held(n, Some(vec![7; 500]))).unwrap();
        }
        let path = j.segments[0].path.clone();
        drop(j);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 100).unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(drain(&mut j), vec![0, 1]);
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&held(0, Some(vec![1; 300]))).unwrap();
        j.append(&held(1, None)).unwrap();
        let path = j.segments[0].path.clone();
        drop(j);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FILE_HEADER as usize + 200] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert!(drain(&mut j).is_empty(), "nothing past a bad checksum is trusted");
    }
}
