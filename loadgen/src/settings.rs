//! Test settings as requested (`TestSettings`, `LogSettings`) and as normalised for a run
//! (`EffectiveSettings`, the official `TestSettingsInternal`).

use std::path::PathBuf;

use crate::diagnostics::{Diagnostic, Site};

/// The four MLPerf scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestScenario {
    SingleStream,
    MultiStream,
    Server,
    Offline,
}

impl TestScenario {
    /// Every scenario.
    pub const ALL: [Self; 4] = [
        Self::SingleStream,
        Self::MultiStream,
        Self::Server,
        Self::Offline,
    ];

    /// The name used in logs and config keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SingleStream => "SingleStream",
            Self::MultiStream => "MultiStream",
            Self::Server => "Server",
            Self::Offline => "Offline",
        }
    }
}

impl std::str::FromStr for TestScenario {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_name(&Self::ALL, Self::as_str, s)
    }
}

/// What a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestMode {
    SubmissionRun,
    AccuracyOnly,
    PerformanceOnly,
    FindPeakPerformance,
}

impl TestMode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [Self; 4] = [
        Self::PerformanceOnly,
        Self::AccuracyOnly,
        Self::SubmissionRun,
        Self::FindPeakPerformance,
    ];

    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubmissionRun => "SubmissionRun",
            Self::AccuracyOnly => "AccuracyOnly",
            Self::PerformanceOnly => "PerformanceOnly",
            Self::FindPeakPerformance => "FindPeakPerformance",
        }
    }
}

impl std::str::FromStr for TestMode {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_name(&Self::ALL, Self::as_str, s)
    }
}

/// The one of `all` whose `name` is `s`.
fn parse_name<T: Copy>(all: &[T], name: fn(T) -> &'static str, s: &str) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|v| name(*v) == s)
        .ok_or_else(|| UnknownName(s.to_string()))
}

/// A scenario or mode name that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("unknown scenario or mode name: {0}")]
pub struct UnknownName(pub String);

/// Requested settings, with the official defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSettings {
    pub scenario: TestScenario,
    pub mode: TestMode,
    pub single_stream_expected_latency_ns: f64,
    pub single_stream_target_latency_percentile: f64,
    pub multi_stream_expected_latency_ns: f64,
    pub multi_stream_target_latency_percentile: f64,
    pub multi_stream_samples_per_query: u64,
    pub server_target_qps: f64,
    pub server_target_latency_ns: u64,
    pub server_target_latency_percentile: f64,
    pub server_coalesce_queries: bool,
    pub server_find_peak_qps_decimals_of_precision: i32,
    pub server_find_peak_qps_boundary_step_size: f64,
    pub server_max_async_queries: u64,
    pub server_num_issue_query_threads: u64,
    pub offline_expected_qps: f64,
    pub sample_concatenate_permutation: bool,
    pub min_duration_ms: u64,
    pub max_duration_ms: u64,
    pub min_query_count: u64,
    pub max_query_count: u64,
    pub qsl_rng_seed: u64,
    pub sample_index_rng_seed: u64,
    pub schedule_rng_seed: u64,
    pub accuracy_log_rng_seed: u64,
    pub accuracy_log_probability: f64,
    pub accuracy_log_sampling_target: u64,
    pub test05: bool,
    pub test05_qsl_rng_seed: u64,
    pub test05_sample_index_rng_seed: u64,
    pub test05_schedule_rng_seed: u64,
    pub print_timestamps: bool,
    pub performance_issue_unique: bool,
    pub performance_issue_same: bool,
    pub performance_issue_same_index: u64,
    pub performance_sample_count_override: u64,
    pub accuracy_sample_count_override: u64,
    pub use_token_latencies: bool,
    pub server_ttft_latency: u64,
    pub server_tpot_latency: u64,
    pub infer_token_latencies: bool,
    pub token_latency_scaling_factor: u64,
}

