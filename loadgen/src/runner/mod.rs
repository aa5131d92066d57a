//! `start_test`: the official `StartTest` sequence (identity and settings logging, audit.config,
//! accuracy / performance / find-peak modes) driving a [`Sut`] and [`Qsl`], writing the
//! official log files and returning what a command line needs to report.

mod pass;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::breakdown::{self, BreakdownSample};
use crate::config::{ConfType, ConfigSession};
use crate::diagnostics::{Diagnostic, Site};
use crate::logs::accuracy::AccuracyLog;
use crate::logs::detail::DetailLog;
use crate::logs::format::fmt_g;
use crate::logs::trace::TraceLog;
use crate::logs::{report, summary};
use crate::observer::RunObserver;
use crate::results::PerformanceSummary;
use crate::schedule::{self, LoadableSet, PassKind, SequenceGen};
use crate::settings::{EffectiveSettings, LogSettings, TestMode, TestScenario, TestSettings};
use crate::sut::{Qsl, QslError, ResponseSink, Sut};
use crate::timeline::Timeline;

use pass::{collect, issue_queries, lock, IssueJob, Outputs, PassState, Router};

/// Why a test could not run to the end. The log files written so far are still flushed.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Qsl(#[from] QslError),
    #[error("cannot generate queries: {0}")]
    Schedule(#[from] schedule::ScheduleError),
    #[error("the query issuing thread failed: {0}")]
    IssueThread(String),
    #[error("{0} is not supported: the SUT contract has no per-token completions")]
    Unsupported(&'static str),
    #[error("interrupted: the run was stopped before it finished; the logs written so far are complete files")]
    Interrupted,
}

/// Extra inputs of [`start_test`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Compliance override file, applied when it exists (official: `audit.config` in the CWD).
    pub audit_config: PathBuf,
    /// Lines produced before the test (config parsing); they open the detail log.
    pub pre_test_diagnostics: Vec<Diagnostic>,
    /// Set (e.g. by a SIGINT handler) to stop the test early: the running pass stops issuing,
    /// waits for what is outstanding and is reported; later passes are skipped. The log files are
    /// finished either way.
    pub stop: Arc<AtomicBool>,
    /// The program (name and version) that runs the test, named as the author of the logs in
    /// `loadgen_version` [default: `loadgen <crate version>`].
    pub writer: String,
    /// Reports on the system under test around the test (e.g. device telemetry).
    pub observer: Option<Arc<dyn RunObserver>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            audit_config: PathBuf::from("audit.config"),
            pre_test_diagnostics: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            writer: crate::logs::version::default_writer(),
            observer: None,
        }
    }
}

/// The official metric of a performance run.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Detail-log key the checker reads.
    pub key: &'static str,
    pub value: f64,
    pub unit: &'static str,
}

/// Where the files are.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPaths {
    pub summary: PathBuf,
    pub detail: PathBuf,
    pub accuracy: PathBuf,
    pub trace: Option<PathBuf>,
    /// This client's latency breakdown, when any sample carried server timings.
    pub breakdown: Option<PathBuf>,
    /// This client's timeline of the performance pass (`timeline.rs`), when one ran.
    pub timeline: Option<PathBuf>,
}

/// What happened in a test.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// The reported performance pass (performance, submission and find-peak modes).
    pub performance: Option<PerformanceSummary>,
    pub paths: LogPaths,
    /// Samples completed with an error by the SUT (all passes).
    pub failed_samples: u64,
    /// The error of the first sample that failed (any pass).
    pub first_failure: Option<String>,
    /// Entries in the accuracy log.
    pub accuracy_entries: u64,
    pub errors: u64,
    pub warnings: u64,
    /// The summary file content.
    pub summary_text: String,
    /// The breakdown file content.
    pub breakdown_text: Option<String>,
}

impl TestOutcome {
    /// `Some(true)` when the performance result is VALID; `None` for accuracy-only runs.
    pub fn valid(&self) -> Option<bool> {
        self.performance
            .as_ref()
            .map(PerformanceSummary::all_constraints_met)
    }

