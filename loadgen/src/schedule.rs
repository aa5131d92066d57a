//! Deterministic test plans: which QSL samples are loaded together (loadable sets) and the
//! pre-generated queries (samples and scheduled times) of one issuing pass, exactly as the
//! official `GenerateLoadableSets` and `GenerateQueries` produce them.

use crate::rng::Mt19937;
use crate::settings::{EffectiveSettings, TestScenario};

/// Samples loaded into RAM together; `distribution_end` excludes MultiStream padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadableSet {
    pub samples: Vec<usize>,
    pub distribution_end: usize,
}

/// Which kind of pass queries are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    Accuracy,
    Performance,
}

/// Why queries cannot be generated (conditions that crash or misbehave in the C++ original).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("the loadable sample set is empty")]
    EmptySet,
    #[error("samples_per_query is 0")]
    ZeroSamplesPerQuery,
    #[error("sample position {position} is outside the loaded set of {len} samples")]
    OutOfRange { position: usize, len: usize },
    #[error("the unique sample list ran out after {0} draws")]
    Exhausted(usize),
    /// The pre-generated schedule would not fit in the memory the machine has available.
    #[error(
        "the {scenario} schedule of these settings would need {needed} of memory \
         ({queries} queries, {samples} samples{why}), more than the {available} available; \
         {advice}",
        scenario = .scenario.as_str(),
        needed = if .estimate.bytes.is_finite() {
            format!("about {}", human_bytes(.estimate.bytes))
        } else {
            "an unbounded amount".to_string()
        },
        queries = human_count(.estimate.queries),
        samples = human_count(.estimate.samples),
        why = if .estimate.queries.is_finite() { "" } else {
            ": the interval between queries rounds down to 0 ns, so it never ends"
        },
        available = human_bytes(*.available as f64),
        advice = memory_advice(*.scenario),
    )]
    TooLarge {
        scenario: TestScenario,
        estimate: PlanEstimate,
        available: u64,
    },
}

/// Size of a pass's pre-generated schedule, estimated from the settings without generating it
/// (see [`estimate_plan`]). Counts are floating point: absurd settings exceed any integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanEstimate {
    /// Queries generated (infinite when the interval between them rounds down to 0 ns).
    pub queries: f64,
    /// Samples generated over those queries.
    pub samples: f64,
    /// Bytes the runner holds for them during the pass.
    pub bytes: f64,
}

/// Bytes held per generated query: the plan's entry (40, counted twice for the growth of the
/// list), its sample list's allocation overhead (16), the pass's scheduled/issued/done times and
/// outstanding count (56) and the MultiStream query latency (8).
pub const BYTES_PER_QUERY: f64 = 160.0;
/// Bytes held per generated sample: the plan's entry (24), the pass's query index and latency
/// (12), the collected latency (8) and, for a SUT reporting server timings, the timing and its
/// breakdown entry (64); rounded up.
pub const BYTES_PER_SAMPLE: f64 = 112.0;