impl Default for TestSettings {
    fn default() -> Self {
        Self {
            scenario: TestScenario::SingleStream,
            mode: TestMode::PerformanceOnly,
            single_stream_expected_latency_ns: 1_000_000.0,
            single_stream_target_latency_percentile: 0.90,
            multi_stream_expected_latency_ns: 8_000_000.0,
            multi_stream_target_latency_percentile: 0.99,
            multi_stream_samples_per_query: 8,
            server_target_qps: 1.0,
            server_target_latency_ns: 100_000_000,
            server_target_latency_percentile: 0.99,
            server_coalesce_queries: false,
            server_find_peak_qps_decimals_of_precision: 1,
            server_find_peak_qps_boundary_step_size: 1.0,
            server_max_async_queries: 0,
            server_num_issue_query_threads: 0,
            offline_expected_qps: 1.0,
            sample_concatenate_permutation: false,
            min_duration_ms: 10_000,
            max_duration_ms: 0,
            min_query_count: 100,
            max_query_count: 0,
            qsl_rng_seed: 0,
            sample_index_rng_seed: 0,
            schedule_rng_seed: 0,
            accuracy_log_rng_seed: 0,
            accuracy_log_probability: 0.0,
            accuracy_log_sampling_target: 0,
            test05: false,
            test05_qsl_rng_seed: 0,
            test05_sample_index_rng_seed: 0,
            test05_schedule_rng_seed: 0,
            print_timestamps: false,
            performance_issue_unique: false,
            performance_issue_same: false,
            performance_issue_same_index: 0,
            performance_sample_count_override: 0,
            accuracy_sample_count_override: 0,
            use_token_latencies: false,
            server_ttft_latency: 100_000_000,
            server_tpot_latency: 100_000_000,
            infer_token_latencies: false,
            token_latency_scaling_factor: 0,
        }
    }
}

/// Where and how the log files are written.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    pub outdir: PathBuf,
    pub prefix: String,
    pub suffix: String,
    pub prefix_with_datetime: bool,
    pub copy_detail_to_stdout: bool,
    pub copy_summary_to_stdout: bool,
    pub enable_trace: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            outdir: PathBuf::from("."),
            prefix: "mlperf_log_".to_string(),
            suffix: String::new(),
            prefix_with_datetime: false,
            copy_detail_to_stdout: false,
            copy_summary_to_stdout: false,
            enable_trace: true,
        }
    }
}

/// Settings after normalisation for one scenario and QSL (official `TestSettingsInternal`).
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveSettings {
    pub requested: TestSettings,
    pub scenario: TestScenario,
    pub mode: TestMode,
    pub samples_per_query: u64,
    pub target_qps: f64,
    pub target_latency_ns: u64,
    pub target_latency_percentile: f64,
    pub max_async_queries: u64,
    pub target_duration_ms: u64,
    pub min_duration_ms: u64,
    pub max_duration_ms: u64,
    pub min_query_count: u64,
    pub max_query_count: u64,
    pub min_sample_count: u64,
    pub qsl_rng_seed: u64,
    pub sample_index_rng_seed: u64,
    pub schedule_rng_seed: u64,
    pub accuracy_log_rng_seed: u64,
    pub accuracy_log_probability: f64,
    pub accuracy_log_sampling_target: u64,
    pub print_timestamps: bool,
    pub performance_issue_unique: bool,
    pub performance_issue_same: bool,
    pub performance_issue_same_index: u64,
    pub performance_sample_count: u64,
    pub accuracy_sample_count: u64,
    pub sample_concatenate_permutation: bool,
    pub use_token_latencies: bool,
    pub server_ttft_latency: u64,
    pub server_tpot_latency: u64,
}

const SETTINGS_FILE: &str = "test_settings_internal.cc";

