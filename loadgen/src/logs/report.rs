//! Groups of detail-log lines with fixed key order: requested and effective settings, the
//! logger counters, and the result keys of a performance pass.

use std::io;
use std::time::Instant;

use crate::diagnostics::Site;
use crate::logs::detail::{DetailLog, Value};
use crate::logs::format::fixed;
use crate::logs::summary;
use crate::results::{PerformanceSummary, PERCENTILES};
use crate::settings::{EffectiveSettings, TestScenario, TestSettings};

const SETTINGS: &str = "test_settings_internal.cc";
const RESULTS: &str = "results.cc";

/// The `requested_*` lines.
pub fn log_requested(log: &mut DetailLog, at: Instant, s: &TestSettings) -> io::Result<()> {
    let site = |line| Site::new(SETTINGS, line);
    log.log(at, site(278), "requested_scenario", s.scenario.as_str())?;
    log.log(at, site(279), "requested_test_mode", s.mode.as_str())?;
    match s.scenario {
        TestScenario::SingleStream => {
            log.log(
                at,
                site(284),
                "requested_single_stream_expected_latency_ns",
                s.single_stream_expected_latency_ns,
            )?;
            log.log(
                at,
                site(286),
                "requested_single_stream_target_latency_percentile",
                s.single_stream_target_latency_percentile,
            )?;
        }
        TestScenario::MultiStream => {
            log.log(
                at,
                site(290),
                "requested_multi_stream_expected_latency_ns",
                s.multi_stream_expected_latency_ns,
            )?;
            log.log(
                at,
                site(292),
                "requested_multi_stream_target_latency_percentile",
                s.multi_stream_target_latency_percentile,
            )?;
            log.log(
                at,
                site(294),
                "requested_multi_stream_samples_per_query",
                s.multi_stream_samples_per_query,
            )?;
        }
        TestScenario::Server => {
            log.log(
                at,
                site(298),
                "requested_server_target_qps",
                s.server_target_qps,
            )?;
            log.log(
                at,
                site(299),
                "requested_server_target_latency_ns",
                s.server_target_latency_ns,
            )?;
            log.log(
                at,
                site(301),
                "requested_server_target_latency_percentile",
                s.server_target_latency_percentile,
            )?;
            log.log(
                at,
                site(303),
                "requested_server_coalesce_queries",
                s.server_coalesce_queries,
            )?;
            log.log(
                at,
                site(305),
                "requested_server_find_peak_qps_decimals_of_precision",
                i64::from(s.server_find_peak_qps_decimals_of_precision),
            )?;
            log.log(
                at,
                site(308),
                "requested_server_find_peak_qps_boundary_step_size",
                s.server_find_peak_qps_boundary_step_size,
            )?;
            log.log(
                at,
                site(310),
                "requested_server_max_async_queries",
                s.server_max_async_queries,
            )?;
            log.log(
                at,
                site(312),
                "requested_server_num_issue_query_threads",
                s.server_num_issue_query_threads,
            )?;
        }
        TestScenario::Offline => {
            log.log(
                at,
                site(316),
                "requested_offline_expected_qps",
                s.offline_expected_qps,
            )?;
        }
    }
    log.log(
        at,
        site(322),
        "requested_min_duration_ms",
        s.min_duration_ms,
    )?;
    log.log(
        at,
        site(323),
        "requested_max_duration_ms",
        s.max_duration_ms,
    )?;
    log.log(
        at,
        site(324),
        "requested_min_query_count",
        s.min_query_count,
    )?;
    log.log(
        at,
        site(325),
        "requested_max_query_count",
        s.max_query_count,
    )?;
    log.log(at, site(326), "requested_qsl_rng_seed", s.qsl_rng_seed)?;
    log.log(
        at,
        site(327),
        "requested_sample_index_rng_seed",
        s.sample_index_rng_seed,
    )?;
    log.log(
        at,
        site(329),
        "requested_schedule_rng_seed",
        s.schedule_rng_seed,
    )?;
    log.log(
        at,
        site(330),
        "requested_accuracy_log_rng_seed",
        s.accuracy_log_rng_seed,
    )?;
    log.log(
        at,
        site(332),
        "requested_accuracy_log_probability",
        s.accuracy_log_probability,
    )?;
    log.log(
        at,
        site(334),
        "requested_accuracy_log_sampling_target",
        s.accuracy_log_sampling_target,
    )?;
    log.log(
        at,
        site(336),
        "requested_print_timestamps",
        s.print_timestamps,
    )?;
    log.log(
        at,
        site(337),
        "requested_performance_issue_unique",
        s.performance_issue_unique,
    )?;
    log.log(
        at,
        site(339),
        "requested_performance_issue_same",
        s.performance_issue_same,
    )?;
    log.log(
        at,
        site(341),
        "requested_performance_issue_same_index",
        s.performance_issue_same_index,
    )?;
    log.log(
        at,
        site(343),
        "requested_performance_sample_count_override",
        s.performance_sample_count_override,
    )?;
    log.log(
        at,
        site(345),
        "requested_accuracy_sample_count_override",
        s.accuracy_sample_count_override,
    )?;
    log.log(
        at,
        site(347),
        "requested_sample_concatenate_permutation",
        s.sample_concatenate_permutation,
    )?;
    if s.use_token_latencies {
        log.log(
            at,
            site(351),
            "requested_use_token_latencies",
            s.use_token_latencies,
        )?;
        if s.scenario != TestScenario::Offline {
            log.log(
                at,
                site(354),
                "requested_server_ttft_latency",
                s.server_ttft_latency,
            )?;
            log.log(
                at,
                site(356),
                "requested_server_tpot_latency",
                s.server_tpot_latency,
            )?;
        }
    }
    Ok(())
}