/// Estimates the schedule [`generate_queries`] makes for one pass over a loaded set of
/// `set_size` samples (padding included), following the same rules: a query every
/// ⌊1e9/target_qps⌋ ns over 2 × target_duration (SingleStream, MultiStream), Poisson arrivals
/// over 1 × target_duration (Server: the mean of the truncated exponential interval), at least
/// min_query_count queries; Offline one query of samples_per_query samples; accuracy and
/// `performance_issue_unique` passes one query per `samples_per_query` loaded samples.
/// Memory = queries × [`BYTES_PER_QUERY`] + samples × [`BYTES_PER_SAMPLE`] + 8 bytes per
/// equal-issue position and per sample of the largest query (the generator's buffers).
pub fn estimate_plan(
    settings: &EffectiveSettings,
    kind: PassKind,
    set_size: usize,
) -> PlanEstimate {
    let scenario = settings.scenario;
    let accuracy = kind == PassKind::Accuracy;
    let set = set_size as f64;
    let multiplier = if scenario == TestScenario::Server {
        1.0
    } else {
        2.0
    };
    let mut gen_ns = multiplier * settings.target_duration_ms as f64 * 1e6;
    let mut min_queries = settings.min_query_count as f64;
    let mut samples_per_query = settings.samples_per_query as f64;
    if accuracy && scenario == TestScenario::Offline {
        samples_per_query = set;
    }
    if samples_per_query == 0.0 {
        return PlanEstimate {
            queries: 0.0,
            samples: 0.0,
            bytes: 0.0,
        };
    }
    if accuracy || settings.performance_issue_unique {
        gen_ns = 0.0;
        min_queries = (set / samples_per_query).floor();
    }
    if !accuracy && settings.sample_concatenate_permutation && set > 0.0 {
        if scenario == TestScenario::Offline {
            samples_per_query = (samples_per_query / set).ceil() * set;
        } else {
            // Padded to a multiple of the set, and raised by a set when reached early.
            min_queries = (min_queries / set).ceil() * set + set;
        }
    }
    let by_time = if gen_ns <= 0.0 {
        0.0
    } else {
        // Mean interval in whole ns, as the generator truncates each one.
        let interval_ns = if scenario == TestScenario::Server {
            let mean_ns = 1e9 / settings.target_qps;
            1.0 / (1.0 / mean_ns).exp_m1()
        } else {
            (1e9 / settings.target_qps).floor()
        };
        if interval_ns > 0.0 {
            (gen_ns / interval_ns).ceil() + 1.0
        } else {
            f64::INFINITY
        }
    };
    let queries = min_queries.max(by_time);
    let samples = queries * samples_per_query;
    let equal_issue_positions = if set > 0.0 {
        (min_queries / set).ceil() * set
    } else {
        0.0
    };
    let bytes = queries * BYTES_PER_QUERY
        + samples * BYTES_PER_SAMPLE
        + 8.0 * (equal_issue_positions + samples_per_query);
    PlanEstimate {
        queries,
        samples,
        bytes,
    }
}

/// Refuses a pass whose schedule ([`estimate_plan`]) needs more than `available` bytes.
pub fn check_plan_memory(
    settings: &EffectiveSettings,
    kind: PassKind,
    set_size: usize,
    available: u64,
) -> Result<PlanEstimate, ScheduleError> {
    let estimate = estimate_plan(settings, kind, set_size);
    if estimate.bytes > available as f64 || estimate.bytes.is_nan() {
        return Err(ScheduleError::TooLarge {
            scenario: settings.scenario,
            estimate,
            available,
        });
    }
    Ok(estimate)
}

/// Checks the passes a test with these settings runs (the first performance pass and the
/// accuracy passes its mode implies) against `available` bytes, or against the machine's
/// available memory ([`available_memory`]) when `None` (no check where that is unknown). A
/// FindPeakPerformance search raises the QPS later; the runner checks every pass again.
pub fn check_test_memory(
    settings: &EffectiveSettings,
    qsl_total_count: u64,
    available: Option<u64>,
) -> Result<(), ScheduleError> {
    let Some(available) = available.or_else(available_memory) else {
        return Ok(());
    };
    let padding = if settings.scenario == TestScenario::MultiStream {
        settings.samples_per_query.saturating_sub(1)
    } else {
        0
    };
    let set_size = |count: u64| {
        let n = count.min(qsl_total_count);
        let n = match settings.performance_sample_count {
            0 => n,
            chunk => n.min(chunk),
        };
        (n + if n > 0 { padding } else { 0 }) as usize
    };
    use crate::settings::TestMode;
    if settings.mode != TestMode::PerformanceOnly && settings.mode != TestMode::FindPeakPerformance
    {
        let size = set_size(settings.accuracy_sample_count);
        check_plan_memory(settings, PassKind::Accuracy, size, available)?;
    }
    if settings.mode != TestMode::AccuracyOnly {
        let size = set_size(settings.performance_sample_count);
        check_plan_memory(settings, PassKind::Performance, size, available)?;
    }
    Ok(())
}

/// `MemAvailable` of `/proc/meminfo`, in bytes; `None` where it cannot be read.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    let unit = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(unit)
}

fn memory_advice(scenario: TestScenario) -> &'static str {
    match scenario {
        TestScenario::Server => "lower target_qps, min_duration or min_query_count",
        TestScenario::Offline => {
            "lower target_qps (the expected QPS), min_duration or min_query_count: the one query \
             holds max(min_query_count, 1.1 x min_duration x target_qps) samples"
        }
        TestScenario::SingleStream | TestScenario::MultiStream => {
            "raise target_latency (the expected latency: one query per expected latency is \
             generated over 2 x min_duration), or lower min_duration, min_query_count or \
             samples_per_query"
        }
    }
}