impl EffectiveSettings {
    /// Normalises `requested` for a QSL with the given counts. Invalid requests are reported as
    /// `error_invalid_test_settings` diagnostics (logged before the settings, like the original).
    pub fn new(
        requested: &TestSettings,
        qsl_performance_sample_count: u64,
        qsl_total_sample_count: u64,
    ) -> (Self, Vec<Diagnostic>) {
        let r = requested;
        let mut diags = Vec::new();
        let mut target_qps = 1.0;
        let mut target_latency_ns = 0;
        let max_async_queries;
        let target_latency_percentile;
        match r.scenario {
            TestScenario::SingleStream => {
                target_qps = 1e9 / r.single_stream_expected_latency_ns;
                max_async_queries = 1;
                target_latency_percentile = r.single_stream_target_latency_percentile;
            }
            TestScenario::MultiStream => {
                target_qps = 1e9 / r.multi_stream_expected_latency_ns;
                max_async_queries = 1;
                target_latency_percentile = r.multi_stream_target_latency_percentile;
            }
            TestScenario::Server => {
                if r.server_target_qps >= 0.0 {
                    target_qps = r.server_target_qps;
                } else {
                    diags.push(Diagnostic::error(
                        "error_invalid_test_settings",
                        format!(
                            "Invalid value for server_target_qps requested. requested: {} using: {}",
                            crate::logs::format::fmt_g(r.server_target_qps),
                            crate::logs::format::fmt_g(target_qps)
                        ),
                        Site::new(SETTINGS_FILE, 85),
                    ));
                }
                target_latency_ns = r.server_target_latency_ns;
                target_latency_percentile = r.server_target_latency_percentile;
                max_async_queries = r.server_max_async_queries;
            }
            TestScenario::Offline => {
                target_latency_percentile = 0.99;
                if r.offline_expected_qps >= 0.0 {
                    target_qps = r.offline_expected_qps;
                } else {
                    diags.push(Diagnostic::error(
                        "error_invalid_test_settings",
                        format!(
                            "Invalid value for offline_expected_qps requested. requested: {} using: {}",
                            crate::logs::format::fmt_g(r.offline_expected_qps),
                            crate::logs::format::fmt_g(target_qps)
                        ),
                        Site::new(SETTINGS_FILE, 111),
                    ));
                }
                max_async_queries = 1;
            }
        }
        let performance_sample_count = if r.performance_sample_count_override == 0 {
            qsl_performance_sample_count
        } else {
            r.performance_sample_count_override
        };
        let accuracy_sample_count = if r.accuracy_sample_count_override == 0 {
            qsl_total_sample_count
        } else {
            r.accuracy_sample_count_override
        };
        let mut samples_per_query = 1;
        if r.scenario == TestScenario::MultiStream {
            samples_per_query = r.multi_stream_samples_per_query;
        }
        let mut target_duration_ms = r.min_duration_ms;
        let mut min_query_count = r.min_query_count;
        if r.scenario == TestScenario::Offline {
            let slack = 1.1;
            let target_sample_count =
                (slack * ms_to_seconds(target_duration_ms) * target_qps) as u64;
            samples_per_query = if r.performance_issue_unique {
                performance_sample_count
            } else {
                min_query_count.max(target_sample_count)
            };
            min_query_count = 1;
            target_duration_ms = 0;
        }
        if r.sample_concatenate_permutation && r.scenario == TestScenario::SingleStream {
            let slack = 2.0;
            let expected_queries = (slack * ms_to_seconds(target_duration_ms) * target_qps) as u64;
            min_query_count = min_query_count.max(expected_queries);
            if qsl_performance_sample_count > 0 {
                min_query_count +=
                    qsl_performance_sample_count - (min_query_count % qsl_performance_sample_count);
            }
        }
        let min_sample_count = min_query_count.wrapping_mul(samples_per_query);
        if r.performance_issue_same && r.performance_issue_same_index >= performance_sample_count {
            diags.push(Diagnostic::error(
                "error_invalid_test_settings",
                format!(
                    "Sample Idx to be repeated in performance_issue_same mode cannot be greater than loaded performance_sample_count. performance_issue_same_index: {} performance_sample_count: {}",
                    r.performance_issue_same_index, performance_sample_count
                ),
                Site::new(SETTINGS_FILE, 194),
            ));
        }
        if r.performance_issue_unique && r.performance_issue_same {
            diags.push(Diagnostic::error(
                "error_invalid_test_settings",
                "Performance_issue_unique and performance_issue_same, both cannot be true at the same time. performance_issue_unique: 1 performance_issue_same: 1",
                Site::new(SETTINGS_FILE, 215),
            ));
        }
        let eff = Self {
            requested: r.clone(),
            scenario: r.scenario,
            mode: r.mode,
            samples_per_query,
            target_qps,
            target_latency_ns,
            target_latency_percentile,
            max_async_queries,
            target_duration_ms,
            min_duration_ms: r.min_duration_ms,
            max_duration_ms: r.max_duration_ms,
            min_query_count,
            max_query_count: r.max_query_count,
            min_sample_count,
            qsl_rng_seed: r.qsl_rng_seed,
            sample_index_rng_seed: r.sample_index_rng_seed,
            schedule_rng_seed: r.schedule_rng_seed,
            accuracy_log_rng_seed: r.accuracy_log_rng_seed,
            accuracy_log_probability: r.accuracy_log_probability,
            accuracy_log_sampling_target: r.accuracy_log_sampling_target,
            print_timestamps: r.print_timestamps,
            performance_issue_unique: r.performance_issue_unique,
            performance_issue_same: r.performance_issue_same,
            performance_issue_same_index: r.performance_issue_same_index,
            performance_sample_count,
            accuracy_sample_count,
            sample_concatenate_permutation: r.sample_concatenate_permutation,
            use_token_latencies: r.use_token_latencies,
            server_ttft_latency: r.server_ttft_latency,
            server_tpot_latency: r.server_tpot_latency,
        };
        (eff, diags)
    }
}