/// The `effective_*` lines.
pub fn log_effective(log: &mut DetailLog, at: Instant, e: &EffectiveSettings) -> io::Result<()> {
    let site = |line| Site::new(SETTINGS, line);
    log.log(at, site(428), "effective_scenario", e.scenario.as_str())?;
    log.log(at, site(429), "effective_test_mode", e.mode.as_str())?;
    log.log(
        at,
        site(431),
        "effective_samples_per_query",
        e.samples_per_query,
    )?;
    log.log(at, site(432), "effective_target_qps", e.target_qps)?;
    log.log(
        at,
        site(433),
        "effective_target_latency_ns",
        e.target_latency_ns,
    )?;
    log.log(
        at,
        site(434),
        "effective_target_latency_percentile",
        e.target_latency_percentile,
    )?;
    log.log(
        at,
        site(436),
        "effective_max_async_queries",
        e.max_async_queries,
    )?;
    log.log(
        at,
        site(437),
        "effective_target_duration_ms",
        e.target_duration_ms,
    )?;
    log.log(
        at,
        site(439),
        "effective_min_duration_ms",
        e.min_duration_ms,
    )?;
    log.log(
        at,
        site(440),
        "effective_max_duration_ms",
        e.max_duration_ms,
    )?;
    log.log(
        at,
        site(441),
        "effective_min_query_count",
        e.min_query_count,
    )?;
    log.log(
        at,
        site(442),
        "effective_max_query_count",
        e.max_query_count,
    )?;
    log.log(
        at,
        site(443),
        "effective_min_sample_count",
        e.min_sample_count,
    )?;
    log.log(at, site(444), "effective_qsl_rng_seed", e.qsl_rng_seed)?;
    log.log(
        at,
        site(445),
        "effective_sample_index_rng_seed",
        e.sample_index_rng_seed,
    )?;
    log.log(
        at,
        site(447),
        "effective_schedule_rng_seed",
        e.schedule_rng_seed,
    )?;
    log.log(
        at,
        site(448),
        "effective_accuracy_log_rng_seed",
        e.accuracy_log_rng_seed,
    )?;
    log.log(
        at,
        site(450),
        "effective_accuracy_log_probability",
        e.accuracy_log_probability,
    )?;
    log.log(
        at,
        site(452),
        "effective_accuracy_log_sampling_target",
        e.accuracy_log_sampling_target,
    )?;
    log.log(
        at,
        site(454),
        "effective_print_timestamps",
        e.print_timestamps,
    )?;
    log.log(
        at,
        site(455),
        "effective_performance_issue_unique",
        e.performance_issue_unique,
    )?;
    log.log(
        at,
        site(457),
        "effective_performance_issue_same",
        e.performance_issue_same,
    )?;
    log.log(
        at,
        site(459),
        "effective_performance_issue_same_index",
        e.performance_issue_same_index,
    )?;
    log.log(
        at,
        site(461),
        "effective_performance_sample_count",
        e.performance_sample_count,
    )?;
    log.log(
        at,
        site(463),
        "effective_accuracy_sample_count",
        e.accuracy_sample_count,
    )?;
    log.log(
        at,
        site(465),
        "effective_sample_concatenate_permutation",
        e.sample_concatenate_permutation,
    )
}

/// The six logger contention counters (always 0: this logger never contends).
pub fn log_contention(log: &mut DetailLog, at: Instant) -> io::Result<()> {
    let keys = [
        ("logger_swap_request_slots_retry_count", 902),
        ("logger_swap_request_slots_retry_retry_count", 904),
        ("logger_swap_request_slots_retry_reencounter_count", 906),
        ("logger_start_reading_entries_retry_count", 908),
        ("logger_tls_total_log_cas_fail_count", 910),
        ("logger_tls_total_swap_buffers_slot_retry_count", 912),
    ];
    for (key, line) in keys {
        log.log(at, Site::new("logging.cc", line), key, 0u64)?;
    }
    Ok(())
}