    /// The headline metric the submission checker reads.
    pub fn metric(&self) -> Option<Metric> {
        let s = self.performance.as_ref()?;
        let value = match s.settings.scenario {
            TestScenario::SingleStream => s.early_stopping_latency_ss as f64,
            TestScenario::MultiStream => s.early_stopping_latency_ms as f64,
            TestScenario::Server => summary::completed_samples_per_sec(s),
            TestScenario::Offline => summary::samples_per_second(s),
        };
        let (key, unit) = metric_key(s.settings.scenario);
        Some(Metric { key, value, unit })
    }
}

/// The detail-log key and the unit of a scenario's headline metric.
pub fn metric_key(scenario: TestScenario) -> (&'static str, &'static str) {
    match scenario {
        TestScenario::SingleStream => ("early_stopping_latency_ss", "ns"),
        TestScenario::MultiStream => ("early_stopping_latency_ms", "ns"),
        TestScenario::Server => ("result_completed_samples_per_sec", "samples/s"),
        TestScenario::Offline => ("result_samples_per_second", "samples/s"),
    }
}

/// The log file paths for these settings (`<outdir>/<prefix>[<datetime>_]<name><suffix>.<ext>`).
pub fn log_paths(log: &LogSettings, test_date_time: &str) -> LogPaths {
    let mut prefix = log.prefix.clone();
    if log.prefix_with_datetime {
        prefix += test_date_time;
        prefix.push('_');
    }
    let file = |name: &str, ext: &str| {
        log.outdir
            .join(format!("{prefix}{name}{}.{ext}", log.suffix))
    };
    LogPaths {
        summary: file("summary", "txt"),
        detail: file("detail", "txt"),
        accuracy: file("accuracy", "json"),
        trace: log.enable_trace.then(|| file("trace", "json")),
        breakdown: Some(file("breakdown", "txt")),
        timeline: Some(file("timeline", "json")),
    }
}

