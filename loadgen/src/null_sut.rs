//! An in-process SUT and QSL for self-tests: the SUT answers each sample with the 4 bytes of
//! `float32(index % 1000)` (like the official probe), either at once or from a worker thread that
//! sleeps a fixed time per chunk of samples.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sut::{Qsl, QslError, QuerySample, ResponseSink, SampleResponse, Sut};

/// The response payload for a QSL index.
pub fn payload(index: usize) -> Vec<u8> {
    ((index % 1000) as f32).to_le_bytes().to_vec()
}

fn respond(samples: &[QuerySample]) -> Vec<SampleResponse> {
    samples
        .iter()
        .map(|s| SampleResponse {
            id: s.id,
            data: payload(s.index),
            server_timing: None,
            error: None,
        })
        .collect()
}

type Work = (Vec<QuerySample>, ResponseSink);

/// The null SUT.
pub struct NullSut {
    name: String,
    worker: Option<Mutex<Sender<Work>>>,
}

impl NullSut {
    /// Completes every query inside `issue_query`.
    pub fn immediate(name: &str) -> Self {
        Self {
            name: name.to_string(),
            worker: None,
        }
    }

    /// Completes queries in order from one worker thread, sleeping `delay` before each chunk of
    /// `chunk` samples (the probe uses 1 ms per 8 samples).
    pub fn delayed(name: &str, delay: Duration, chunk: usize) -> Self {
        let (tx, rx) = channel::<Work>();
        let chunk = chunk.max(1);
        std::thread::spawn(move || {
            while let Ok((samples, sink)) = rx.recv() {
                for part in samples.chunks(chunk) {
                    std::thread::sleep(delay);
                    sink.complete(respond(part));
                }
            }
        });
        Self {
            name: name.to_string(),
            worker: Some(Mutex::new(tx)),
        }
    }
}

impl Sut for NullSut {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn issue_query(&self, samples: Vec<QuerySample>, sink: ResponseSink) {
        match &self.worker {
            None => sink.complete(respond(&samples)),
            Some(tx) => {
                let tx = tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Err(std::sync::mpsc::SendError((samples, sink))) = tx.send((samples, sink)) {
                    // The worker is gone: answer inline rather than never.
                    sink.complete(respond(&samples));
                }
            }
        }
    }
}

/// A QSL with fixed counts that keeps nothing in memory; it records load/unload calls.
pub struct MemoryQsl {
    name: String,
    total: usize,
    performance: usize,
    loads: Arc<Mutex<Vec<Vec<usize>>>>,
}

impl MemoryQsl {
    /// A QSL of `total` samples of which `performance` fit in memory.
    pub fn new(name: &str, total: usize, performance: usize) -> Self {
        Self {
            name: name.to_string(),
            total,
            performance,
            loads: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The index lists passed to `load_samples_to_ram`, in order.
    pub fn loads(&self) -> Vec<Vec<usize>> {
        self.loads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Qsl for MemoryQsl {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn total_sample_count(&self) -> usize {
        self.total
    }
    fn performance_sample_count(&self) -> usize {
        self.performance
    }
    fn load_samples_to_ram(&self, indices: &[usize]) -> Result<(), QslError> {
        if let Some(bad) = indices.iter().find(|&&i| i >= self.total) {
            return Err(QslError(format!(
                "index {bad} is outside the {} samples",
                self.total
            )));
        }
        self.loads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(indices.to_vec());
        Ok(())
    }
    fn unload_samples_from_ram(&self, _indices: &[usize]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sut::CompletionHandler;
    use std::time::Instant;

    struct Collect(Mutex<Vec<SampleResponse>>);
    impl CompletionHandler for Collect {
        fn complete(&self, _at: Instant, responses: Vec<SampleResponse>) {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(responses);
        }
    }

    #[test]
    fn answers_with_index_payload() {
        assert_eq!(payload(4867), vec![0x00, 0xC0, 0x58, 0x44]);
        let c = Arc::new(Collect(Mutex::new(Vec::new())));
        let sut = NullSut::immediate("null");
        sut.issue_query(
            vec![QuerySample { id: 7, index: 1001 }],
            ResponseSink::new(c.clone()),
        );
        let got =
            c.0.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, 7);
        assert_eq!(got[0].data, 1.0f32.to_le_bytes().to_vec());
    }

    #[test]
    fn qsl_rejects_out_of_range() {
        let q = MemoryQsl::new("q", 10, 5);
        assert!(q.load_samples_to_ram(&[1, 2]).is_ok());
        assert!(q.load_samples_to_ram(&[10]).is_err());
        assert_eq!(q.loads(), vec![vec![1, 2]]);
    }
}