/// `123456` below ten million, `1.23e14` above.
fn human_count(n: f64) -> String {
    if !n.is_finite() {
        "unbounded".to_string()
    } else if n < 1e7 {
        format!("{n:.0}")
    } else {
        format!("{n:.2e}")
    }
}

/// Bytes in KiB, MiB, GiB, TiB...
fn human_bytes(bytes: f64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} bytes")
    } else if value >= 1024.0 {
        format!("{value:.2e} {}", units[unit])
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Generates the loadable sets from the first `count` QSL indices (capped at the QSL size).
pub fn generate_loadable_sets(
    settings: &EffectiveSettings,
    qsl_total_count: u64,
    count: u64,
) -> Vec<LoadableSet> {
    let n = count.min(qsl_total_count) as usize;
    let mut samples: Vec<usize> = (0..n).collect();
    Mt19937::new(settings.qsl_rng_seed).shuffle(&mut samples);
    let set_size = settings.performance_sample_count as usize;
    let padding = if settings.scenario == TestScenario::MultiStream {
        (settings.samples_per_query as usize).saturating_sub(1)
    } else {
        0
    };
    let chunks: Vec<&[usize]> = if set_size == 0 {
        // A set size of 0 never completes a chunk: everything lands in one final set.
        if samples.is_empty() {
            Vec::new()
        } else {
            vec![samples.as_slice()]
        }
    } else {
        samples.chunks(set_size).collect()
    };
    chunks
        .into_iter()
        .map(|chunk| {
            let mut set = chunk.to_vec();
            for i in 0..padding {
                let p = set[i % chunk.len()];
                set.push(p);
            }
            LoadableSet {
                samples: set,
                distribution_end: chunk.len(),
            }
        })
        .collect()
}

/// Sequence numbers and the accuracy-log draw of every generated sample, shared by all passes
/// of one test (official `SequenceGen`; its accuracy-log engine is never seeded).
#[derive(Clone)]
pub struct SequenceGen {
    next_query: u64,
    next_sample: u64,
    accuracy_log_rng: Mt19937,
}

impl Default for SequenceGen {
    fn default() -> Self {
        Self {
            next_query: 0,
            next_sample: 0,
            accuracy_log_rng: Mt19937::new(Mt19937::DEFAULT_SEED),
        }
    }
}

impl SequenceGen {
    /// A fresh generator (one per test).
    pub fn new() -> Self {
        Self::default()
    }
}

/// One generated sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedSample {
    /// Global sample sequence number (`seq_id` in the accuracy log; the response id).
    pub seq_id: u64,
    /// QSL index.
    pub index: usize,
    /// Uniform [0,1) draw deciding accuracy logging in performance mode.
    pub accuracy_log_val: f64,
}

/// One generated query.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedQuery {
    pub seq_id: u64,
    /// Offset from the test start at which the query is scheduled (Server) or generated.
    pub scheduled_delta_ns: i64,
    pub samples: Vec<PlannedSample>,
}

/// The queries of one issuing pass and what is logged about them.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPlan {
    pub queries: Vec<PlannedQuery>,
    /// `generated_samples_per_query`.
    pub samples_per_query: u64,
    /// `generated_query_duration`: the timestamp after the last query, ns.
    pub duration_ns: i64,
    /// Sequence id of the first sample of this pass.
    pub first_sample_id: u64,
}

impl QueryPlan {
    /// Number of generated samples.
    pub fn sample_count(&self) -> usize {
        self.queries.iter().map(|q| q.samples.len()).sum()
    }
}

/// A list of positions handed out in order (accuracy and "unique" distributions).
struct PositionList {
    positions: Vec<usize>,
    next: usize,
}

impl PositionList {
    fn shuffled(count: usize, stride: usize, rng: &mut Mt19937) -> Self {
        let mut positions: Vec<usize> = (0..count).step_by(stride.max(1)).collect();
        rng.shuffle(&mut positions);
        Self { positions, next: 0 }
    }

    fn take(&mut self) -> Result<usize, ScheduleError> {
        let p = *self
            .positions
            .get(self.next)
            .ok_or(ScheduleError::Exhausted(self.next))?;
        self.next += 1;
        Ok(p)
    }

