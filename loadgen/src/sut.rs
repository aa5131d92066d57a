//! The system-under-test and query-sample-library contracts, as the official LoadGen defines them.
//! The runner (the LoadGen) issues queries to a [`Sut`] from its own thread and receives completions
//! through a [`ResponseSink`]; the dataset behind the SUT is a [`Qsl`].

use std::sync::Arc;
use std::time::Instant;

/// One sample of an issued query: `id` is LoadGen's opaque token (the global sample sequence
/// number), `index` the QSL sample index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuerySample {
    pub id: u64,
    pub index: usize,
}

/// Server-side timings of one response, read from the KServe response parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerTiming {
    pub queue_ns: u64,
    pub compute_ns: u64,
    pub batch_size: u32,
}

/// The answer for one sample. `error` set means the request failed; the sample still completes.
#[derive(Debug, Clone, Default)]
pub struct SampleResponse {
    pub id: u64,
    pub data: Vec<u8>,
    pub server_timing: Option<ServerTiming>,
    pub error: Option<String>,
}

/// Receives completions (LoadGen's `QuerySamplesComplete`). One timestamp is taken per call and
/// shared by every response in it.
pub trait CompletionHandler: Send + Sync {
    /// Records `responses` as completed at `completed_at`.
    fn complete(&self, completed_at: Instant, responses: Vec<SampleResponse>);
}

/// Cloneable handle the SUT uses to complete samples from any thread or task.
#[derive(Clone)]
pub struct ResponseSink(Arc<dyn CompletionHandler>);

impl ResponseSink {
    /// A sink that hands completions to `handler`.
    pub fn new(handler: Arc<dyn CompletionHandler>) -> Self {
        Self(handler)
    }

    /// Completes these samples now (`QuerySamplesComplete`).
    pub fn complete(&self, responses: Vec<SampleResponse>) {
        self.0.complete(Instant::now(), responses);
    }
}

/// The system under test. `issue_query` must not block: it hands the query off and returns.
pub trait Sut: Send + Sync {
    /// Name reported as the SUT name in the logs.
    fn name(&self) -> String;
    /// Starts serving `samples`; each one must eventually be completed through `sink`.
    fn issue_query(&self, samples: Vec<QuerySample>, sink: ResponseSink);
    /// Called once after the last query of a run was issued.
    fn flush_queries(&self) {}
}

/// Why samples could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot load samples: {0}")]
pub struct QslError(pub String);

/// The query sample library (the dataset side).
pub trait Qsl: Send + Sync {
    /// Name reported as the QSL name in the logs.
    fn name(&self) -> String;
    /// Number of samples in the dataset.
    fn total_sample_count(&self) -> usize;
    /// Number of samples that fit in RAM at once (the size of a performance-run set).
    fn performance_sample_count(&self) -> usize;
    /// Loads the samples at `indices` before queries use them.
    fn load_samples_to_ram(&self, indices: &[usize]) -> Result<(), QslError>;
    /// Releases the samples at `indices`.
    fn unload_samples_from_ram(&self, indices: &[usize]);
}