/// Runs a complete test (official `StartTest`) and writes the log files.
pub fn start_test(
    sut: Arc<dyn Sut>,
    qsl: Arc<dyn Qsl>,
    settings: &TestSettings,
    log_settings: &LogSettings,
    options: &RunOptions,
) -> Result<TestOutcome, LoadgenError> {
    if settings.use_token_latencies {
        return Err(LoadgenError::Unsupported("use_token_latencies"));
    }
    if settings.infer_token_latencies {
        return Err(LoadgenError::Unsupported("infer_token_latencies"));
    }
    let test_date_time = chrono::Local::now().format("%FT%TZ").to_string();
    let mut paths = log_paths(log_settings, &test_date_time);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadgenError::Io { path, source }
    };
    std::fs::create_dir_all(&log_settings.outdir).map_err(io(&log_settings.outdir))?;
    let origin = Instant::now();
    let detail = DetailLog::create(&paths.detail, origin, log_settings.copy_detail_to_stdout)
        .map_err(io(&paths.detail))?;
    let accuracy = AccuracyLog::create(&paths.accuracy).map_err(io(&paths.accuracy))?;
    let trace = match &paths.trace {
        Some(p) => Some(Arc::new(Mutex::new(
            TraceLog::create(p, origin).map_err(io(p))?,
        ))),
        None => None,
    };
    let outputs = Outputs {
        detail: Arc::new(Mutex::new(detail)),
        accuracy: Arc::new(Mutex::new(accuracy)),
        trace,
    };
    let router = Arc::new(Router::new(outputs.clone()));
    let mut test = Test {
        sut,
        qsl,
        sink: ResponseSink::new(router.clone()),
        router,
        outputs: outputs.clone(),
        seq: SequenceGen::new(),
        performance: None,
        failed: 0,
        first_failure: None,
        breakdown: (0, Vec::new()),
        timeline: None,
        sut_name: String::new(),
        detail_path: paths.detail.clone(),
        stop: options.stop.clone(),
    };
    let run = test.run(settings, options, &test_date_time);
    test.router.close();

    // Finish every file even when the run failed.
    let perf_text = test
        .performance
        .as_ref()
        .map(summary::render_performance)
        .unwrap_or_default();
    let (warnings, errors) = {
        let mut d = lock(&outputs.detail);
        if let Some(observer) = &options.observer {
            let site = Site::new("runner/mod.rs", line!());
            let _ = d.observations(Instant::now(), site, &observer.finished());
        }
        if let Err(e) = &run {
            let _ = d.error(
                Instant::now(),
                Site::new("runner/mod.rs", line!()),
                "error_runtime",
                e.to_string(),
            );
        }
        (d.warning_count(), d.error_count())
    };
    let mut summary_text = perf_text + &summary::render_footer(warnings, errors);
    if let Some(section) = options.observer.as_ref().and_then(|o| o.summary()) {
        summary_text.push('\n');
        summary_text.push_str(&section);
    }
    std::fs::write(&paths.summary, &summary_text).map_err(io(&paths.summary))?;
    let breakdown_text = if test.performance.is_some() {
        breakdown::render(test.breakdown.0, &test.breakdown.1)
    } else {
        None
    };
    match (&breakdown_text, &paths.breakdown) {
        (Some(text), Some(p)) => std::fs::write(p, text).map_err(io(p))?,
        _ => paths.breakdown = None,
    }
    match (test.timeline.take(), &paths.timeline) {
        (Some(timeline), Some(p)) => {
            let json = serde_json::to_vec(&timeline).map_err(|e| io(p)(e.into()))?;
            std::fs::write(p, json).map_err(io(p))?;
        }
        _ => paths.timeline = None,
    }
    if log_settings.copy_summary_to_stdout {
        print!("{summary_text}");
        if let Some(text) = &breakdown_text {
            print!("\n{text}");
        }
    }
    let failed_samples = test.failed;
    let first_failure = test.first_failure.take();
    let performance = test.performance.take();
    drop(test);
    let accuracy_entries = {
        let mut acc = lock(&outputs.accuracy);
        let entries = acc.entries();
        acc.finish().map_err(io(&paths.accuracy))?;
        entries
    };
    if let (Some(trace), Some(p)) = (&outputs.trace, &paths.trace) {
        lock(trace).finish().map_err(io(p))?;
    }
    lock(&outputs.detail).flush().map_err(io(&paths.detail))?;
    run?;
    Ok(TestOutcome {
        performance,
        paths,
        failed_samples,
        first_failure,
        accuracy_entries,
        errors,
        warnings,
        summary_text,
        breakdown_text,
    })
}

/// State of one running test.
struct Test {
    sut: Arc<dyn Sut>,
    qsl: Arc<dyn Qsl>,
    sink: ResponseSink,
    router: Arc<Router>,
    outputs: Outputs,
    seq: SequenceGen,
    performance: Option<PerformanceSummary>,
    failed: u64,
    first_failure: Option<String>,
    /// Sample count and timed samples of the last performance pass.
    breakdown: (usize, Vec<BreakdownSample>),
    /// The last performance pass over time.
    timeline: Option<Timeline>,
    sut_name: String,
    detail_path: PathBuf,
    /// [`RunOptions::stop`].
    stop: Arc<AtomicBool>,
}

const LOADGEN: &str = "loadgen.cc";

impl Test {
    fn log(
        &self,
        f: impl FnOnce(&mut DetailLog, Instant) -> std::io::Result<()>,
    ) -> Result<(), LoadgenError> {
        self.outputs.detail(f).map_err(|source| LoadgenError::Io {
            path: self.detail_path.clone(),
            source,
        })
    }

    fn message(&self, line: u32, text: &str) -> Result<(), LoadgenError> {
        self.log(|d, at| d.log(at, Site::new(LOADGEN, line), "generic_message", text))
    }

