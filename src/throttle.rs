//! Log lines that repeat (one per frame, one per retry) let through at most once per interval,
//! with a count of the ones held back, so a failing camera cannot flood the log.

use std::time::{Duration, Instant};

/// How often a repeated failure is logged at most, by default.
pub const EVERY: Duration = Duration::from_secs(60);

/// Lets a repeated log line through at most once per `every`.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// A throttle that lets the first line through at once.
    pub const fn new(every: Duration) -> Self {
        Self { every, last: None, held: 0 }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were held back since the last
    /// one; `None` when this one is to be held back.
    pub fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.every) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    /// Log a failure that will be retried in `retry_in`: an error for the first of a run
    /// (`failures == 1`: the thing was fine before), then a warning at most once per interval,
    /// with how many were held back.
    pub fn failure(&mut self, failures: u32, retry_in: Duration, message: std::fmt::Arguments<'_>) {
        match (failures, self.ready()) {
            (1, _) => tracing::error!(?retry_in, "{message}"),
            (_, Some(held)) => tracing::warn!(?retry_in, failures, held_back = held, "{message}"),
            (_, None) => {}
        }
    }

    /// Log `message` at warn level unless it is to be held back; the line says how many were.
    pub fn warn(&mut self, message: std::fmt::Arguments<'_>) {
        match self.ready() {
            Some(0) => tracing::warn!("{message}"),
            Some(held) => tracing::warn!(held_back = held, "{message} (and {held} more like it)"),
            None => {}
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_line_through_per_interval_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_millis(80));
        assert_eq!(t.ready(), Some(0));
        assert_eq!((0..50).filter_map(|_| t.ready()).count(), 0);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(t.ready(), Some(50));
        assert_eq!(t.ready(), None);
    }
}
