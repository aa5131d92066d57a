//! One issuing pass over a loaded sample set: per-sample bookkeeping, the completion handler
//! the SUT calls, the issue loop of each scenario (on its own OS thread), and the raw
//! measurements the results are computed from.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::breakdown::BreakdownSample;
use crate::diagnostics::Site;
use crate::logs::accuracy::AccuracyLog;
use crate::logs::detail::{DetailLog, Value};
use crate::logs::trace::{signed_ns, SampleTrace, TraceLog};
use crate::results::PerformanceResult;
use crate::schedule::{should_log_accuracy, PassKind, PlannedSample, QueryPlan};
use crate::settings::{EffectiveSettings, TestScenario};
use crate::sut::{CompletionHandler, QuerySample, ResponseSink, SampleResponse, ServerTiming, Sut};
use crate::timeline::Completion;

/// Locks a mutex, recovering the data if another thread panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writers completions go to, shared by all passes of a test.
#[derive(Clone)]
pub struct Outputs {
    pub detail: Arc<Mutex<DetailLog>>,
    pub accuracy: Arc<Mutex<AccuracyLog>>,
    pub trace: Option<Arc<Mutex<TraceLog>>>,
}

impl Outputs {
    /// Logs through the detail log with the current time; I/O errors are returned.
    pub fn detail(
        &self,
        f: impl FnOnce(&mut DetailLog, Instant) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        f(&mut lock(&self.detail), Instant::now())
    }
}

/// Latency slot of a sample that has not completed.
const NOT_DONE: i64 = i64::MIN;

/// Mutable per-pass state, guarded by one mutex.
struct PassInner {
    scheduled: Vec<Option<Instant>>,
    issued: Vec<Option<Instant>>,
    remaining: Vec<usize>,
    done: Vec<Option<Instant>>,
    /// Per sample position; [`NOT_DONE`] until completed.
    latencies: Vec<i64>,
    /// Server timings of the samples that reported them, by sample position.
    timings: Vec<(usize, ServerTiming)>,
    /// Completed samples whose accuracy-log and trace entries are written too; the pass ends
    /// only when this reaches the issued count, so no entry is written after the log closes.
    recorded: usize,
    queries_completed: usize,
    /// Largest latency of a sample that succeeded.
    max_latency: i64,
    max_completion: Instant,
    failed: u64,
    /// Positions of the samples that completed with an error, in completion order.
    failed_positions: Vec<usize>,
    /// The error of the first sample that failed.
    first_failure: Option<String>,
}

/// Immutable description of the pass plus its state.
pub struct PassState {
    kind: PassKind,
    scenario: TestScenario,
    plan: Arc<QueryPlan>,
    /// Query position of each sample position (compact: queries are far fewer than 2^32).
    sample_query: Vec<u32>,
    accuracy_log_offset: f64,
    accuracy_log_probability: f64,
    inner: Mutex<PassInner>,
    changed: Condvar,
}

impl PassState {
    /// Bookkeeping for `plan`.
    pub fn new(
        kind: PassKind,
        scenario: TestScenario,
        plan: Arc<QueryPlan>,
        offset: f64,
        probability: f64,
    ) -> Self {
        let n_samples = plan.sample_count();
        let mut sample_query = Vec::with_capacity(n_samples);
        for (qi, q) in plan.queries.iter().enumerate() {
            sample_query.extend(std::iter::repeat_n(qi as u32, q.samples.len()));
        }
        let n_queries = plan.queries.len();
        let remaining = plan.queries.iter().map(|q| q.samples.len()).collect();
        Self {
            kind,
            scenario,
            plan,
            sample_query,
            accuracy_log_offset: offset,
            accuracy_log_probability: probability,
            inner: Mutex::new(PassInner {
                scheduled: vec![None; n_queries],
                issued: vec![None; n_queries],
                remaining,
                done: vec![None; n_queries],
                latencies: vec![NOT_DONE; n_samples],
                timings: Vec::new(),
                recorded: 0,
                queries_completed: 0,
                max_latency: 0,
                max_completion: Instant::now(),
                failed: 0,
                failed_positions: Vec::new(),
                first_failure: None,
            }),
            changed: Condvar::new(),
        }
    }