    fn run(
        &mut self,
        requested: &TestSettings,
        options: &RunOptions,
        test_date_time: &str,
    ) -> Result<(), LoadgenError> {
        let pre = Instant::now();
        self.sut_name = self.sut.name();
        let name_ns = pre.elapsed().as_nanos() as u64;
        for d in &options.pre_test_diagnostics {
            self.log(|log, _| log.diagnostic(d))?;
        }
        self.log(|d, at| d.log_version(at, &options.writer))?;
        let qsl = self.qsl.clone();
        self.log(|d, at| {
            let site = |line| Site::new(LOADGEN, line);
            d.log(at, site(1211), "test_datetime", test_date_time)?;
            d.log(at, site(1212), "sut_name", self.sut_name.as_str())?;
            d.log(at, site(1213), "get_sut_name_duration_ns", name_ns)?;
            d.log(at, site(1214), "qsl_name", qsl.name())?;
            d.log(
                at,
                site(1215),
                "qsl_reported_total_count",
                qsl.total_sample_count() as u64,
            )?;
            d.log(
                at,
                site(1216),
                "qsl_reported_performance_count",
                qsl.performance_sample_count() as u64,
            )
        })?;

        let mut settings = requested.clone();
        if options.audit_config.exists() {
            self.log(|d, at| {
                d.warning(
                    at,
                    Site::new(LOADGEN, 1235),
                    "warning_generic_message",
                    "Found Audit Config file (audit.config). Overriding TestSettings from audit.config file.",
                )
            })?;
            let mut session = ConfigSession::new();
            let scenario = settings.scenario.as_str();
            // Errors are already in the session's diagnostics; the settings stay as they were.
            let _ = session.apply_file(
                &mut settings,
                &options.audit_config,
                "*",
                scenario,
                ConfType::AuditConfig,
            );
            for d in &session.diagnostics {
                self.log(|log, _| log.diagnostic(d))?;
            }
        }
        if settings.test05 {
            self.log(|d, at| {
                d.warning(
                    at,
                    Site::new(LOADGEN, 1256),
                    "warning_generic_message",
                    "Test05 flag detected Overriding random seeds",
                )
            })?;
            settings.mode = TestMode::PerformanceOnly;
            settings.qsl_rng_seed = requested.test05_qsl_rng_seed;
            settings.sample_index_rng_seed = requested.test05_sample_index_rng_seed;
            settings.schedule_rng_seed = requested.test05_schedule_rng_seed;
        }
        let (eff, diags) = EffectiveSettings::new(
            &settings,
            self.qsl.performance_sample_count() as u64,
            self.qsl.total_sample_count() as u64,
        );
        for d in &diags {
            self.log(|log, _| log.diagnostic(d))?;
        }
        self.log(|d, at| report::log_requested(d, at, &settings))?;
        self.log(|d, at| report::log_effective(d, at, &eff))?;

        if let Some(observer) = &options.observer {
            let site = Site::new("runner/mod.rs", line!());
            self.log(|d, at| d.observations(at, site, &observer.started()))?;
        }
        match eff.mode {
            TestMode::SubmissionRun => {
                self.accuracy_mode(&eff)?;
                self.performance_mode(&eff)?;
            }
            TestMode::AccuracyOnly => self.accuracy_mode(&eff)?,
            TestMode::PerformanceOnly => self.performance_mode(&eff)?,
            TestMode::FindPeakPerformance => self.find_peak_mode(&eff)?,
        }
        Ok(())
    }

    fn load(&self, set: &LoadableSet) -> Result<(), LoadgenError> {
        self.log(|d, at| {
            d.log(
                at,
                Site::new(LOADGEN, 608),
                "loaded_qsl_set",
                set.samples.clone(),
            )
        })?;
        self.qsl.load_samples_to_ram(&set.samples)?;
        Ok(())
    }

    fn sets(&self, eff: &EffectiveSettings, count: u64) -> Vec<LoadableSet> {
        schedule::generate_loadable_sets(eff, self.qsl.total_sample_count() as u64, count)
    }

    fn accuracy_mode(&mut self, eff: &EffectiveSettings) -> Result<(), LoadgenError> {
        self.message(1101, "Starting accuracy mode")?;
        for set in self.sets(eff, eff.accuracy_sample_count) {
            self.load(&set)?;
            self.run_pass(eff, PassKind::Accuracy, &set)?;
            self.qsl.unload_samples_from_ram(&set.samples);
        }
        Ok(())
    }

