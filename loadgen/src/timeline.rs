//! The performance pass over time and its latency distribution, for reports: this client's own
//! file (`mlperf_log_timeline.json`), beside the official ones, which stay as they are. Its size
//! is bounded whatever the length of the run.

use serde::{Deserialize, Serialize};

use crate::breakdown::BreakdownSample;
use crate::results::percentile;

/// Intervals of the time series at most, and the shortest one.
const MAX_INTERVALS: f64 = 200.0;
const MIN_INTERVAL_S: f64 = 0.05;
/// Log-spaced buckets of the latency histogram.
const HISTOGRAM_BUCKETS: usize = 40;

/// One completed sample: when it completed (ns from the start of the pass) and its latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub at_ns: i64,
    pub latency_ns: i64,
}

/// What happened in one interval of the pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Start of the interval, seconds from the start of the pass.
    pub start_s: f64,
    /// Samples that completed in it.
    pub completed: u64,
    /// Latencies of those samples, ns (0 when none completed).
    pub p50_ns: i64,
    pub p99_ns: i64,
    pub max_ns: i64,
}

/// One bucket of the latency histogram: samples with `low_ns <= latency < high_ns` (the last
/// bucket includes its upper edge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub low_ns: i64,
    pub high_ns: i64,
    pub count: u64,
}

/// Mean time per sample spent in each part of its latency, for samples with server timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakdownMeans {
    pub samples: u64,
    /// Network, serialization and the client: latency − queue − compute.
    pub network_ns: f64,
    pub queue_ns: f64,
    pub compute_ns: f64,
}

/// The timeline of a performance pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub interval_s: f64,
    pub intervals: Vec<Interval>,
    /// (latency ns, fraction of samples at or below it), ascending.
    pub cdf: Vec<(i64, f64)>,
    pub histogram: Vec<Bucket>,
    /// (executed batch size, samples that ran in a batch of that size), ascending.
    pub batch_sizes: Vec<(u32, u64)>,
    pub breakdown: Option<BreakdownMeans>,
}

impl Timeline {
    /// The timeline of the successful samples `completions` (any order) and of the samples that
    /// reported server timings.
    pub fn new(mut completions: Vec<Completion>, timed: &[BreakdownSample]) -> Self {
        completions.sort_unstable_by_key(|c| c.at_ns);
        let end_s = completions.last().map_or(0.0, |c| c.at_ns as f64 / 1e9);
        let interval_s = (end_s / MAX_INTERVALS).max(MIN_INTERVAL_S);
        let mut intervals = Vec::new();
        let mut rest = &completions[..];
        let mut index = 0u64;
        while !rest.is_empty() {
            let end_ns = ((index + 1) as f64 * interval_s * 1e9) as i64;
            let n = rest.partition_point(|c| c.at_ns < end_ns);
            let mut latencies: Vec<i64> = rest[..n].iter().map(|c| c.latency_ns).collect();
            latencies.sort_unstable();
            intervals.push(Interval {
                start_s: index as f64 * interval_s,
                completed: n as u64,
                p50_ns: percentile(&latencies, 0.5),
                p99_ns: percentile(&latencies, 0.99),
                max_ns: latencies.last().copied().unwrap_or(0),
            });
            rest = &rest[n..];
            index += 1;
        }
        let mut latencies: Vec<i64> = completions.iter().map(|c| c.latency_ns).collect();
        latencies.sort_unstable();
        Self {
            interval_s,
            intervals,
            cdf: cdf(&latencies),
            histogram: histogram(&latencies),
            batch_sizes: batch_sizes(timed),
            breakdown: breakdown_means(timed),
        }
    }
}

/// The CDF at every half percent, and more finely in the tail.
fn cdf(sorted: &[i64]) -> Vec<(i64, f64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let tail = [0.991, 0.993, 0.995, 0.997, 0.999, 0.9995, 0.9999];
    let mut points: Vec<f64> = (0..=198).map(|i| f64::from(i) / 200.0).collect();
    points.extend(tail);
    points.push(1.0);
    let last = (sorted.len() - 1) as f64;
    points
        .into_iter()
        .map(|p| (sorted[(p * last).round() as usize], p))
        .collect()
}

