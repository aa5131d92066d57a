//! Performance results of one run: latency statistics, per-scenario metrics, early stopping and
//! validity with the official recommendation texts (official `PerformanceSummary`).

use crate::early_stopping::{self, MinPassingQueriesFinder, CONFIDENCE, TOLERANCE};
use crate::logs::format::fixed;
use crate::settings::{ms_to_seconds, EffectiveSettings, TestScenario};

/// The percentiles reported in the tables.
pub const PERCENTILES: [f64; 6] = [0.50, 0.90, 0.95, 0.97, 0.99, 0.999];

/// Percentile of the extra SingleStream estimate used to infer MultiStream.
const MULTI_STREAM_PERCENTILE: f64 = 0.99;

/// Raw measurements of one performance pass (official `PerformanceResult`).
///
/// Samples the SUT completed with an error never produced a result: they are counted in
/// `failed_samples` and left out of the latencies (and so of every statistic, the throughput and
/// early stopping); a pass with any of them is INVALID. Without failures every field is what the
/// official LoadGen computes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerformanceResult {
    /// Latency of every issued sample that succeeded, ns, from its query's scheduled time.
    pub sample_latencies: Vec<i64>,
    /// MultiStream only: per-query latency (last sample done − scheduled) of every query whose
    /// samples all succeeded, ns.
    pub query_latencies: Vec<i64>,
    pub queries_issued: u64,
    /// Largest latency of a sample that succeeded, seconds.
    pub max_latency: f64,
    /// Seconds from the start of the last issued query's schedule, issue and completion.
    pub final_query_scheduled_time: f64,
    pub final_query_issued_time: f64,
    pub final_query_all_samples_done_time: f64,
    /// Issued samples completed with an error.
    pub failed_samples: u64,
    /// Issued queries with at least one failed sample.
    pub failed_queries: u64,
    /// The error of the first sample that failed (in completion order).
    pub first_failure: Option<String>,
}

/// Sorted-list statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyStats {
    pub min: i64,
    pub max: i64,
    pub mean: i64,
    /// Values at [`PERCENTILES`].
    pub percentiles: [i64; 6],
    /// Value at the target percentile.
    pub target: i64,
}

impl LatencyStats {
    /// Sorts `values` and computes the statistics (all zero when empty).
    pub fn compute(values: &mut [i64], target_percentile: f64) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let sum: i64 = values.iter().fold(0i64, |a, &v| a.wrapping_add(v));
        let mean = sum / values.len() as i64;
        values.sort_unstable();
        Self {
            min: values[0],
            max: values[values.len() - 1],
            mean,
            percentiles: PERCENTILES.map(|p| percentile(values, p)),
            target: percentile(values, target_percentile),
        }
    }
}

/// `sorted[floor(n * p)]` (no interpolation), clamped to the last element.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = (sorted.len() as f64 * p) as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Everything the summary and detail log report about one performance pass.
#[derive(Debug, Clone, PartialEq)]
pub struct PerformanceSummary {
    pub sut_name: String,
    pub settings: EffectiveSettings,
    pub result: PerformanceResult,
    pub sample_count: u64,
    pub query_count: u64,
    pub overlatency_query_count: u64,
    pub samples: LatencyStats,
    /// MultiStream only.
    pub queries: LatencyStats,
    pub early_stopping_latency_ss: i64,
    pub early_stopping_latency_ms: i64,
    pub min_duration_met: bool,
    pub min_duration_recommendation: String,
    pub min_queries_met: bool,
    pub perf_constraints_met: bool,
    pub perf_constraints_recommendation: String,
    pub early_stopping_met: bool,
    /// Multi-line early-stopping text (lines start with " * ").
    pub early_stopping_text: String,
}