    fn performance_mode(&mut self, eff: &EffectiveSettings) -> Result<(), LoadgenError> {
        self.message(848, "Starting performance mode")?;
        let sets = self.sets(eff, eff.performance_sample_count);
        let Some(set) = sets.first() else {
            return Err(schedule::ScheduleError::EmptySet.into());
        };
        self.load(set)?;
        let pc_start = Instant::now();
        let sc_start = SystemTime::now();
        if eff.print_timestamps {
            println!(
                "Loadgen :: Perf mode start. system_clock Timestamp = {}",
                unix_seconds(sc_start)
            );
        }
        let summary = self.run_pass(eff, PassKind::Performance, set)?;
        self.check_clocks(eff, pc_start, sc_start)?;
        self.report(summary)?;
        self.qsl.unload_samples_from_ram(&set.samples);
        Ok(())
    }

    /// Compares the monotonic and wall clocks over the pass (official PerfClock check).
    fn check_clocks(
        &self,
        eff: &EffectiveSettings,
        pc_start: Instant,
        sc_start: SystemTime,
    ) -> Result<(), LoadgenError> {
        let sc_stop = SystemTime::now();
        let pc_ms = pc_start.elapsed().as_millis() as i64;
        let sc_ms = sc_stop.duration_since(sc_start).map_or_else(
            |e| -(e.duration().as_millis() as i64),
            |d| d.as_millis() as i64,
        );
        let ratio = pc_ms as f32 / sc_ms as f32;
        if eff.print_timestamps {
            println!(
                "Loadgen :: Perf mode stop. systme_clock Timestamp = {}",
                unix_seconds(sc_stop)
            );
            println!("Loadgen :: PerfClock Perf duration = {pc_ms}ms");
            println!("Loadgen :: system_clock Perf duration = {sc_ms}ms");
            println!("Loadgen :: PerfClock/system_clock ratio = {ratio:.4}");
        }
        let text = |pct: &str| {
            format!(
                "PerfClock and system_clock differ by more than {pct}!  pc_sc_ratio: {}",
                fmt_g(f64::from(ratio))
            )
        };
        if !(0.99..=1.01).contains(&ratio) && !ratio.is_nan() {
            self.log(|d, at| d.error(at, Site::new(LOADGEN, 906), "error_runtime", text("1%")))
        } else if !(0.999..=1.001).contains(&ratio) && !ratio.is_nan() {
            self.log(|d, at| {
                d.warning(
                    at,
                    Site::new(LOADGEN, 918),
                    "warning_generic_message",
                    text("0.1%"),
                )
            })
        } else {
            Ok(())
        }
    }

    /// Logs a pass's results to the detail log and keeps it for the summary.
    fn report(&mut self, summary: PerformanceSummary) -> Result<(), LoadgenError> {
        self.log(|d, at| report::log_results(d, at, &summary))?;
        self.performance = Some(summary);
        Ok(())
    }