/// Log-spaced buckets from the smallest to the largest latency.
fn histogram(sorted: &[i64]) -> Vec<Bucket> {
    let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    let low = (min.max(1) as f64).ln();
    let high = (max.max(1) as f64).ln();
    if max <= min || high <= low {
        return vec![Bucket {
            low_ns: min,
            high_ns: max,
            count: sorted.len() as u64,
        }];
    }
    let step = (high - low) / HISTOGRAM_BUCKETS as f64;
    let edge = |i: usize| (low + step * i as f64).exp().round() as i64;
    let mut rest = sorted;
    (0..HISTOGRAM_BUCKETS)
        .map(|i| {
            let high_ns = if i + 1 == HISTOGRAM_BUCKETS {
                max
            } else {
                edge(i + 1)
            };
            let n = if i + 1 == HISTOGRAM_BUCKETS {
                rest.len()
            } else {
                rest.partition_point(|&l| l < high_ns)
            };
            rest = &rest[n..];
            Bucket {
                low_ns: if i == 0 { min } else { edge(i) },
                high_ns,
                count: n as u64,
            }
        })
        .collect()
}

fn batch_sizes(timed: &[BreakdownSample]) -> Vec<(u32, u64)> {
    let mut counts = std::collections::BTreeMap::new();
    for s in timed {
        *counts.entry(s.timing.batch_size).or_insert(0u64) += 1;
    }
    counts.into_iter().collect()
}

fn breakdown_means(timed: &[BreakdownSample]) -> Option<BreakdownMeans> {
    if timed.is_empty() {
        return None;
    }
    let n = timed.len() as f64;
    let mean = |f: &dyn Fn(&BreakdownSample) -> f64| timed.iter().map(f).sum::<f64>() / n;
    let queue = mean(&|s| s.timing.queue_ns as f64);
    let compute = mean(&|s| s.timing.compute_ns as f64);
    let latency = mean(&|s| s.latency_ns as f64);
    Some(BreakdownMeans {
        samples: timed.len() as u64,
        network_ns: (latency - queue - compute).max(0.0),
        queue_ns: queue,
        compute_ns: compute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sut::ServerTiming;

    #[test]
    fn intervals_histogram_and_cdf_count_every_sample() {
        // 1000 samples over 10 s, latencies 1..=1000 µs.
        let completions: Vec<Completion> = (0..1000)
            .map(|i| Completion {
                at_ns: i * 10_000_000,
                latency_ns: (i + 1) * 1000,
            })
            .collect();
        let t = Timeline::new(completions, &[]);
        assert!((t.interval_s - 0.05).abs() < 1e-9, "{}", t.interval_s);
        assert_eq!(t.intervals.iter().map(|i| i.completed).sum::<u64>(), 1000);
        assert_eq!(t.intervals.len(), 200);
        assert_eq!(t.intervals[0].completed, 5);
        assert_eq!(t.intervals[0].max_ns, 5000);
        assert_eq!(t.histogram.len(), HISTOGRAM_BUCKETS);
        assert_eq!(t.histogram.iter().map(|b| b.count).sum::<u64>(), 1000);
        assert!(t.histogram.windows(2).all(|w| w[0].high_ns == w[1].low_ns));
        assert_eq!(t.cdf.first(), Some(&(1000, 0.0)));
        assert_eq!(t.cdf.last(), Some(&(1_000_000, 1.0)));
        assert!(t
            .cdf
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(t.breakdown, None);
    }

    #[test]
    fn batch_sizes_and_the_breakdown_come_from_server_timings() {
        let timed = |batch_size, latency_ns| BreakdownSample {
            latency_ns,
            timing: ServerTiming {
                queue_ns: 100,
                compute_ns: 300,
                batch_size,
            },
        };
        let t = Timeline::new(
            vec![Completion {
                at_ns: 5,
                latency_ns: 1000,
            }],
            &[timed(4, 1000), timed(4, 1000), timed(1, 2000)],
        );
        assert_eq!(t.batch_sizes, vec![(1, 1), (4, 2)]);
        let b = t.breakdown.unwrap();
        assert_eq!((b.samples, b.queue_ns, b.compute_ns), (3, 100.0, 300.0));
        assert!((b.network_ns - (4000.0 / 3.0 - 400.0)).abs() < 1e-9);
        assert_eq!(t.histogram.len(), 1);
    }
}
