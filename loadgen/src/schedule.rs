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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("the loadable sample set is empty")]
    EmptySet,
    #[error("samples_per_query is 0")]
    ZeroSamplesPerQuery,
    #[error("sample position {position} is outside the loaded set of {len} samples")]
    OutOfRange { position: usize, len: usize },
    #[error("the unique sample list ran out after {0} draws")]
    Exhausted(usize),
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
}