impl PerformanceSummary {
    /// Processes the latencies and evaluates every constraint.
    pub fn compute(
        sut_name: &str,
        settings: &EffectiveSettings,
        mut result: PerformanceResult,
    ) -> Self {
        // Samples that succeeded; the failed ones count only towards the queries issued.
        let sample_count = result.sample_latencies.len() as u64;
        let completed_count = sample_count + result.failed_samples;
        let samples = LatencyStats::compute(
            &mut result.sample_latencies,
            settings.target_latency_percentile,
        );
        let queries = if settings.scenario == TestScenario::MultiStream {
            LatencyStats::compute(
                &mut result.query_latencies,
                settings.target_latency_percentile,
            )
        } else {
            LatencyStats::default()
        };
        let overlatency_query_count = if settings.scenario == TestScenario::Server {
            let limit = settings.target_latency_ns as i64;
            result
                .sample_latencies
                .iter()
                .filter(|&&l| l > limit)
                .count() as u64
        } else {
            0
        };
        let mut s = Self {
            sut_name: sut_name.to_string(),
            settings: settings.clone(),
            sample_count,
            query_count: if completed_count == 0 {
                0
            } else {
                result.queries_issued
            },
            overlatency_query_count,
            samples,
            queries,
            early_stopping_latency_ss: 0,
            early_stopping_latency_ms: 0,
            min_duration_met: false,
            min_duration_recommendation: String::new(),
            min_queries_met: false,
            perf_constraints_met: true,
            perf_constraints_recommendation: String::new(),
            early_stopping_met: true,
            early_stopping_text: String::new(),
            result,
        };
        s.evaluate_min_duration();
        // Issuing, not success, decides this (failures have their own verdict).
        s.min_queries_met = s.result.queries_issued >= settings.min_query_count
            && completed_count >= settings.min_sample_count;
        if settings.scenario == TestScenario::Server
            && s.samples.target > settings.target_latency_ns as i64
        {
            s.perf_constraints_met = false;
            s.perf_constraints_recommendation = "Reduce target QPS to improve latency.".to_string();
        }
        s.evaluate_early_stopping();
        s
    }

    /// VALID iff every constraint holds and no sample failed.
    pub fn all_constraints_met(&self) -> bool {
        self.min_duration_met
            && self.min_queries_met
            && self.perf_constraints_met
            && self.early_stopping_met
            && self.no_failed_samples()
    }

    /// Whether every issued sample produced a result (the official LoadGen has no notion of a
    /// failed sample; a run with any is INVALID here).
    pub fn no_failed_samples(&self) -> bool {
        self.result.failed_samples == 0
    }

    /// `"N samples failed: <first error>"`, or `None` when none failed.
    pub fn failure_text(&self) -> Option<String> {
        let n = self.result.failed_samples;
        if n == 0 {
            return None;
        }
        let what = if n == 1 { "sample" } else { "samples" };
        let first = self
            .result
            .first_failure
            .as_deref()
            .unwrap_or("unknown error");
        Some(format!("{n} {what} failed: {first}"))
    }

    /// Only Server has latency constraints.
    pub fn has_perf_constraints(&self) -> bool {
        self.settings.scenario == TestScenario::Server
    }

    fn evaluate_min_duration(&mut self) {
        let min = ms_to_seconds(self.settings.min_duration_ms);
        let r = &self.result;
        let (met, rec) = match self.settings.scenario {
            TestScenario::Offline => (
                r.max_latency >= min,
                "Increase expected QPS so the loadgen pre-generates a larger (coalesced) query.",
            ),
            TestScenario::Server => (
                r.final_query_scheduled_time >= min,
                "Increase the target QPS so the loadgen pre-generates more queries.",
            ),
            TestScenario::SingleStream | TestScenario::MultiStream => (
                r.final_query_issued_time >= min,
                "Decrease the expected latency so the loadgen pre-generates more queries.",
            ),
        };
        self.min_duration_met = met;
        if !met {
            self.min_duration_recommendation = rec.to_string();
        }
    }

