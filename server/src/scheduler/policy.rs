//! The batching decision as a pure function of (queue, now, free instances, rules): no clock, no
//! threads, no locks, so every rule is unit-tested with plain `Instant` arithmetic.
//!
//! Batches count samples (dimension 0). A batch is dispatched to a free instance as soon as
//! - it reaches the maximum, or the next queued request would not fit (it waits for the next batch:
//!   requests are never split across batches), or the next request has other per-sample dims;
//! - a prefix of the queue adds up to a preferred batch size (the largest such prefix goes);
//! - the oldest queued request has waited `max_queue_delay` since it *arrived* (with a delay of 0,
//!   whatever is queued goes whenever an instance is free).

use std::time::{Duration, Instant};

use super::BatchingConfig;
use crate::backend::BatchSupport;

/// One queued request as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Samples along dimension 0 (1 for unbatched models).
    pub samples: usize,
    /// When the request arrived at the server.
    pub arrived: Instant,
    /// Hash of the per-sample dims of all inputs: only equal keys can be concatenated.
    pub shape_key: u64,
}

/// A model's batching rules: its [`BatchingConfig`] combined with what the backend supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRules {
    /// Most samples in one dispatched batch.
    pub max_samples: usize,
    pub max_queue_delay: Duration,
    /// Batch sizes dispatched at once when reached.
    pub preferred: Vec<usize>,
    /// Unbatched models: every request runs alone.
    pub one_request_per_batch: bool,
}

impl BatchRules {
    /// The rules for a backend with `support`:
    /// - `Dynamic { max }`: up to `config.max_batch_size` samples (0 = the backend's max), capped by `max`;
    /// - `Fixed(n)`: batches of up to `n` samples, since the device runs exactly `n` at a time
    ///   (a single larger request goes alone and is split by the worker);
    /// - `Unbatched`: one request per batch.
    pub fn new(config: &BatchingConfig, support: BatchSupport) -> Self {
        let (max_samples, one) = match support {
            BatchSupport::Dynamic { max } => {
                let configured = if config.max_batch_size == 0 {
                    max
                } else {
                    config.max_batch_size.min(max)
                };
                (configured.max(1), false)
            }
            BatchSupport::Fixed(n) => (n.max(1), false),
            BatchSupport::Unbatched => (1, true),
        };
        BatchRules {
            max_samples,
            max_queue_delay: config.max_queue_delay,
            preferred: config
                .preferred_batch_sizes
                .iter()
                .copied()
                .filter(|s| *s > 0 && *s <= max_samples)
                .collect(),
            one_request_per_batch: one,
        }
    }

    /// The same rules without waiting: used to drain the queue on shutdown.
    pub fn flushing(&self) -> Self {
        BatchRules {
            max_queue_delay: Duration::ZERO,
            ..self.clone()
        }
    }
}

/// What a free instance should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Take the first `requests` queued requests (FIFO) as one batch.
    Dispatch { requests: usize },
    /// Nothing to dispatch before this instant (unless the queue changes).
    WaitUntil(Instant),
    /// Nothing to do until the queue changes or an instance frees up.
    Idle,
}

/// Decides whether to dispatch a batch now; `queue` is in FIFO order.
pub fn decide<'a>(
    queue: impl IntoIterator<Item = &'a Pending>,
    now: Instant,
    free_instances: usize,
    rules: &BatchRules,
) -> Decision {
    if free_instances == 0 {
        return Decision::Idle;
    }
    let mut queue = queue.into_iter();
    let Some(first) = queue.next() else {
        return Decision::Idle;
    };
    if rules.one_request_per_batch {
        return Decision::Dispatch { requests: 1 };
    }
    let mut count = 1;
    let mut total = first.samples;
    let mut oldest = first.arrived;
    let mut preferred = rules.preferred.contains(&total).then_some(1);
    // The batch can grow no further: it is full, or the next request cannot join it.
    let mut closed = total >= rules.max_samples;
    for next in queue {
        oldest = oldest.min(next.arrived);
        if closed {
            continue;
        }
        if next.shape_key != first.shape_key || total + next.samples > rules.max_samples {
            closed = true;
            continue;
        }
        count += 1;
        total += next.samples;
        if rules.preferred.contains(&total) {
            preferred = Some(count);
        }
        closed = total >= rules.max_samples;
    }
    if closed {
        return Decision::Dispatch { requests: count };
    }
    if let Some(requests) = preferred {
        return Decision::Dispatch { requests };
    }
    let due = oldest + rules.max_queue_delay;
    if now >= due {
        Decision::Dispatch { requests: count }
    } else {
        Decision::WaitUntil(due)
    }
}

/// What a free instance sleeps on, after its last decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sleep {
    /// [`Decision::Idle`]: nothing to do until the queue changes.
    ForWork,
    /// [`Decision::WaitUntil`] this instant.
    Until(Instant),
}

