//! The summary file (`mlperf_log_summary.txt`) text, line for line as the official LoadGen
//! writes it.

use crate::logs::format::{fixed, fmt_g};
use crate::results::{PerformanceSummary, PERCENTILES};
use crate::settings::{EffectiveSettings, TestScenario};

const RULE: &str = "================================================";

/// The performance part of the summary (everything before the warning/error footer).
pub fn render_performance(s: &PerformanceSummary) -> String {
    let mut out = Lines::default();
    let e = &s.settings;
    out.line(&format!("{RULE}\nMLPerf Results Summary\n{RULE}"));
    out.line(&format!("SUT name : {}", s.sut_name));
    out.line(&format!("Scenario : {}", e.scenario.as_str()));
    out.line(&format!("Mode     : {}", e.mode.as_str()));
    let pct_label = format!(
        "{}th percentile latency (ns) : ",
        fixed(e.target_latency_percentile * 100.0, 1)
    );
    match e.scenario {
        TestScenario::SingleStream => out.line(&format!("{pct_label}{}", s.samples.target)),
        TestScenario::MultiStream => out.line(&format!("{pct_label}{}", s.queries.target)),
        TestScenario::Server => out.line(&format!(
            "Completed samples per second    : {}",
            fixed(completed_samples_per_sec(s), 2)
        )),
        TestScenario::Offline => out.line(&format!(
            "Samples per second: {}",
            fmt_g(samples_per_second(s))
        )),
    }
    let valid = s.all_constraints_met();
    out.line(&format!(
        "Result is : {}",
        if valid { "VALID" } else { "INVALID" }
    ));
    if s.has_perf_constraints() {
        out.line(&format!(
            "  Performance constraints satisfied : {}",
            yes_no(s.perf_constraints_met)
        ));
    }
    out.line(&format!(
        "  Min duration satisfied : {}",
        yes_no(s.min_duration_met)
    ));
    out.line(&format!(
        "  Min queries satisfied : {}",
        yes_no(s.min_queries_met)
    ));
    out.line(&format!(
        "  Early stopping satisfied: {}",
        yes_no(s.early_stopping_met)
    ));
    // Not in the official format (which has no failed samples): only when some failed.
    if !s.no_failed_samples() {
        out.line(&format!(
            "  All samples succeeded : NO ({} of {} failed)",
            s.result.failed_samples,
            s.sample_count + s.result.failed_samples
        ));
    }
    if !valid {
        out.line("Recommendations:");
        if !s.perf_constraints_met {
            out.line(&format!(" * {}", s.perf_constraints_recommendation));
        }
        if !s.min_duration_met {
            out.line(&format!(" * {}", s.min_duration_recommendation));
        }
        if !s.min_queries_met {
            out.line(
                " * The test exited early, before enough queries were issued.\n   See the detailed log for why this may have occurred.",
            );
        }
        if let Some(failures) = s.failure_text() {
            out.line(&format!(
                " * {failures}\n   A failed sample produced no result: fix the SUT (see the error_runtime\n   lines in the detailed log) and rerun."
            ));
        }
    }
    if e.scenario != TestScenario::Offline {
        out.line("Early Stopping Result:");
        out.line(&s.early_stopping_text);
    }
    out.line(&format!("\n{RULE}\nAdditional Stats\n{RULE}"));
    if !s.no_failed_samples() {
        out.line(&format!(
            "Failed samples (left out below): {}",
            s.result.failed_samples
        ));
    }
    match e.scenario {
        TestScenario::SingleStream => {
            out.line(&format!(
                "QPS w/ loadgen overhead         : {}",
                fixed(qps_with_loadgen_overhead(s), 2)
            ));
            out.line(&format!(
                "QPS w/o loadgen overhead        : {}",
                fixed(qps_without_loadgen_overhead(s), 2)
            ));
            out.line("");
        }
        TestScenario::Server => out.line(&format!(
            "Scheduled samples per second : {}",
            fixed(scheduled_samples_per_sec(s), 2)
        )),
        TestScenario::MultiStream => {
            out.line("Per-query latency:  ");
            latency_table(&mut out, &s.queries);
        }
        TestScenario::Offline => {}
    }
    if e.scenario != TestScenario::MultiStream {
        latency_table(&mut out, &s.samples);
    }
    out.line(&format!("\n{RULE}\nTest Parameters Used\n{RULE}"));
    parameters(&mut out, e);
    out.text
}

/// The footer every summary ends with (`No warnings...`, `N ERRORS encountered...`).
pub fn render_footer(warnings: u64, errors: u64) -> String {
    let warning = match warnings {
        0 => "\nNo warnings encountered during test.\n".to_string(),
        1 => "\n1 warning encountered. See detailed log.\n".to_string(),
        n => format!("\n{n} warnings encountered. See detailed log.\n"),
    };
    let error = match errors {
        0 => "\nNo errors encountered during test.\n".to_string(),
        1 => "\n1 ERROR encountered. See detailed log.\n".to_string(),
        n => format!("\n{n} ERRORS encountered. See detailed log.\n"),
    };
    warning + &error
}

