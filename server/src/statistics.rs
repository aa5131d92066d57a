//! Per-model inference statistics in the shape Triton's ModelStatistics reports them: request
//! counts and durations, samples inferred, executions, and compute time per executed batch size.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use inference_proto::inference::{
    InferBatchStatistics, InferStatistics, ModelStatistics, StatisticDuration,
};

/// Counters of one served model version; cheap to update from many request tasks.
#[derive(Debug, Default)]
pub struct ModelStats {
    inner: Mutex<Counters>,
}

/// What one successful request reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SuccessRecord {
    /// Samples the request carried (its dimension 0).
    pub samples: usize,
    /// Time from receiving the request to its answer.
    pub total: Duration,
    pub queue: Duration,
    /// Decoding the request and gathering its batch.
    pub compute_input: Duration,
    /// Backend time of the batch the request ran in.
    pub compute: Duration,
    /// Splitting the batch's outputs and encoding the response.
    pub compute_output: Duration,
    /// Samples in the executed batch, padding included.
    pub executed_batch: usize,
}

#[derive(Debug, Default)]
struct Counters {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_input: Tally,
    compute: Tally,
    compute_output: Tally,
    inference_count: u64,
    last_inference_ms: u64,
    /// Per executed batch size: executions and compute time, summed from the requests' shares
    /// (`samples / executed_batch` of each batch, so the requests of one batch add up to one).
    batches: BTreeMap<usize, BatchShare>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    count: u64,
    ns: u128,
}

#[derive(Debug, Default, Clone, Copy)]
struct BatchShare {
    executions: f64,
    input_ns: f64,
    compute_ns: f64,
    output_ns: f64,
}

impl Tally {
    fn add(&mut self, duration: Duration) {
        self.count += 1;
        self.ns += duration.as_nanos();
    }

    fn to_proto(self) -> StatisticDuration {
        StatisticDuration {
            count: self.count,
            ns: u64::try_from(self.ns).unwrap_or(u64::MAX),
        }
    }
}

impl ModelStats {
    /// Counts a request that was answered with outputs.
    pub fn record_success(&self, record: SuccessRecord) {
        let mut c = self.lock();
        c.success.add(record.total);
        c.queue.add(record.queue);
        c.compute_input.add(record.compute_input);
        c.compute.add(record.compute);
        c.compute_output.add(record.compute_output);
        c.inference_count += record.samples as u64;
        c.last_inference_ms = now_ms();
        let share = record.samples as f64 / record.executed_batch.max(record.samples).max(1) as f64;
        let batch = c.batches.entry(record.executed_batch).or_default();
        batch.executions += share;
        batch.input_ns += share * record.compute_input.as_nanos() as f64;
        batch.compute_ns += share * record.compute.as_nanos() as f64;
        batch.output_ns += share * record.compute_output.as_nanos() as f64;
    }

    /// Counts a request that was refused or failed after it reached the model.
    pub fn record_failure(&self, total: Duration) {
        let mut c = self.lock();
        c.fail.add(total);
        c.last_inference_ms = now_ms();
    }

    /// The statistics as Triton's `ModelStatistics` message.
    pub fn to_proto(&self, name: &str, version: &str) -> ModelStatistics {
        let c = self.lock();
        let mut execution_count = 0u64;
        let batch_stats = c
            .batches
            .iter()
            .map(|(&size, share)| {
                // A padded batch (fixed-batch devices) holds fewer real samples than its size:
                // round partial executions up; the tolerance absorbs float noise of exact sums.
                let executions = (share.executions - 1e-6).ceil().max(0.0) as u64;
                execution_count += executions;
                // The shares' weighted times are exact per execution on average; every duration
                // of a batch size counts the same executions.
                let per_execution = |ns: f64| StatisticDuration {
                    count: executions,
                    ns: (ns / share.executions.max(f64::MIN_POSITIVE) * executions as f64).round()
                        as u64,
                };
                InferBatchStatistics {
                    batch_size: size as u64,
                    compute_input: Some(per_execution(share.input_ns)),
                    compute_infer: Some(per_execution(share.compute_ns)),
                    compute_output: Some(per_execution(share.output_ns)),
                }
            })
            .collect();
        ModelStatistics {
            name: name.to_string(),
            version: version.to_string(),
            last_inference: c.last_inference_ms,
            inference_count: c.inference_count,
            execution_count,
            inference_stats: Some(InferStatistics {
                success: Some(c.success.to_proto()),
                fail: Some(c.fail.to_proto()),
                queue: Some(c.queue.to_proto()),
                compute_input: Some(c.compute_input.to_proto()),
                compute_infer: Some(c.compute.to_proto()),
                compute_output: Some(c.compute_output.to_proto()),
                cache_hit: Some(StatisticDuration::default()),
                cache_miss: Some(StatisticDuration::default()),
            }),
            batch_stats,
            // No backend reports its memory per model yet.
            memory_usage: Vec::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(samples: usize, executed: usize, compute_us: u64) -> SuccessRecord {
        SuccessRecord {
            samples,
            total: Duration::from_micros(100),
            queue: Duration::from_micros(10),
            compute_input: Duration::from_micros(3),
            compute: Duration::from_micros(compute_us),
            compute_output: Duration::from_micros(2),
            executed_batch: executed,
        }
    }

    #[test]
    fn requests_sharing_a_batch_count_one_execution() {
        let stats = ModelStats::default();
        // One batch of 3 samples from three 1-sample requests, then a padded batch of 8
        // holding a single 2-sample request.
        for _ in 0..3 {
            stats.record_success(record(1, 3, 40));
        }
        stats.record_success(record(2, 8, 80));
        stats.record_failure(Duration::from_micros(5));
        let proto = stats.to_proto("m", "1");
        assert_eq!(proto.inference_count, 5);
        assert_eq!(proto.execution_count, 2);
        let infer = proto.inference_stats.expect("stats");
        assert_eq!(infer.success.expect("success").count, 4);
        assert_eq!(infer.fail.expect("fail").ns, 5_000);
        assert_eq!(infer.compute_infer.expect("compute").ns, 200_000);
        // perf_analyzer requires the three compute counts to be equal.
        let counts = [
            infer.compute_input.expect("input").count,
            infer.compute_infer.expect("infer").count,
            infer.compute_output.expect("output").count,
        ];
        assert_eq!(counts, [4, 4, 4]);
        for b in &proto.batch_stats {
            let c = |d: Option<StatisticDuration>| d.expect("set").count;
            assert_eq!(c(b.compute_input), c(b.compute_infer));
            assert_eq!(c(b.compute_output), c(b.compute_infer));
        }
        let sizes: Vec<(u64, u64, u64)> = proto
            .batch_stats
            .iter()
            .map(|b| {
                let c = b.compute_infer.expect("compute");
                (b.batch_size, c.count, c.ns)
            })
            .collect();
        assert_eq!(sizes, vec![(3, 1, 40_000), (8, 1, 80_000)]);
        assert!(proto.last_inference > 0);
    }
}