    fn evaluate_early_stopping(&mut self) {
        let mut finder = MinPassingQueriesFinder::new();
        // Queries that produced results: a failed query has no latency to judge.
        let n = self
            .result
            .queries_issued
            .saturating_sub(self.result.failed_queries) as i64;
        let p = self.settings.target_latency_percentile;
        match self.settings.scenario {
            TestScenario::SingleStream => {
                let Some((h_min, t)) = self.discard_count(&mut finder, n, p) else {
                    return;
                };
                let estimate = at_or_zero(&self.result.sample_latencies, n - t);
                self.early_stopping_latency_ss = estimate;
                let mut text = processed_text(h_min, n, t, p, estimate);
                let h_ms = finder.find(1, MULTI_STREAM_PERCENTILE, TOLERANCE, CONFIDENCE);
                if n < h_ms + 1 {
                    text += &format!(
                        "\n * Not enough queries processed for {}th percentile\n early stopping estimate (would need to process at\n least {} total queries).",
                        fixed(MULTI_STREAM_PERCENTILE * 100.0, 1),
                        h_ms + 1
                    );
                } else {
                    let t_ms = first_failing_minus_one(&mut finder, n, MULTI_STREAM_PERCENTILE);
                    let estimate = at_or_zero(&self.result.sample_latencies, n - t_ms);
                    text += &format!(
                        "\n * Early stopping {}th percentile estimate: {}",
                        fixed(MULTI_STREAM_PERCENTILE * 100.0, 1),
                        estimate
                    );
                    self.early_stopping_latency_ms = estimate;
                }
                self.early_stopping_text = text;
            }
            TestScenario::MultiStream => {
                let Some((h_min, t)) = self.discard_count(&mut finder, n, p) else {
                    return;
                };
                let estimate = at_or_zero(&self.result.query_latencies, n - t);
                self.early_stopping_latency_ms = estimate;
                self.early_stopping_text = processed_text(h_min, n, t, p, estimate);
            }
            TestScenario::Server => {
                let limit = self.settings.target_latency_ns as i64;
                let t = self
                    .result
                    .sample_latencies
                    .iter()
                    .filter(|&&l| l > limit)
                    .count() as i64;
                if early_stopping::server_run_passes(&mut finder, n, t, p) {
                    self.early_stopping_text = " * Run successful.".to_string();
                } else {
                    self.early_stopping_met = false;
                    let h = finder.find(t, p, TOLERANCE, CONFIDENCE);
                    self.early_stopping_text = format!(
                        " * Run unsuccessful.\n * Processed {n} queries.\n * Would need to run at least {} more queries,\n with the run being successful if every additional\n query were under latency.",
                        h + t - n
                    );
                }
            }
            TestScenario::Offline => {}
        }
    }

    /// SingleStream/MultiStream: `(h_min, t)`, or `None` (and the failure text) when too few
    /// queries were processed.
    fn discard_count(
        &mut self,
        finder: &mut MinPassingQueriesFinder,
        n: i64,
        p: f64,
    ) -> Option<(i64, i64)> {
        let h_min = finder.find(1, p, TOLERANCE, CONFIDENCE);
        if n < h_min + 1 {
            self.early_stopping_met = false;
            self.early_stopping_text = format!(
                " * Only processed {n} queries.\n * Need to process at least {} queries for early stopping.",
                h_min + 1
            );
            return None;
        }
        Some((h_min, first_failing_minus_one(finder, n, p)))
    }
}

/// `t = (first i >= 2 with n < h(i) + i) - 1`, or 1 when none fails.
fn first_failing_minus_one(finder: &mut MinPassingQueriesFinder, n: i64, p: f64) -> i64 {
    for i in 2..n + 1 {
        let h = finder.find(i, p, TOLERANCE, CONFIDENCE);
        if n < h + i {
            return i - 1;
        }
    }
    1
}

fn processed_text(h_min: i64, n: i64, t: i64, p: f64, estimate: i64) -> String {
    format!(
        " * Processed at least {} queries ({n}).\n * Would discard {} highest latency queries.\n * Early stopping {}th percentile estimate: {estimate}",
        h_min + 1,
        t - 1,
        fixed(p * 100.0, 1)
    )
}