    fn run_pass(
        &mut self,
        eff: &EffectiveSettings,
        kind: PassKind,
        set: &LoadableSet,
    ) -> Result<PerformanceSummary, LoadgenError> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(LoadgenError::Interrupted);
        }
        let offset = schedule::accuracy_log_offset(eff.accuracy_log_rng_seed);
        // Refused before generating anything: a schedule larger than the memory available
        // would only end the process (e.g. a FindPeakPerformance search raising the QPS).
        if let Some(available) = schedule::available_memory() {
            schedule::check_plan_memory(eff, kind, set.samples.len(), available)?;
        }
        let plan = Arc::new(schedule::generate_queries(eff, kind, set, &mut self.seq)?);
        self.log(|d, at| {
            let site = |line| Site::new(LOADGEN, line);
            d.log(
                at,
                site(427),
                "generated_query_count",
                plan.queries.len() as u64,
            )?;
            d.log(
                at,
                site(428),
                "generated_samples_per_query",
                plan.samples_per_query,
            )?;
            d.log(at, site(429), "generated_query_duration", plan.duration_ns)
        })?;
        let probability = schedule::accuracy_log_probability(eff);
        let state = Arc::new(PassState::new(
            kind,
            eff.scenario,
            plan.clone(),
            offset,
            probability,
        ));
        self.router.install(state.clone());
        let threads = eff.requested.server_num_issue_query_threads;
        if threads != 0 {
            self.log(|d, at| {
                d.error(
                    at,
                    Site::new("issue_query_controller.cc", 280),
                    "error_runtime",
                    format!(
                        "Mismatch between settings and number of registered IssueQueryThreads! settings.server_num_issue_query_threads = {threads} but 0 threads registered."
                    ),
                )
            })?;
        }
        let job = IssueJob {
            sut: self.sut.clone(),
            sink: self.sink.clone(),
            pass: state.clone(),
            settings: eff.clone(),
            outputs: self.outputs.clone(),
            stop: self.stop.clone(),
        };
        let stats = std::thread::Builder::new()
            .name("loadgen-issue".to_string())
            .spawn(move || issue_queries(job))
            .map_err(|e| LoadgenError::IssueThread(e.to_string()))?
            .join()
            .map_err(|_| LoadgenError::IssueThread("the issue thread panicked".to_string()))?;
        self.sut.flush_queries();
        if kind == PassKind::Performance && stats.ran_out_of_generated_queries {
            self.log(|d, at| {
                d.error(
                    at,
                    Site::new(LOADGEN, 513),
                    "error_runtime",
                    "Ending early: Ran out of generated queries to issue before the minimum query count and test duration were reached. Please update the relevant expected latency or target qps in the TestSettings so they are more accurate.",
                )
            })?;
        }
        let m = collect(&state, &stats);
        self.failed += m.failed;
        if self.first_failure.is_none() {
            self.first_failure = m.result.first_failure.clone();
        }
        self.log(report::log_contention)?;
        let active = m.max_completion.saturating_duration_since(stats.start);
        let begin = chrono::DateTime::<chrono::Utc>::from(stats.start_system);
        let end = chrono::DateTime::<chrono::Utc>::from(stats.start_system + active);
        self.log(|d, at| {
            d.log(
                at,
                Site::new(LOADGEN, 562),
                "power_begin",
                power_time(begin),
            )?;
            d.log(at, Site::new(LOADGEN, 564), "power_end", power_time(end))
        })?;
        if kind == PassKind::Performance {
            self.timeline = Some(Timeline::new(m.completions, &m.breakdown));
            self.breakdown = (m.result.sample_latencies.len(), m.breakdown);
        }
        Ok(PerformanceSummary::compute(&self.sut_name, eff, m.result))
    }

    fn find_peak_mode(&mut self, base: &EffectiveSettings) -> Result<(), LoadgenError> {
        self.message(954, "Starting FindPeakPerformance mode")?;
        if base.scenario != TestScenario::Server {
            return self.log(|d, at| {
                d.error(
                    at,
                    Site::new(LOADGEN, 963),
                    "error_invalid_config",
                    "Finding peak performance is only supported in Server scenarios.",
                )
            });
        }
        self.message(
            976,
            &format!(
                "FindPeakPerformance: Check validity of the base settings field: {}",
                qps_field(base)
            ),
        )?;
        let sets = self.sets(base, base.performance_sample_count);
        let Some(set) = sets.first() else {
            return Err(schedule::ScheduleError::EmptySet.into());
        };
        self.load(set)?;
        let base_summary = self.run_pass(base, PassKind::Performance, set)?;
        if !base_summary.perf_constraints_met {
            let msg = base_summary.perf_constraints_recommendation.clone();
            self.log(|d, at| {
                d.error(
                    at,
                    Site::new(LOADGEN, 1010),
                    "error_runtime",
                    format!("FindPeakPerformance: Initial lower bound does not satisfy performance constraints, msg: {msg}"),
                )
            })?;
            self.report(base_summary)?;
            self.qsl.unload_samples_from_ram(&set.samples);
            return Ok(());
        }
        self.qsl.unload_samples_from_ram(&set.samples);

        // Widen the upper bound until it fails.
        let mut lower = base_summary;
        let upper = loop {
            let mut u = lower.settings.clone();
            u.target_qps *= 1.0 + u.requested.server_find_peak_qps_boundary_step_size;
            self.message(
                758,
                &format!(
                    "FindBoundaries: Checking fields [{}, {})",
                    qps_field(&lower.settings),
                    qps_field(&u)
                ),
            )?;
            let sets = self.sets(&u, u.performance_sample_count);
            let Some(set) = sets.first() else {
                return Err(schedule::ScheduleError::EmptySet.into());
            };
            self.load(set)?;
            let s = self.run_pass(&u, PassKind::Performance, set)?;
            self.qsl.unload_samples_from_ram(&set.samples);
            if !s.perf_constraints_met {
                break s;
            }
            lower = s;
        };
        self.message(
            1050,
            &format!(
                "FindPeakPerformance: Found boundaries: [{}, {})",
                qps_field(&lower.settings),
                qps_field(&upper.settings)
            ),
        )?;
        let sets = self.sets(&upper.settings, upper.settings.performance_sample_count);
        let Some(set) = sets.first() else {
            return Err(schedule::ScheduleError::EmptySet.into());
        };
        self.load(set)?;
        let mut upper = upper;
        while !search_finished(&lower.settings, &upper.settings) {
            let mut m = lower.settings.clone();
            m.target_qps = lower.settings.target_qps
                + (upper.settings.target_qps - lower.settings.target_qps) / 2.0;
            self.message(
                814,
                &format!(
                    "FindPeakPerformanceBinarySearch: Testing the mid value of bounds [{}, {}): {}",
                    qps_field(&lower.settings),
                    qps_field(&upper.settings),
                    qps_field(&m)
                ),
            )?;
            let s = self.run_pass(&m, PassKind::Performance, set)?;
            if s.perf_constraints_met {
                lower = s;
            } else {
                upper = s;
            }
        }
        self.message(
            1075,
            &format!(
                "FindPeakPerformance: Found peak performance field: {}",
                qps_field(&lower.settings)
            ),
        )?;
        self.report(lower)?;
        self.qsl.unload_samples_from_ram(&set.samples);
        Ok(())
    }
}