impl Sleep {
    /// Whether an instance sleeping on `self` must wake because the queue changed and the policy
    /// now decides `now_decided`: a batch is ready, or it is due earlier than the instance sleeps
    /// for. Any other change would leave its decision as it is, so it sleeps on.
    pub fn woken_by(self, now_decided: Decision) -> bool {
        match (self, now_decided) {
            (_, Decision::Dispatch { .. }) => true,
            (Sleep::ForWork, Decision::WaitUntil(_)) => true,
            (Sleep::Until(until), Decision::WaitUntil(due)) => due < until,
            (_, Decision::Idle) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rules(max: usize, delay_ms: u64, preferred: &[usize]) -> BatchRules {
        BatchRules {
            max_samples: max,
            max_queue_delay: Duration::from_millis(delay_ms),
            preferred: preferred.to_vec(),
            one_request_per_batch: false,
        }
    }

    /// Requests of the given sample counts, arriving 1 ms apart from `t0`.
    fn queue(t0: Instant, samples: &[usize]) -> Vec<Pending> {
        samples
            .iter()
            .enumerate()
            .map(|(i, s)| Pending {
                samples: *s,
                arrived: t0 + i as u32 * MS,
                shape_key: 7,
            })
            .collect()
    }

    #[test]
    fn a_sleeper_wakes_only_when_its_decision_changes() {
        let t0 = Instant::now();
        let r = rules(16, 10, &[4]);
        let waiting = Sleep::Until(t0 + 10 * MS);
        // A second request joins the first's batch: still due at the first's arrival + delay.
        assert!(!waiting.woken_by(decide(&queue(t0, &[1, 1]), t0, 1, &r)));
        // A preferred size, a full batch or an earlier deadline changes the decision.
        assert!(waiting.woken_by(decide(&queue(t0, &[1, 1, 2]), t0, 1, &r)));
        assert!(waiting.woken_by(decide(&queue(t0, &[8, 8]), t0, 1, &r)));
        let mut early = queue(t0, &[1, 1]);
        early[1].arrived = t0 - 5 * MS;
        assert!(waiting.woken_by(decide(&early, t0, 1, &r)));
        // An idle instance wakes for the first request, which sets its deadline.
        assert!(Sleep::ForWork.woken_by(decide(&queue(t0, &[1]), t0, 1, &r)));
        assert!(!Sleep::ForWork.woken_by(decide(&[], t0, 1, &r)));
    }

    #[test]
    fn empty_queue_or_no_free_instance_is_idle() {
        let t0 = Instant::now();
        assert_eq!(decide(&[], t0, 1, &rules(8, 5, &[])), Decision::Idle);
        assert_eq!(
            decide(&queue(t0, &[8]), t0, 0, &rules(8, 0, &[])),
            Decision::Idle
        );
    }

    #[test]
    fn waits_for_the_delay_measured_from_the_oldest_arrival() {
        let t0 = Instant::now();
        let q = queue(t0, &[1, 2]);
        let r = rules(8, 10, &[]);
        // Asked long after arrival would still wait only until arrival + delay.
        assert_eq!(
            decide(&q, t0 + 3 * MS, 1, &r),
            Decision::WaitUntil(t0 + 10 * MS)
        );
        assert_eq!(
            decide(&q, t0 + 10 * MS, 1, &r),
            Decision::Dispatch { requests: 2 }
        );
        assert_eq!(
            decide(&q, t0 + 50 * MS, 1, &r),
            Decision::Dispatch { requests: 2 }
        );
    }

    #[test]
    fn oldest_is_the_earliest_arrival_even_out_of_order() {
        let t0 = Instant::now() + 100 * MS;
        let mut q = queue(t0, &[1, 1]);
        q[1].arrived = t0 - 20 * MS; // submitted second but arrived first
        assert_eq!(
            decide(&q, t0, 1, &rules(8, 10, &[])),
            Decision::Dispatch { requests: 2 }
        );
    }

    #[test]
    fn zero_delay_sends_whatever_is_queued() {
        let t0 = Instant::now();
        assert_eq!(
            decide(&queue(t0, &[1]), t0, 1, &rules(8, 0, &[])),
            Decision::Dispatch { requests: 1 }
        );
        assert_eq!(
            decide(&queue(t0, &[1, 3, 2]), t0, 1, &rules(8, 0, &[])),
            Decision::Dispatch { requests: 3 }
        );
    }

    #[test]
    fn a_full_batch_goes_at_once() {
        let t0 = Instant::now();
        let r = rules(4, 1000, &[]);
        assert_eq!(
            decide(&queue(t0, &[2, 2]), t0, 1, &r),
            Decision::Dispatch { requests: 2 }
        );
        assert_eq!(
            decide(&queue(t0, &[4, 1]), t0, 1, &r),
            Decision::Dispatch { requests: 1 }
        );
        assert_eq!(
            decide(&queue(t0, &[1, 1, 1]), t0, 1, &r),
            Decision::WaitUntil(t0 + 1000 * MS)
        );
    }

    #[test]
    fn a_request_that_would_overflow_goes_in_the_next_batch() {
        let t0 = Instant::now();
        let r = rules(8, 1000, &[]);
        // 3 + 4 = 7 fit; the next 2 would make 9: dispatch the 7 now, the 2 waits.
        assert_eq!(
            decide(&queue(t0, &[3, 4, 2, 1]), t0, 1, &r),
            Decision::Dispatch { requests: 2 }
        );
        // The leftover then waits for its own delay or company.
        assert_eq!(
            decide(&queue(t0, &[2, 1]), t0, 1, &r),
            Decision::WaitUntil(t0 + 1000 * MS)
        );
    }

    #[test]
    fn an_oversize_request_goes_alone() {
        let t0 = Instant::now();
        assert_eq!(
            decide(&queue(t0, &[10, 1]), t0, 1, &rules(8, 1000, &[])),
            Decision::Dispatch { requests: 1 }
        );
    }

    #[test]
    fn preferred_sizes_dispatch_early_with_the_largest_prefix() {
        let t0 = Instant::now();
        let r = rules(16, 1000, &[2, 4]);
        assert_eq!(
            decide(&queue(t0, &[1]), t0, 1, &r),
            Decision::WaitUntil(t0 + 1000 * MS)
        );
        assert_eq!(
            decide(&queue(t0, &[1, 1]), t0, 1, &r),
            Decision::Dispatch { requests: 2 }
        );
        // Prefix sums 1, 2, 4, 5: the largest preferred prefix (4 samples, 3 requests) goes.
        assert_eq!(
            decide(&queue(t0, &[1, 1, 2, 1]), t0, 1, &r),
            Decision::Dispatch { requests: 3 }
        );
        // Prefix sums 3, 6: no preferred size is reachable, so wait.
        assert_eq!(
            decide(&queue(t0, &[3, 3]), t0, 1, &r),
            Decision::WaitUntil(t0 + 1000 * MS)
        );
    }

    #[test]
    fn different_per_sample_shapes_are_not_batched_together() {
        let t0 = Instant::now();
        let mut q = queue(t0, &[1, 1, 1]);
        q[1].shape_key = 99;
        assert_eq!(
            decide(&q, t0, 1, &rules(8, 1000, &[])),
            Decision::Dispatch { requests: 1 }
        );
    }

    #[test]
    fn unbatched_models_run_one_request_at_a_time() {
        let t0 = Instant::now();
        let r = BatchRules::new(&BatchingConfig::default(), BatchSupport::Unbatched);
        assert!(r.one_request_per_batch);
        assert_eq!(
            decide(&queue(t0, &[1, 1, 1]), t0, 2, &r),
            Decision::Dispatch { requests: 1 }
        );
    }

    #[test]
    fn rules_combine_config_and_backend_support() {
        let config = BatchingConfig {
            max_batch_size: 8,
            max_queue_delay: 2 * MS,
            preferred_batch_sizes: vec![0, 4, 8, 32],
            ..BatchingConfig::default()
        };
        let r = BatchRules::new(&config, BatchSupport::Dynamic { max: 16 });
        assert_eq!((r.max_samples, r.preferred.clone()), (8, vec![4, 8]));
        assert_eq!(
            BatchRules::new(&config, BatchSupport::Dynamic { max: 4 }).max_samples,
            4
        );
        let unlimited = BatchingConfig {
            max_batch_size: 0,
            ..config.clone()
        };
        assert_eq!(
            BatchRules::new(&unlimited, BatchSupport::Dynamic { max: 16 }).max_samples,
            16
        );
        assert_eq!(
            BatchRules::new(&config, BatchSupport::Fixed(2)).max_samples,
            2
        );
        assert_eq!(r.flushing().max_queue_delay, Duration::ZERO);
    }

    #[test]
    fn fixed_batches_fill_to_the_device_size() {
        let t0 = Instant::now();
        let r = BatchRules::new(
            &BatchingConfig {
                max_queue_delay: 1000 * MS,
                ..BatchingConfig::default()
            },
            BatchSupport::Fixed(2),
        );
        assert_eq!(
            decide(&queue(t0, &[1]), t0, 1, &r),
            Decision::WaitUntil(t0 + 1000 * MS)
        );
        assert_eq!(
            decide(&queue(t0, &[1, 1, 1]), t0, 1, &r),
            Decision::Dispatch { requests: 2 }
        );
    }
}