fn at_or_zero(sorted: &[i64], i: i64) -> i64 {
    usize::try_from(i)
        .ok()
        .and_then(|i| sorted.get(i))
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::TestSettings;

    fn eff(scenario: TestScenario, f: impl FnOnce(&mut TestSettings)) -> EffectiveSettings {
        let mut s = TestSettings {
            scenario,
            ..TestSettings::default()
        };
        f(&mut s);
        EffectiveSettings::new(&s, 1024, 5000).0
    }

    #[test]
    fn percentile_uses_floor_index() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.5), 6);
        assert_eq!(percentile(&v, 0.9), 10);
        assert_eq!(percentile(&v, 0.999), 10);
        let mut w = vec![5, 1, 4];
        let s = LatencyStats::compute(&mut w, 0.9);
        assert_eq!((s.min, s.max, s.mean, s.target), (1, 5, 3, 5));
    }

    #[test]
    fn single_stream_early_stopping_text() {
        let e = eff(TestScenario::SingleStream, |s| s.min_duration_ms = 3000);
        let n = 2537i64;
        let result = PerformanceResult {
            sample_latencies: (0..n).map(|i| 1_000_000 + i).collect(),
            queries_issued: n as u64,
            final_query_issued_time: 3.0,
            max_latency: 0.001,
            ..PerformanceResult::default()
        };
        let s = PerformanceSummary::compute("sut", &e, result);
        assert!(s.all_constraints_met());
        let first = s.early_stopping_text.lines().take(2).collect::<Vec<_>>();
        assert_eq!(
            first,
            [
                " * Processed at least 64 queries (2537).",
                " * Would discard 217 highest latency queries."
            ]
        );
        assert_eq!(s.early_stopping_latency_ss, 1_000_000 + n - 218);
    }

    #[test]
    fn server_early_stopping_failure() {
        let e = eff(TestScenario::Server, |s| {
            s.server_target_latency_ns = 15_000_000;
            s.min_duration_ms = 3000;
        });
        let mut lat = vec![1_000_000i64; 601];
        lat[..5].iter_mut().for_each(|l| *l = 20_000_000);
        let result = PerformanceResult {
            sample_latencies: lat,
            queries_issued: 601,
            final_query_scheduled_time: 3.0,
            ..PerformanceResult::default()
        };
        let s = PerformanceSummary::compute("sut", &e, result);
        assert!(!s.early_stopping_met);
        assert!(s.perf_constraints_met);
        assert_eq!(s.overlatency_query_count, 5);
        assert!(s
            .early_stopping_text
            .contains("Would need to run at least 706 more queries"));
        assert!(!s.all_constraints_met());
    }

    #[test]
    fn too_few_queries() {
        let e = eff(TestScenario::MultiStream, |_| {});
        let result = PerformanceResult {
            query_latencies: vec![1; 10],
            sample_latencies: vec![1; 80],
            queries_issued: 10,
            ..PerformanceResult::default()
        };
        let s = PerformanceSummary::compute("sut", &e, result);
        assert!(!s.early_stopping_met);
        assert!(!s.min_queries_met);
        assert!(!s.min_duration_met);
        assert_eq!(
            s.early_stopping_text,
            " * Only processed 10 queries.\n * Need to process at least 662 queries for early stopping."
        );
    }

    #[test]
    fn failed_samples_are_left_out_and_make_the_run_invalid() {
        let e = eff(TestScenario::SingleStream, |s| s.min_duration_ms = 3000);
        // 2537 issued queries, 37 failed: the latencies hold the 2500 that succeeded.
        let result = PerformanceResult {
            sample_latencies: (0..2500).map(|i| 1_000_000 + i).collect(),
            queries_issued: 2537,
            final_query_issued_time: 3.0,
            max_latency: 0.001,
            failed_samples: 37,
            failed_queries: 37,
            first_failure: Some("Unavailable: connection refused".into()),
            ..PerformanceResult::default()
        };
        let s = PerformanceSummary::compute("sut", &e, result);
        assert_eq!(s.sample_count, 2500);
        assert!(s.min_duration_met && s.min_queries_met && s.early_stopping_met);
        assert!(!s.no_failed_samples() && !s.all_constraints_met());
        assert!(
            s.early_stopping_text
                .starts_with(" * Processed at least 64 queries (2500)."),
            "early stopping counts the queries that produced results: {}",
            s.early_stopping_text
        );
        assert_eq!(s.samples.min, 1_000_000);
        assert_eq!(
            s.failure_text().as_deref(),
            Some("37 samples failed: Unavailable: connection refused")
        );
        // Too few completed samples still fail min queries; failures alone do not.
        let one = PerformanceResult {
            failed_samples: 1,
            failed_queries: 1,
            queries_issued: 1,
            ..PerformanceResult::default()
        };
        let s = PerformanceSummary::compute("sut", &e, one);
        assert_eq!(s.query_count, 1, "the failed query was issued");
        assert_eq!(
            s.failure_text().as_deref(),
            Some("1 sample failed: unknown error")
        );
    }
}