/// `std::to_string(target_qps)` (`%f`).
fn qps_field(e: &EffectiveSettings) -> String {
    format!("{:.6}", e.target_qps)
}

/// Official `IsFinished`: bounds equal at the requested decimal precision.
fn search_finished(lower: &EffectiveSettings, upper: &EffectiveSettings) -> bool {
    let scale = 10f64.powi(lower.requested.server_find_peak_qps_decimals_of_precision);
    let l = (lower.target_qps * scale).floor();
    let u = (upper.target_qps * scale).floor();
    l + 1.0 >= u
}

/// `%m-%d-%Y %H:%M:%S.mmm` in UTC.
fn power_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%m-%d-%Y %H:%M:%S%.3f").to_string()
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_prefix_suffix_and_datetime() {
        let log = LogSettings {
            outdir: PathBuf::from("/o"),
            suffix: "_x".to_string(),
            prefix_with_datetime: true,
            ..LogSettings::default()
        };
        let p = log_paths(&log, "2026-01-02T03:04:05Z");
        assert_eq!(
            p.summary,
            PathBuf::from("/o/mlperf_log_2026-01-02T03:04:05Z_summary_x.txt")
        );
        assert_eq!(
            p.trace,
            Some(PathBuf::from(
                "/o/mlperf_log_2026-01-02T03:04:05Z_trace_x.json"
            ))
        );
    }

    #[test]
    fn power_time_format() {
        let t = chrono::DateTime::<chrono::Utc>::from_timestamp(1_795_977_402, 23_456_789)
            .unwrap_or_default();
        assert_eq!(power_time(t), "11-29-2026 18:36:42.023");
    }
}