    /// The planned sample at position `i` and its query position.
    fn sample(&self, i: usize) -> Option<(usize, &PlannedSample)> {
        let qi = *self.sample_query.get(i)? as usize;
        let query = &self.plan.queries[qi];
        let first = (query.samples.first()?.seq_id - self.plan.first_sample_id) as usize;
        Some((qi, query.samples.get(i - first)?))
    }
}

/// What one completion means for the logs, gathered under the lock and written after it.
struct Completed {
    /// Position of the response in the completion call.
    response: usize,
    seq_id: u64,
    query_pos: usize,
    index: usize,
    scheduled: Instant,
    issued: Instant,
    log_accuracy: bool,
}

/// The completion handler given to the SUT: routes completions to the current pass.
pub struct Router {
    current: Mutex<Option<Arc<PassState>>>,
    closed: AtomicBool,
    outputs: Outputs,
}

impl Router {
    /// A router with no active pass.
    pub fn new(outputs: Outputs) -> Self {
        Self {
            current: Mutex::new(None),
            closed: AtomicBool::new(false),
            outputs,
        }
    }

    /// Ignores every completion from now on (the test is over and its files are final).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        *lock(&self.current) = None;
    }

    /// Makes `pass` receive the completions from now on.
    pub fn install(&self, pass: Arc<PassState>) {
        *lock(&self.current) = Some(pass);
    }

    fn runtime_error(&self, at: Instant, site: Site, message: String) {
        // A failing detail log cannot be reported from the SUT's thread; the final flush in
        // the runner surfaces persistent I/O errors. Escaped: a SUT's error text may hold
        // quotes, which would make the line invalid JSON (the official texts have none).
        let _ =
            lock(&self.outputs.detail).error(at, site, "error_runtime", Value::Escaped(message));
    }
}

const OWN_FILE: &str = "pass.rs";

impl CompletionHandler for Router {
    fn complete(&self, completed_at: Instant, responses: Vec<SampleResponse>) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let Some(pass) = lock(&self.current).clone() else {
            for r in &responses {
                self.runtime_error(
                    completed_at,
                    Site::new(OWN_FILE, line!()),
                    format!(
                        "Received completion for sample id {} while no test was running.",
                        r.id
                    ),
                );
            }
            return;
        };
        let mut done = Vec::with_capacity(responses.len());
        let mut problems = Vec::new();
        {
            let mut inner = lock(&pass.inner);
            for (response, r) in responses.iter().enumerate() {
                let first_id = pass.plan.first_sample_id;
                if r.id < first_id {
                    problems.push((
                        Site::new("logging.cc", 379),
                        format!(
                            "Received completion for an old sample. Min expected id: {} Actual id: {}",
                            first_id, r.id
                        ),
                    ));
                    continue;
                }
                let i = (r.id - first_id) as usize;
                let Some((qi, planned)) = pass.sample(i) else {
                    problems.push((
                        Site::new(OWN_FILE, line!()),
                        format!("Received completion for an unknown sample id: {}", r.id),
                    ));
                    continue;
                };
                if inner.latencies[i] != NOT_DONE {
                    problems.push((
                        Site::new("logging.cc", 397),
                        "Attempted to complete a sample twice.".to_string(),
                    ));
                    continue;
                }
                let (Some(scheduled), Some(issued)) = (inner.scheduled[qi], inner.issued[qi])
                else {
                    problems.push((
                        Site::new(OWN_FILE, line!()),
                        format!(
                            "Received completion for sample id {} before it was issued.",
                            r.id
                        ),
                    ));
                    continue;
                };
                let latency = signed_ns(scheduled, completed_at);
                inner.latencies[i] = latency;
                if let Some(t) = r.server_timing {
                    inner.timings.push((i, t));
                }
                inner.max_completion = inner.max_completion.max(completed_at);
                inner.remaining[qi] -= 1;
                if inner.remaining[qi] == 0 {
                    inner.done[qi] = Some(completed_at);
                    inner.queries_completed += 1;
                }
                if let Some(message) = &r.error {
                    // A failed sample never produced a result: it is counted, and left out
                    // of the latencies and throughput (see `collect`).
                    inner.failed += 1;
                    inner.failed_positions.push(i);
                    if inner.first_failure.is_none() {
                        inner.first_failure = Some(message.clone());
                    }
                    problems.push((
                        Site::new(OWN_FILE, line!()),
                        format!(
                            "Sample {} (QSL index {}) failed: {}",
                            r.id, planned.index, message
                        ),
                    ));
                } else {
                    inner.max_latency = inner.max_latency.max(latency);
                }
                done.push(Completed {
                    response,
                    seq_id: r.id,
                    query_pos: qi,
                    index: planned.index,
                    scheduled,
                    issued,
                    log_accuracy: should_log_accuracy(
                        pass.kind,
                        planned.accuracy_log_val,
                        pass.accuracy_log_offset,
                        pass.accuracy_log_probability,
                    ),
                });
            }
        }
        pass.changed.notify_all();
        for (site, message) in problems {
            self.runtime_error(completed_at, site, message);
        }
        self.log_completions(&pass, completed_at, &responses, &done);
        lock(&pass.inner).recorded += done.len();
        pass.changed.notify_all();
    }
}