    /// Cycles through the list (equal-issue distribution).
    fn take_cyclic(&mut self) -> Result<usize, ScheduleError> {
        if self.positions.is_empty() {
            return Err(ScheduleError::Exhausted(0));
        }
        let p = self.positions[self.next % self.positions.len()];
        self.next += 1;
        Ok(p)
    }
}

fn equal_issue_list(sample_count: usize, set_size: usize, rng: &mut Mt19937) -> PositionList {
    let mut positions = Vec::new();
    if set_size > 0 {
        let mut perm: Vec<usize> = (0..set_size).collect();
        let mut j = 0;
        while j < sample_count {
            rng.shuffle(&mut perm);
            positions.extend_from_slice(&perm);
            j += set_size;
        }
    }
    PositionList { positions, next: 0 }
}

/// `std::chrono::duration_cast<nanoseconds>(duration<double>(seconds))`.
fn seconds_to_ns(seconds: f64) -> i64 {
    (seconds * 1e9) as i64
}

fn at(set: &[usize], position: usize) -> Result<usize, ScheduleError> {
    set.get(position).copied().ok_or(ScheduleError::OutOfRange {
        position,
        len: set.len(),
    })
}

/// Generates the queries of one pass over `set` (official `GenerateQueries`).
pub fn generate_queries(
    settings: &EffectiveSettings,
    kind: PassKind,
    set: &LoadableSet,
    seq: &mut SequenceGen,
) -> Result<QueryPlan, ScheduleError> {
    let loaded = &set.samples;
    if loaded.is_empty() || set.distribution_end == 0 {
        return Err(ScheduleError::EmptySet);
    }
    let scenario = settings.scenario;
    let accuracy = kind == PassKind::Accuracy;
    let multiplier: i64 = if scenario == TestScenario::Server {
        1
    } else {
        2
    };
    let mut gen_duration_ns = multiplier * settings.target_duration_ms as i64 * 1_000_000;
    let mut min_queries = settings.min_query_count as usize;
    let mut samples_per_query = settings.samples_per_query as usize;
    if accuracy && scenario == TestScenario::Offline {
        samples_per_query = set.distribution_end;
    }
    if samples_per_query == 0 {
        return Err(ScheduleError::ZeroSamplesPerQuery);
    }
    if accuracy || settings.performance_issue_unique {
        gen_duration_ns = 0;
        min_queries = loaded.len() / samples_per_query;
    }

    let mut sample_rng = Mt19937::new(settings.sample_index_rng_seed);
    let mut schedule_rng = Mt19937::new(settings.schedule_rng_seed);
    let stride = if scenario == TestScenario::MultiStream {
        samples_per_query
    } else {
        1
    };
    let mut accuracy_positions = if accuracy {
        Some(PositionList::shuffled(
            set.distribution_end,
            stride,
            &mut sample_rng,
        ))
    } else {
        None
    };
    let mut unique_positions =
        PositionList::shuffled(set.distribution_end, stride, &mut sample_rng);
    let mut equal_issue_positions = equal_issue_list(min_queries, loaded.len(), &mut sample_rng);
    let period_ns = seconds_to_ns(1.0 / settings.target_qps);

    let equal_issue = settings.sample_concatenate_permutation;
    if !accuracy && equal_issue {
        if scenario == TestScenario::Offline && !samples_per_query.is_multiple_of(loaded.len()) {
            samples_per_query += loaded.len() - samples_per_query % loaded.len();
        } else if scenario != TestScenario::Offline && !min_queries.is_multiple_of(loaded.len()) {
            min_queries += loaded.len() - min_queries % loaded.len();
        }
    }

    // Draws one sample position for SingleStream/Server, or a start position for MultiStream.
    let mut draw = |rng: &mut Mt19937, allow_equal_issue: bool| -> Result<usize, ScheduleError> {
        if settings.performance_issue_unique {
            unique_positions.take()
        } else if settings.performance_issue_same {
            Ok(settings.performance_issue_same_index as usize)
        } else if allow_equal_issue && equal_issue {
            equal_issue_positions.take_cyclic()
        } else if let Some(list) = accuracy_positions.as_mut() {
            list.take()
        } else {
            let end = set.distribution_end as u64;
            // `uniform_int_distribution<int>(0, end - 1)`.
            Ok(rng.uniform_int(0, end - 1) as usize)
        }
    };

    let first_sample_id = seq.next_sample;
    let mut queries: Vec<PlannedQuery> = Vec::new();
    let mut timestamp: i64 = 0;
    let mut prev_timestamp: i64 = 0;
    let mut indices = vec![0usize; samples_per_query];
    while prev_timestamp < gen_duration_ns || queries.len() < min_queries {
        match scenario {
            TestScenario::MultiStream => {
                let start = draw(&mut sample_rng, false)?;
                for (k, slot) in indices.iter_mut().enumerate() {
                    *slot = at(loaded, start + k)?;
                }
            }
            TestScenario::Offline => {
                let n = loaded.len();
                if settings.performance_issue_same {
                    let same = at(loaded, settings.performance_issue_same_index as usize)?;
                    indices.iter_mut().for_each(|s| *s = same);
                } else {
                    let full_repeats = samples_per_query / n;
                    for r in 0..full_repeats {
                        let chunk = &mut indices[r * n..(r + 1) * n];
                        chunk.copy_from_slice(loaded);
                        if equal_issue {
                            sample_rng.shuffle(chunk);
                        }
                    }
                    let remainder = samples_per_query % n;
                    indices[full_repeats * n..].copy_from_slice(&loaded[..remainder]);
                }
            }
            TestScenario::SingleStream | TestScenario::Server => {
                for slot in indices.iter_mut() {
                    *slot = at(loaded, draw(&mut sample_rng, true)?)?;
                }
            }
        }
        let query_id = seq.next_query;
        seq.next_query += 1;
        let samples = indices
            .iter()
            .map(|&index| {
                let s = PlannedSample {
                    seq_id: seq.next_sample,
                    index,
                    accuracy_log_val: seq.accuracy_log_rng.uniform_unit(),
                };
                seq.next_sample += 1;
                s
            })
            .collect();
        queries.push(PlannedQuery {
            seq_id: query_id,
            scheduled_delta_ns: timestamp,
            samples,
        });
        prev_timestamp = timestamp;
        timestamp += if scenario == TestScenario::Server {
            seconds_to_ns(schedule_rng.exponential(settings.target_qps))
        } else {
            period_ns
        };
        if equal_issue
            && queries.len() >= min_queries
            && prev_timestamp < gen_duration_ns
            && scenario != TestScenario::Offline
        {
            min_queries += loaded.len();
        }
    }
    // Offline accuracy uses the whole set as one query, so no remainder query is ever needed.
    Ok(QueryPlan {
        queries,
        samples_per_query: samples_per_query as u64,
        duration_ns: timestamp,
        first_sample_id,
    })
}