/// Milliseconds as seconds (`DurationToSeconds`).
pub fn ms_to_seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resnet(scenario: TestScenario) -> TestSettings {
        TestSettings {
            scenario,
            qsl_rng_seed: 2_085_463_073_848_966_840,
            performance_sample_count_override: 1024,
            ..TestSettings::default()
        }
    }

    #[test]
    fn single_stream_uses_expected_latency() {
        let mut s = resnet(TestScenario::SingleStream);
        s.single_stream_expected_latency_ns = 1e6;
        s.min_duration_ms = 3000;
        let (e, diags) = EffectiveSettings::new(&s, 1024, 5000);
        assert!(diags.is_empty());
        assert_eq!(e.target_qps, 1000.0);
        assert_eq!(e.max_async_queries, 1);
        assert_eq!(e.target_duration_ms, 3000);
        assert_eq!(e.min_sample_count, 100);
        assert_eq!(e.performance_sample_count, 1024);
        assert_eq!(e.accuracy_sample_count, 5000);
    }

    #[test]
    fn offline_coalesces_into_one_query() {
        let mut s = resnet(TestScenario::Offline);
        s.offline_expected_qps = 10000.0;
        s.min_duration_ms = 2000;
        s.min_query_count = 24576;
        let (e, _) = EffectiveSettings::new(&s, 1024, 5000);
        assert_eq!(e.samples_per_query, 24576);
        assert_eq!(e.min_query_count, 1);
        assert_eq!(e.target_duration_ms, 0);
        assert_eq!(e.min_sample_count, 24576);
        assert_eq!(e.target_latency_percentile, 0.99);
        s.min_query_count = 1;
        let (e, _) = EffectiveSettings::new(&s, 1024, 5000);
        assert_eq!(e.samples_per_query, 22000);
    }

    #[test]
    fn equal_issue_single_stream_pads_to_qsl_count() {
        let mut s = resnet(TestScenario::SingleStream);
        s.sample_concatenate_permutation = true;
        s.min_duration_ms = 1000;
        let (e, _) = EffectiveSettings::new(&s, 1000, 5000);
        // max(100, 2 * 1 s * 1000 qps) = 2000, already a multiple: a full 1000 is added.
        assert_eq!(e.min_query_count, 3000);
    }

    #[test]
    fn invalid_requests_are_reported() {
        let mut s = resnet(TestScenario::Server);
        s.server_target_qps = -5.0;
        s.performance_issue_same = true;
        s.performance_issue_same_index = 5000;
        let (e, diags) = EffectiveSettings::new(&s, 1024, 5000);
        assert_eq!(e.target_qps, 1.0);
        assert_eq!(diags.len(), 2);
        assert!(diags[0].message.contains("requested: -5 using: 1"));
    }
}
