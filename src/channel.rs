//! The bounded channel between decode and analysis: the one backpressure point per camera.
//!
//! A full channel either drops its oldest item (live sources: latency stays bounded) or blocks
//! the sender (files: nothing is lost, GStreamer stops reading). The sender is called from a
//! GStreamer streaming thread, so both sides are plain blocking calls, not async.
//!
//! After [`Sender::close`], or once the receiver or every sender is dropped, the receiver still
//! drains what is queued.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// What a full channel does with a new item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Drop the oldest queued item to make room.
    DropOldest,
    /// Wait until the receiver makes room.
    Block,
}

/// The outcome of a send that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// Queued after dropping the oldest item.
    DroppedOldest,
}

/// The channel is closed; the item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("channel closed")]
pub struct Closed;

/// The outcome of a receive with a timeout.
#[derive(Debug)]
pub enum Recv<T> {
    Item(T),
    Timeout,
    /// Closed and drained: nothing will ever arrive.
    Closed,
}

struct State<T> {
    queue: VecDeque<T>,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
    policy: Policy,
    senders: AtomicUsize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the queue inconsistent (every mutation is a
        // single VecDeque call), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

/// The sending half, used by ingest.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half, used by analysis.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A bounded channel holding at most `capacity` items (at least 1).
pub fn bounded<T>(capacity: usize, policy: Policy) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { queue: VecDeque::with_capacity(capacity.max(1)), closed: false }),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
        capacity: capacity.max(1),
        policy,
        senders: AtomicUsize::new(1),
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

impl<T> Sender<T> {
    /// Queue an item according to the policy; blocks only under [`Policy::Block`].
    pub fn send(&self, item: T) -> Result<Sent, Closed> {
        let s = &self.shared;
        let mut state = s.lock();
        let mut outcome = Sent::Queued;
        loop {
            if state.closed {
                return Err(Closed);
            }
            if state.queue.len() < s.capacity {
                break;
            }
            match s.policy {
                Policy::DropOldest => {
                    state.queue.pop_front();
                    outcome = Sent::DroppedOldest;
                }
                Policy::Block => state = s.not_full.wait(state).unwrap_or_else(|p| p.into_inner()),
            }
        }
        state.queue.push_back(item);
        drop(state);
        s.not_empty.notify_one();
        Ok(outcome)
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stop accepting items; the receiver drains what is queued.
    pub fn close(&self) {
        self.shared.close();
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self { shared: self.shared.clone() }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

impl<T> Receiver<T> {
    /// Wait up to `timeout` for an item.
    pub fn recv_timeout(&self, timeout: Duration) -> Recv<T> {
        let s = &self.shared;
        let mut state = s.lock();
        if state.queue.is_empty() && !state.closed {
            state = s.not_empty.wait_timeout(state, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        match state.queue.pop_front() {
            Some(item) => {
                drop(state);
                s.not_full.notify_one();
                Recv::Item(item)
            }
            None if state.closed => Recv::Closed,
            None => Recv::Timeout,
        }
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Wake a blocked sender so a stopped analysis stage never wedges the decoder.
        self.shared.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let (tx, rx) = bounded(3, Policy::DropOldest);
        let outcomes: Vec<_> = (0..5).map(|i| tx.send(i).unwrap()).collect();
        assert_eq!(outcomes.iter().filter(|o| **o == Sent::DroppedOldest).count(), 2);
        tx.close();
        let mut got = Vec::new();
        while let Recv::Item(i) = rx.recv_timeout(Duration::from_millis(10)) {
            got.push(i);
        }
        assert_eq!(got, vec![2, 3, 4]);
    }

    #[test]
    fn block_loses_nothing_with_a_slow_receiver() {
        let (tx, rx) = bounded(2, Policy::Block);
        let producer = thread::spawn(move || {
            for i in 0..200 {
                assert_eq!(tx.send(i).unwrap(), Sent::Queued);
            }
        });
        let mut got = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Recv::Item(i) => {
                    assert!(rx.len() <= 2);
                    got.push(i);
                    if i % 50 == 0 {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                Recv::Timeout => panic!("producer stalled"),
                Recv::Closed => break,
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn dropping_the_receiver_unblocks_the_sender() {
        let (tx, rx) = bounded(1, Policy::Block);
        tx.send(1).unwrap();
        let blocked = thread::spawn(move || tx.send(2));
        thread::sleep(Duration::from_millis(20));
        drop(rx);
        assert_eq!(blocked.join().unwrap(), Err(Closed));
    }
}