/// The result keys of a performance pass, ending with `num_errors`.
pub fn log_results(log: &mut DetailLog, at: Instant, s: &PerformanceSummary) -> io::Result<()> {
    let site = |line| Site::new(RESULTS, line);
    let valid = s.all_constraints_met();
    log.log(
        at,
        site(674),
        "result_validity",
        if valid { "VALID" } else { "INVALID" },
    )?;
    if s.has_perf_constraints() {
        log.log(
            at,
            site(677),
            "result_perf_constraints_met",
            s.perf_constraints_met,
        )?;
    }
    log.log(at, site(679), "result_min_duration_met", s.min_duration_met)?;
    log.log(at, site(680), "result_min_queries_met", s.min_queries_met)?;
    log.log(at, site(681), "early_stopping_met", s.early_stopping_met)?;
    // Not official keys: only when samples failed (the official LoadGen has no such samples).
    if !s.no_failed_samples() {
        log.log(
            at,
            Site::new("results.rs", line!()),
            "result_failed_sample_count",
            s.result.failed_samples,
        )?;
    }
    if !valid {
        let mut reason = String::new();
        if !s.perf_constraints_met {
            reason += &s.perf_constraints_recommendation;
            reason.push(' ');
        }
        if !s.min_duration_met {
            reason += &s.min_duration_recommendation;
            reason.push(' ');
        }
        if !s.min_queries_met {
            reason += "The test exited early, before enough queries were issued.";
        }
        if let Some(failures) = s.failure_text() {
            if !reason.is_empty() && !reason.ends_with(' ') {
                reason.push(' ');
            }
            reason += &failures;
        }
        // Escaped: a SUT's error text may hold quotes (the official reasons have none).
        log.log(
            at,
            site(695),
            "result_invalid_reason",
            Value::Escaped(reason.replace('\n', " ")),
        )?;
    }
    log.log(
        at,
        site(700),
        "early_stopping_result",
        s.early_stopping_text.replace('\n', " "),
    )?;
    log.log(at, site(712), "result_query_count", s.query_count)?;
    if s.settings.scenario == TestScenario::Server {
        log.log(
            at,
            site(714),
            "result_overlatency_query_count",
            s.overlatency_query_count,
        )?;
    }
    match s.settings.scenario {
        TestScenario::SingleStream => {
            log.log(
                at,
                site(735),
                "result_qps_with_loadgen_overhead",
                summary::qps_with_loadgen_overhead(s),
            )?;
            log.log(
                at,
                site(736),
                "result_qps_without_loadgen_overhead",
                summary::qps_without_loadgen_overhead(s),
            )?;
            log.log(
                at,
                site(737),
                "early_stopping_latency_ss",
                s.early_stopping_latency_ss,
            )?;
            log.log(
                at,
                site(739),
                "early_stopping_latency_ms",
                s.early_stopping_latency_ms,
            )?;
        }
        TestScenario::MultiStream => {
            log.log(at, site(719), "result_min_query_latency_ns", s.queries.min)?;
            log.log(at, site(720), "result_max_query_latency_ns", s.queries.max)?;
            log.log(
                at,
                site(721),
                "result_mean_query_latency_ns",
                s.queries.mean,
            )?;
            for (p, v) in PERCENTILES.iter().zip(s.queries.percentiles) {
                let key = format!(
                    "result_{}_percentile_per_query_latency_ns",
                    fixed(p * 100.0, 2)
                );
                log.log(at, site(724), &key, v)?;
            }
            log.log(
                at,
                site(745),
                "early_stopping_latency_ms",
                s.early_stopping_latency_ms,
            )?;
        }
        TestScenario::Server => {
            log.log(
                at,
                site(760),
                "result_scheduled_samples_per_sec",
                summary::scheduled_samples_per_sec(s),
            )?;
            log.log(
                at,
                site(763),
                "result_completed_samples_per_sec",
                summary::completed_samples_per_sec(s),
            )?;
        }
        TestScenario::Offline => {
            log.log(
                at,
                site(768),
                "result_samples_per_second",
                summary::samples_per_second(s),
            )?;
        }
    }
    log.log(at, site(774), "result_min_latency_ns", s.samples.min)?;
    log.log(at, site(775), "result_max_latency_ns", s.samples.max)?;
    log.log(at, site(776), "result_mean_latency_ns", s.samples.mean)?;
    for (p, v) in PERCENTILES.iter().zip(s.samples.percentiles) {
        let key = format!("result_{}_percentile_latency_ns", fixed(p * 100.0, 2));
        log.log(at, site(778), &key, v)?;
    }
    let errors = log.error_count();
    log.log(at, site(852), "num_errors", errors)
}