impl Router {
    fn log_completions(
        &self,
        pass: &PassState,
        completed_at: Instant,
        responses: &[SampleResponse],
        done: &[Completed],
    ) {
        if done.iter().any(|c| c.log_accuracy) {
            let mut acc = lock(&self.outputs.accuracy);
            for c in done.iter().filter(|c| c.log_accuracy) {
                if let Err(e) = acc.log(c.seq_id, c.index, &responses[c.response].data) {
                    drop(acc);
                    self.runtime_error(
                        completed_at,
                        Site::new(OWN_FILE, line!()),
                        format!("Cannot write the accuracy log: {e}"),
                    );
                    break;
                }
            }
        }
        if let Some(trace) = &self.outputs.trace {
            let mut trace = lock(trace);
            for c in done {
                let t = SampleTrace {
                    sample_seq: c.seq_id,
                    query_seq: pass.plan.queries[c.query_pos].seq_id,
                    sample_idx: c.index,
                    scheduled: c.scheduled,
                    issued: c.issued,
                    completed: completed_at,
                };
                let written = if pass.scenario == TestScenario::Server {
                    trace.server_latency(&t).and_then(|()| trace.sample(&t))
                } else {
                    trace.sample(&t)
                };
                if written.is_err() {
                    break;
                }
            }
        }
    }
}

/// How the issue loop ended.
pub struct IssueStats {
    pub start: Instant,
    pub start_system: SystemTime,
    pub queries_issued: usize,
    pub expected_latencies: usize,
    pub ran_out_of_generated_queries: bool,
}

