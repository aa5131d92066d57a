//! A model's bounded request queue: FIFO, limited both in requests and in bytes, so a burst
//! cannot exhaust a small box's memory. Admission is all-or-nothing and never blocks.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::sync::oneshot;

use super::policy::Pending;
use super::{InferError, InferenceRequest, InferenceResponse};

/// Where a request's answer goes.
pub type Reply = oneshot::Sender<Result<InferenceResponse, InferError>>;

/// A queued request with its bookkeeping.
#[derive(Debug)]
pub struct Entry {
    pub pending: Pending,
    pub request: InferenceRequest,
    pub bytes: usize,
    pub reply: Reply,
}

/// Why a queued request was dropped before reaching the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its deadline passed.
    Expired,
    /// Its receiver is gone (the client cancelled).
    Cancelled,
}

/// The queue itself; the scheduler holds it under its lock.
#[derive(Debug)]
pub struct BoundedQueue {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_requests: usize,
    max_bytes: usize,
}

impl BoundedQueue {
    /// An empty queue holding at most `max_requests` requests and `max_bytes` input bytes.
    pub fn new(max_requests: usize, max_bytes: usize) -> Self {
        BoundedQueue {
            entries: VecDeque::new(),
            bytes: 0,
            max_requests,
            max_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Input bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a request of `bytes` fits now.
    pub fn fits(&self, bytes: usize) -> bool {
        self.entries.len() < self.max_requests && self.bytes.saturating_add(bytes) <= self.max_bytes
    }

    /// The byte limit.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Whether a request of `bytes` would fit an empty queue.
    pub fn could_ever_fit(&self, bytes: usize) -> bool {
        self.max_requests > 0 && bytes <= self.max_bytes
    }

    /// The error for a request that does not fit.
    pub fn full_error(&self, model: &str) -> InferError {
        InferError::QueueFull {
            model: model.to_string(),
            queued_requests: self.entries.len(),
            max_requests: self.max_requests,
            queued_bytes: self.bytes,
            max_bytes: self.max_bytes,
        }
    }

    /// Appends `entry` if it fits; gives it back otherwise.
    pub fn push(&mut self, entry: Entry) -> Result<(), Entry> {
        if !self.fits(entry.bytes) {
            return Err(entry);
        }
        self.bytes += entry.bytes;
        self.entries.push_back(entry);
        Ok(())
    }

    /// The queue as the policy sees it, in FIFO order.
    pub fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.entries.iter().map(|e| &e.pending)
    }

    /// Removes and returns the first `count` entries.
    pub fn take(&mut self, count: usize) -> Vec<Entry> {
        let taken: Vec<Entry> = self
            .entries
            .drain(..count.min(self.entries.len()))
            .collect();
        self.bytes -= taken.iter().map(|e| e.bytes).sum::<usize>();
        taken
    }

    /// Removes every entry.
    pub fn take_all(&mut self) -> Vec<Entry> {
        self.take(self.entries.len())
    }

    /// Removes the entries whose deadline passed at `now` or whose client went away.
    pub fn remove_dead(&mut self, now: Instant) -> Vec<(Entry, Dropped)> {
        if !self.entries.iter().any(|e| dead(e, now).is_some()) {
            return Vec::new();
        }
        let mut dropped = Vec::new();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for entry in self.entries.drain(..) {
            match dead(&entry, now) {
                Some(why) => {
                    self.bytes -= entry.bytes;
                    dropped.push((entry, why));
                }
                None => kept.push_back(entry),
            }
        }
        self.entries = kept;
        dropped
    }
}

fn dead(entry: &Entry, now: Instant) -> Option<Dropped> {
    if entry.reply.is_closed() {
        Some(Dropped::Cancelled)
    } else if entry.request.deadline.is_some_and(|d| d <= now) {
        Some(Dropped::Expired)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(
        bytes: usize,
        deadline: Option<Instant>,
    ) -> (
        Entry,
        oneshot::Receiver<Result<InferenceResponse, InferError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let now = Instant::now();
        let request = InferenceRequest {
            inputs: vec![],
            batch_size: 1,
            arrived: now,
            deadline,
        };
        (
            Entry {
                pending: Pending {
                    samples: 1,
                    arrived: now,
                    shape_key: 0,
                },
                request,
                bytes,
                reply,
            },
            rx,
        )
    }

    #[test]
    fn limits_requests_and_bytes() {
        let mut q = BoundedQueue::new(2, 100);
        let (a, _ra) = entry(60, None);
        let (b, _rb) = entry(50, None);
        assert!(q.push(a).is_ok());
        assert!(q.push(b).is_err(), "60 + 50 bytes exceed 100");
        let (c, _rc) = entry(40, None);
        let (d, _rd) = entry(0, None);
        assert!(q.push(c).is_ok());
        assert!(q.push(d).is_err(), "a third request exceeds 2");
        assert_eq!((q.len(), q.bytes()), (2, 100));
        let err = q.full_error("m").to_string();
        assert!(
            err.contains("2/2 requests") && err.contains("100/100 bytes"),
            "{err}"
        );
        assert_eq!(q.take(1).len(), 1);
        assert_eq!((q.len(), q.bytes()), (1, 40));
        assert_eq!(q.take_all().len(), 1);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn drops_expired_and_cancelled_entries_only() {
        let now = Instant::now();
        let mut q = BoundedQueue::new(10, 1000);
        let (live, _keep_live) = entry(1, Some(now + Duration::from_secs(60)));
        let (expired, _keep_expired) = entry(2, Some(now));
        let (cancelled, rx) = entry(4, None);
        drop(rx);
        for e in [live, expired, cancelled] {
            q.push(e).unwrap();
        }
        let dropped: Vec<Dropped> = q.remove_dead(now).into_iter().map(|(_, why)| why).collect();
        assert_eq!(dropped, [Dropped::Expired, Dropped::Cancelled]);
        assert_eq!((q.len(), q.bytes()), (1, 1));
        assert!(q.remove_dead(now).is_empty());
    }
}