/// `result_completed_samples_per_sec`: (n − 1) / completion time of the last issued query, n
/// the samples that succeeded (throughputs count only them).
pub fn completed_samples_per_sec(s: &PerformanceSummary) -> f64 {
    n_minus_one(s) / s.result.final_query_all_samples_done_time
}

/// `result_scheduled_samples_per_sec`: (n − 1) / scheduled time of the last query; n counts
/// the failed samples too (they were scheduled; the completed rate counts only successes).
pub fn scheduled_samples_per_sec(s: &PerformanceSummary) -> f64 {
    let n = s.sample_count + s.result.failed_samples;
    n.wrapping_sub(1) as f64 / s.result.final_query_scheduled_time
}

/// `result_samples_per_second` (Offline): n / largest latency.
pub fn samples_per_second(s: &PerformanceSummary) -> f64 {
    s.sample_count as f64 / s.result.max_latency
}

/// `result_qps_with_loadgen_overhead` (SingleStream).
pub fn qps_with_loadgen_overhead(s: &PerformanceSummary) -> f64 {
    n_minus_one(s) / s.result.final_query_issued_time
}

/// `result_qps_without_loadgen_overhead` (SingleStream): 1 / mean latency.
pub fn qps_without_loadgen_overhead(s: &PerformanceSummary) -> f64 {
    1.0 / (s.samples.mean as f64 / 1e9)
}

/// `sample_count - 1` with the unsigned wrap of the original when there are no samples.
fn n_minus_one(s: &PerformanceSummary) -> f64 {
    s.sample_count.wrapping_sub(1) as f64
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "NO"
    }
}

fn latency_table(out: &mut Lines, stats: &crate::results::LatencyStats) {
    out.line(&format!("Min latency (ns)                : {}", stats.min));
    out.line(&format!("Max latency (ns)                : {}", stats.max));
    out.line(&format!("Mean latency (ns)               : {}", stats.mean));
    for (p, v) in PERCENTILES.iter().zip(stats.percentiles) {
        out.line(&format!(
            "{} percentile latency (ns)   : {v}",
            fixed(p * 100.0, 2)
        ));
    }
}

fn parameters(out: &mut Lines, e: &EffectiveSettings) {
    let b = |v: bool| u8::from(v);
    out.line(&format!("samples_per_query : {}", e.samples_per_query));
    out.line(&format!("target_qps : {}", fmt_g(e.target_qps)));
    if e.use_token_latencies {
        out.line(&format!("ttft_latency (ns): {}", e.server_ttft_latency));
        out.line(&format!("tpot_latency (ns): {}", e.server_tpot_latency));
    } else {
        out.line(&format!("target_latency (ns): {}", e.target_latency_ns));
    }
    out.line(&format!("max_async_queries : {}", e.max_async_queries));
    out.line(&format!("min_duration (ms): {}", e.min_duration_ms));
    out.line(&format!("max_duration (ms): {}", e.max_duration_ms));
    out.line(&format!("min_query_count : {}", e.min_query_count));
    out.line(&format!("max_query_count : {}", e.max_query_count));
    out.line(&format!("qsl_rng_seed : {}", e.qsl_rng_seed));
    out.line(&format!(
        "sample_index_rng_seed : {}",
        e.sample_index_rng_seed
    ));
    out.line(&format!("schedule_rng_seed : {}", e.schedule_rng_seed));
    out.line(&format!(
        "accuracy_log_rng_seed : {}",
        e.accuracy_log_rng_seed
    ));
    out.line(&format!(
        "accuracy_log_probability : {}",
        fmt_g(e.accuracy_log_probability)
    ));
    out.line(&format!(
        "accuracy_log_sampling_target : {}",
        e.accuracy_log_sampling_target
    ));
    out.line(&format!("print_timestamps : {}", b(e.print_timestamps)));
    out.line(&format!(
        "performance_issue_unique : {}",
        b(e.performance_issue_unique)
    ));
    out.line(&format!(
        "performance_issue_same : {}",
        b(e.performance_issue_same)
    ));
    out.line(&format!(
        "performance_issue_same_index : {}",
        e.performance_issue_same_index
    ));
    out.line(&format!(
        "performance_sample_count : {}",
        e.performance_sample_count
    ));
    out.line(&format!(
        "accuracy_sample_count : {}",
        e.accuracy_sample_count
    ));
    if e.sample_concatenate_permutation {
        out.line(
            "WARNING: sample_concatenate_permutation was set to true. \nGenerated samples per query might be different as the one in the setting.\nCheck the generated_samples_per_query line in the detailed log for the real\nsamples_per_query value",
        );
    }
}

/// Accumulates `summary(...)` calls: each one ends with a newline.
#[derive(Default)]
struct Lines {
    text: String,
}

impl Lines {
    fn line(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\n');
    }
}