/// The accuracy-log offset: the first U[0,1) draw of `mt19937(accuracy_log_rng_seed)`.
pub fn accuracy_log_offset(accuracy_log_rng_seed: u64) -> f64 {
    Mt19937::new(accuracy_log_rng_seed).uniform_unit()
}

/// The probability with which performance-mode samples are written to the accuracy log.
pub fn accuracy_log_probability(settings: &EffectiveSettings) -> f64 {
    if settings.accuracy_log_sampling_target == 0 {
        return settings.accuracy_log_probability;
    }
    let mut expected = (settings.target_qps * settings.min_duration_ms as f64 / 1000.0) as u64;
    let mut minimum = settings
        .min_query_count
        .wrapping_mul(settings.samples_per_query);
    if settings.scenario == TestScenario::Offline {
        minimum = settings.min_sample_count;
    } else {
        expected = expected.wrapping_mul(settings.samples_per_query);
    }
    settings.accuracy_log_sampling_target as f64 / expected.max(minimum) as f64
}

/// Whether a completed sample goes to the accuracy log.
pub fn should_log_accuracy(
    kind: PassKind,
    accuracy_log_val: f64,
    offset: f64,
    probability: f64,
) -> bool {
    if kind == PassKind::Accuracy {
        return true;
    }
    let sum = accuracy_log_val + offset;
    let v = if sum < 1.0 { sum } else { sum - 1.0 };
    v <= probability
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{TestMode, TestSettings};

    const QSL_SEED: u64 = 2_085_463_073_848_966_840;
    const SAMPLE_SEED: u64 = 2_747_215_439_041_700_203;
    const SCHEDULE_SEED: u64 = 16_159_082_839_903_944_936;

    fn settings(scenario: TestScenario, f: impl FnOnce(&mut TestSettings)) -> EffectiveSettings {
        let mut s = TestSettings {
            scenario,
            qsl_rng_seed: QSL_SEED,
            sample_index_rng_seed: SAMPLE_SEED,
            schedule_rng_seed: SCHEDULE_SEED,
            performance_sample_count_override: 1024,
            ..TestSettings::default()
        };
        f(&mut s);
        EffectiveSettings::new(&s, 1024, 5000).0
    }

    fn plan(e: &EffectiveSettings, kind: PassKind) -> QueryPlan {
        let count = if kind == PassKind::Accuracy {
            e.accuracy_sample_count
        } else {
            e.performance_sample_count
        };
        let sets = generate_loadable_sets(e, 5000, count);
        generate_queries(e, kind, &sets[0], &mut SequenceGen::new())
            .unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn server_schedule_vectors() {
        for (qps, ms, count, duration) in [
            (200.0, 3000, 601, 3_000_770_763),
            (500.0, 5000, 2572, 5_001_366_707),
        ] {
            let e = settings(TestScenario::Server, |s| {
                s.server_target_qps = qps;
                s.min_duration_ms = ms;
            });
            let p = plan(&e, PassKind::Performance);
            assert_eq!(p.queries.len(), count);
            assert_eq!(p.duration_ns, duration);
        }
    }

    #[test]
    fn single_stream_vectors() {
        let e = settings(TestScenario::SingleStream, |s| {
            s.single_stream_expected_latency_ns = 1e6;
            s.min_duration_ms = 3000;
        });
        let sets = generate_loadable_sets(&e, 5000, e.performance_sample_count);
        assert_eq!(
            &sets[0].samples[..8],
            &[216, 267, 822, 906, 663, 580, 710, 908]
        );
        let p = plan(&e, PassKind::Performance);
        assert_eq!(p.queries.len(), 6001);
        assert_eq!(p.duration_ns, 6_001_000_000);
        assert_eq!(p.samples_per_query, 1);
    }

    #[test]
    fn accuracy_mode_covers_every_sample_once() {
        let e = settings(TestScenario::SingleStream, |s| {
            s.mode = TestMode::AccuracyOnly
        });
        let sets = generate_loadable_sets(&e, 5000, e.accuracy_sample_count);
        assert_eq!(sets.len(), 5);
        assert_eq!(sets[4].distribution_end, 5000 - 4 * 1024);
        let mut seq = SequenceGen::new();
        let mut seen = vec![0u32; 5000];
        for set in &sets {
            let p = generate_queries(&e, PassKind::Accuracy, set, &mut seq)
                .unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(p.duration_ns, p.queries.len() as i64 * 1_000_000);
            for q in &p.queries {
                seen[q.samples[0].index] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
        assert_eq!(seq.next_sample, 5000);
    }

    #[test]
    fn multistream_padding_and_contiguous_queries() {
        let e = settings(TestScenario::MultiStream, |s| {
            s.multi_stream_expected_latency_ns = 1e6;
            s.min_duration_ms = 100;
            s.min_query_count = 662;
        });
        let sets = generate_loadable_sets(&e, 5000, e.performance_sample_count);
        let set = &sets[0];
        assert_eq!(set.samples.len(), 1024 + 7);
        assert_eq!(&set.samples[1024..], &set.samples[..7]);
        let p = generate_queries(&e, PassKind::Performance, set, &mut SequenceGen::new())
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(p.queries.len(), 662);
        for q in &p.queries {
            let start = set
                .samples
                .iter()
                .position(|&x| x == q.samples[0].index)
                .unwrap_or(usize::MAX);
            let idx: Vec<usize> = q.samples.iter().map(|s| s.index).collect();
            assert_eq!(idx, set.samples[start..start + 8].to_vec());
        }
    }

    #[test]
    fn offline_single_query_repeats_the_set() {
        let e = settings(TestScenario::Offline, |s| {
            s.offline_expected_qps = 10000.0;
            s.min_duration_ms = 2000;
            s.min_query_count = 24576;
        });
        let p = plan(&e, PassKind::Performance);
        assert_eq!(p.queries.len(), 1);
        assert_eq!(p.samples_per_query, 24576);
        assert_eq!(p.queries[0].samples.len(), 24576);
        assert_eq!(p.duration_ns, 100_000);
        assert_eq!(
            p.queries[0].samples[1024].index,
            p.queries[0].samples[0].index
        );
    }

    #[test]
    fn offline_accuracy_is_one_query_per_set_in_loaded_order() {
        let e = settings(TestScenario::Offline, |s| s.mode = TestMode::AccuracyOnly);
        let sets = generate_loadable_sets(&e, 5000, e.accuracy_sample_count);
        let p = generate_queries(&e, PassKind::Accuracy, &sets[0], &mut SequenceGen::new())
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(p.queries.len(), 1);
        let idx: Vec<usize> = p.queries[0].samples.iter().map(|s| s.index).collect();
        assert_eq!(idx, sets[0].samples);
    }

    #[test]
    fn issue_same_and_unique() {
        let e = settings(TestScenario::SingleStream, |s| {
            s.performance_issue_same = true;
            s.performance_issue_same_index = 3;
            s.min_duration_ms = 10;
        });
        let sets = generate_loadable_sets(&e, 5000, e.performance_sample_count);
        let p = plan(&e, PassKind::Performance);
        assert!(p
            .queries
            .iter()
            .all(|q| q.samples[0].index == sets[0].samples[3]));
        let e = settings(TestScenario::SingleStream, |s| {
            s.performance_issue_unique = true
        });
        let p = plan(&e, PassKind::Performance);
        let mut idx: Vec<usize> = p.queries.iter().map(|q| q.samples[0].index).collect();
        idx.sort_unstable();
        let mut set = sets[0].samples.clone();
        set.sort_unstable();
        assert_eq!(idx, set);
    }

    #[test]
    fn equal_issue_pads_to_whole_permutations() {
        let e = settings(TestScenario::Server, |s| {
            s.sample_concatenate_permutation = true;
            s.server_target_qps = 100.0;
            s.min_duration_ms = 1000;
        });
        let p = plan(&e, PassKind::Performance);
        assert_eq!(p.queries.len() % 1024, 0);
        let mut counts = vec![0u32; 1024];
        for q in &p.queries {
            counts[q.samples[0].index] += 1;
        }
        assert!(counts.iter().all(|&c| c == 1));
    }

    #[test]
    fn accuracy_logging_decisions() {
        assert!(should_log_accuracy(PassKind::Accuracy, 0.9, 0.5, 0.0));
        assert!(should_log_accuracy(PassKind::Performance, 0.7, 0.4, 0.2));
        assert!(!should_log_accuracy(PassKind::Performance, 0.7, 0.2, 0.2));
        let e = settings(TestScenario::Server, |s| {
            s.server_target_qps = 100.0;
            s.min_duration_ms = 600_000;
            s.accuracy_log_sampling_target = 4096;
        });
        assert_eq!(accuracy_log_probability(&e), 4096.0 / 60_000.0);
        let offset = accuracy_log_offset(720_381_539_243_781_796);
        assert!((0.0..1.0).contains(&offset));
    }

    #[test]
    fn empty_set_is_an_error() {
        let e = settings(TestScenario::SingleStream, |_| {});
        let set = LoadableSet {
            samples: Vec::new(),
            distribution_end: 0,
        };
        assert_eq!(
            generate_queries(&e, PassKind::Performance, &set, &mut SequenceGen::new()),
            Err(ScheduleError::EmptySet)
        );
    }

    /// The estimate against the real generator for the reference settings of every scenario.
    #[test]
    fn the_plan_estimate_follows_the_generator() {
        let cases = [
            settings(TestScenario::Server, |s| {
                s.server_target_qps = 500.0;
                s.min_duration_ms = 5000;
            }),
            settings(TestScenario::SingleStream, |s| {
                s.single_stream_expected_latency_ns = 1e6;
                s.min_duration_ms = 3000;
            }),
            settings(TestScenario::MultiStream, |s| {
                s.multi_stream_expected_latency_ns = 1e6;
                s.min_duration_ms = 100;
                s.min_query_count = 662;
            }),
            settings(TestScenario::Offline, |s| {
                s.offline_expected_qps = 10000.0;
                s.min_duration_ms = 2000;
                s.min_query_count = 24576;
            }),
            settings(TestScenario::SingleStream, |s| {
                s.mode = TestMode::AccuracyOnly;
            }),
        ];
        for e in &cases {
            let kind = if e.mode == TestMode::AccuracyOnly {
                PassKind::Accuracy
            } else {
                PassKind::Performance
            };
            let p = plan(e, kind);
            let sets = generate_loadable_sets(e, 5000, e.performance_sample_count);
            let est = estimate_plan(e, kind, sets[0].samples.len());
            let (queries, samples) = (p.queries.len() as f64, p.sample_count() as f64);
            let close = |a: f64, b: f64| (a - b).abs() <= 0.05 * b.max(1.0);
            assert!(
                close(est.queries, queries) && close(est.samples, samples),
                "{:?}: estimated {est:?}, generated {queries} queries {samples} samples",
                e.scenario
            );
            assert!(est.bytes >= samples * BYTES_PER_SAMPLE);
            assert!(check_plan_memory(e, kind, sets[0].samples.len(), 1 << 30).is_ok());
        }
        // SingleStream's count is exact: ⌈2 × 3 s / 1 ms⌉ + 1.
        assert_eq!(
            estimate_plan(&cases[1], PassKind::Performance, 1024).queries,
            6001.0
        );
    }

    #[test]
    fn a_schedule_larger_than_the_memory_is_refused_with_advice() {
        let huge = settings(TestScenario::Server, |s| {
            s.server_target_qps = 1e12;
            s.min_duration_ms = 600_000;
        });
        // A mean interval of 1 ps truncates to 0 ns nearly always: the generator never ends.
        let est = estimate_plan(&huge, PassKind::Performance, 1024);
        assert!(est.queries.is_infinite(), "{est:?}");
        let err = check_plan_memory(&huge, PassKind::Performance, 1024, 16 << 30).unwrap_err();
        let text = err.to_string();
        for part in [
            "the Server schedule of these settings would need an unbounded amount of memory",
            "rounds down to 0 ns",
            "more than the 16.0 GiB available",
            "lower target_qps, min_duration or min_query_count",
        ] {
            assert!(text.contains(part), "{text}");
        }
        // 1e8 QPS over 600 s: a mean truncated interval of 1/(e^0.1 − 1) = 9.51 ns.
        let big = settings(TestScenario::Server, |s| {
            s.server_target_qps = 1e8;
            s.min_duration_ms = 600_000;
        });
        let est = estimate_plan(&big, PassKind::Performance, 1024);
        assert!((est.queries / 6.31e10 - 1.0).abs() < 0.01, "{est:?}");
        let text = check_plan_memory(&big, PassKind::Performance, 1024, 16 << 30)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("would need about 15.6 TiB of memory (6.31e10 queries, 6.31e10 samples)"),
            "{text}"
        );
        assert!(
            check_test_memory(&huge, 5000, Some(16 << 30)).is_err(),
            "the whole-test check sees it too"
        );
        // The accuracy pass of the same settings is small: one query per loaded sample.
        assert!(check_plan_memory(&huge, PassKind::Accuracy, 1024, 16 << 30).is_ok());

        // A SingleStream interval that rounds down to 0 ns never ends.
        let endless = settings(TestScenario::SingleStream, |s| {
            s.single_stream_expected_latency_ns = 0.5;
            s.min_duration_ms = 1;
        });
        let text = check_plan_memory(&endless, PassKind::Performance, 1024, u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("an unbounded amount") && text.contains("rounds down to 0 ns"),
            "{text}"
        );
        assert!(text.contains("raise target_latency"), "{text}");

        // Offline holds one query of max(min_query_count, 1.1 × min_duration × target_qps).
        let offline = settings(TestScenario::Offline, |s| {
            s.offline_expected_qps = 1e12;
            s.min_duration_ms = 600_000;
        });
        assert_eq!(
            estimate_plan(&offline, PassKind::Performance, 1024).queries,
            1.0
        );
        let text = check_test_memory(&offline, 5000, Some(16 << 30))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("the Offline schedule") && text.contains("1 queries"),
            "{text}"
        );
    }

    #[test]
    fn mem_available_is_read_from_meminfo() {
        let meminfo =
            "MemTotal:       24586000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(available_memory().is_some_and(|b| b > 0));
        }
    }
}