/// Sleeps until `deadline`, spinning for the last 100 µs for accuracy.
fn sleep_until(deadline: Instant) {
    const SPIN: Duration = Duration::from_micros(100);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Everything the issue thread needs.
pub struct IssueJob {
    pub sut: Arc<dyn Sut>,
    pub sink: ResponseSink,
    pub pass: Arc<PassState>,
    pub settings: EffectiveSettings,
    pub outputs: Outputs,
    /// Stops issuing when set ([`super::RunOptions::stop`]).
    pub stop: Arc<AtomicBool>,
}

/// The issue loop (official `IssueQueriesInternal` with one thread).
pub fn issue_queries(job: IssueJob) -> IssueStats {
    let IssueJob {
        sut,
        sink,
        pass,
        settings,
        outputs,
        stop,
    } = job;
    let plan = pass.plan.clone();
    let scenario = settings.scenario;
    let accuracy = pass.kind == PassKind::Accuracy;
    let start_system = SystemTime::now();
    let start = Instant::now();
    let mut ran_out = scenario != TestScenario::Server;
    let mut queries_issued = 0usize;
    let mut expected = 0usize;
    let n = plan.queries.len();
    let mut qi = 0usize;
    let log_error = |message: String, line: u32| {
        let _ = outputs.detail(|d, at| {
            d.error(
                at,
                Site::new("issue_query_controller.cc", line),
                "error_runtime",
                message,
            )
        });
    };
    while qi < n {
        if stop.load(Ordering::SeqCst) {
            let _ = outputs.detail(|d, at| {
                d.error(
                    at,
                    Site::new(OWN_FILE, line!()),
                    "error_runtime",
                    format!("IssueQueryThread 0 Ending early: interrupted. query_count {queries_issued}"),
                )
            });
            ran_out = false;
            break;
        }
        let query = &plan.queries[qi];
        let now;
        let mut last = qi;
        {
            let mut inner = lock(&pass.inner);
            match scenario {
                TestScenario::SingleStream | TestScenario::MultiStream => {
                    if qi > 0 {
                        inner = pass
                            .changed
                            .wait_while(inner, |s| s.done[qi - 1].is_none())
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    now = Instant::now();
                    inner.scheduled[qi] = Some(now);
                }
                TestScenario::Server => {
                    let scheduled =
                        start + Duration::from_nanos(query.scheduled_delta_ns.max(0) as u64);
                    drop(inner);
                    sleep_until(scheduled);
                    inner = lock(&pass.inner);
                    now = Instant::now();
                    inner.scheduled[qi] = Some(scheduled);
                }
                TestScenario::Offline => {
                    now = Instant::now();
                    inner.scheduled[qi] = Some(start);
                }
            }
            inner.issued[qi] = Some(now);
            if scenario == TestScenario::Server && settings.requested.server_coalesce_queries {
                while last + 1 < n {
                    let next = start
                        + Duration::from_nanos(
                            plan.queries[last + 1].scheduled_delta_ns.max(0) as u64
                        );
                    if now < next {
                        break;
                    }
                    last += 1;
                    inner.scheduled[last] = Some(next);
                    inner.issued[last] = Some(now);
                }
            }
        }
        let samples: Vec<QuerySample> = plan.queries[qi..=last]
            .iter()
            .flat_map(|q| q.samples.iter())
            .map(|s| QuerySample {
                id: s.seq_id,
                index: s.index,
            })
            .collect();
        expected += samples.len();
        sut.issue_query(samples, sink.clone());
        queries_issued += last - qi + 1;
        qi = last + 1;
        if accuracy {
            continue;
        }
        let duration = now.duration_since(start);
        if scenario == TestScenario::Server {
            if settings.max_async_queries != 0 {
                let outstanding =
                    queries_issued.saturating_sub(lock(&pass.inner).queries_completed);
                if outstanding as u64 > settings.max_async_queries {
                    log_error(
                        format!(
                            "IssueQueryThread 0 Ending early: Too many outstanding queries. issued {queries_issued} outstanding {outstanding}"
                        ),
                        465,
                    );
                    break;
                }
            }
        } else if queries_issued as u64 >= settings.min_query_count
            && duration >= Duration::from_millis(settings.target_duration_ms)
        {
            let _ = outputs.detail(|d, at| {
                d.log(
                    at,
                    Site::new("issue_query_controller.cc", 482),
                    "generic_message",
                    "Ending naturally: Minimum query count and test duration met.",
                )
            });
            ran_out = false;
            break;
        }
        if settings.max_query_count != 0 && queries_issued as u64 >= settings.max_query_count {
            log_error(
                format!("IssueQueryThread 0 Ending early: Max query count reached. query_count {queries_issued}"),
                504,
            );
            ran_out = false;
            break;
        }
        if settings.max_duration_ms != 0
            && duration > Duration::from_millis(settings.max_duration_ms)
        {
            log_error(
                format!(
                    "IssueQueryThread 0 Ending early: Max test duration reached. duration_ns {}",
                    duration.as_nanos()
                ),
                524,
            );
            ran_out = false;
            break;
        }
    }
    IssueStats {
        start,
        start_system,
        queries_issued,
        expected_latencies: expected,
        ran_out_of_generated_queries: ran_out,
    }
}

/// Measurements of a finished pass.
pub struct PassMeasurements {
    pub result: PerformanceResult,
    pub max_completion: Instant,
    pub failed: u64,
    /// Issued samples that reported server timings.
    pub breakdown: Vec<BreakdownSample>,
    /// When each successful sample completed (performance passes only).
    pub completions: Vec<Completion>,
}

/// Waits until every issued sample completed, then collects the measurements.
pub fn collect(pass: &PassState, stats: &IssueStats) -> PassMeasurements {
    let inner = pass
        .changed
        .wait_while(lock(&pass.inner), |s| s.recorded < stats.expected_latencies)
        .unwrap_or_else(PoisonError::into_inner);
    let issued = stats.expected_latencies;
    let latency = |i: usize| match inner.latencies[i] {
        NOT_DONE => 0,
        l => l,
    };
    // Failed samples (and, in MultiStream, the queries they belong to) are left out of every
    // statistic; the mask exists only when something failed.
    let failed_mask = (!inner.failed_positions.is_empty()).then(|| {
        let mut mask = vec![false; issued];
        for &i in inner.failed_positions.iter().filter(|&&i| i < issued) {
            mask[i] = true;
        }
        mask
    });
    let failed = |i: usize| failed_mask.as_ref().is_some_and(|m| m[i]);
    let mut failed_queries: Vec<u32> = inner
        .failed_positions
        .iter()
        .filter(|&&i| i < issued)
        .map(|&i| pass.sample_query[i])
        .collect();
    failed_queries.sort_unstable();
    failed_queries.dedup();
    let sample_latencies: Vec<i64> = (0..issued).filter(|&i| !failed(i)).map(latency).collect();
    let failed_samples = (issued - sample_latencies.len()) as u64;
    let breakdown = inner
        .timings
        .iter()
        .filter(|(i, _)| *i < issued)
        .map(|&(i, timing)| BreakdownSample {
            latency_ns: latency(i),
            timing,
        })
        .collect();
    let completions = if pass.kind == PassKind::Performance {
        (0..issued)
            .filter(|&i| !failed(i))
            .filter_map(|i| {
                let scheduled = inner.scheduled[pass.sample_query[i] as usize]?;
                let latency_ns = latency(i);
                Some(Completion {
                    at_ns: signed_ns(stats.start, scheduled).saturating_add(latency_ns),
                    latency_ns,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let secs = |t: Option<Instant>| t.map_or(0.0, |t| signed_ns(stats.start, t) as f64 / 1e9);
    let last = stats.queries_issued.saturating_sub(1);
    let plan = &pass.plan;
    let mut result = PerformanceResult {
        sample_latencies,
        query_latencies: Vec::new(),
        queries_issued: stats.queries_issued as u64,
        max_latency: inner.max_latency as f64 / 1e9,
        final_query_scheduled_time: plan
            .queries
            .get(last)
            .map_or(0.0, |q| q.scheduled_delta_ns as f64 / 1e9),
        final_query_issued_time: secs(inner.issued.get(last).copied().flatten()),
        final_query_all_samples_done_time: secs(inner.done.get(last).copied().flatten()),
        failed_samples,
        failed_queries: failed_queries.len() as u64,
        first_failure: inner.first_failure.clone(),
    };
    if pass.scenario == TestScenario::MultiStream {
        result.query_latencies = (0..stats.queries_issued)
            .filter(|&q| failed_queries.binary_search(&(q as u32)).is_err())
            .map(|q| match (inner.scheduled[q], inner.done[q]) {
                (Some(s), Some(d)) => signed_ns(s, d),
                _ => 0,
            })
            .collect();
    }
    PassMeasurements {
        result,
        max_completion: inner.max_completion,
        failed: inner.failed,
        breakdown,
        completions,
    }
}
