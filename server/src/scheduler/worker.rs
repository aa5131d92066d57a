//! The mechanism: the loop of one instance thread (find a batch under the lock, run it outside the
//! lock, answer every request of it), with batches concatenated, padded or split for the backend.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch;
use super::policy::{decide, Decision};
use super::queue::{Dropped, Entry};
use super::{abort_queue, InferError, InferenceResponse, Phase, RequestTimings, Shared, State};
use crate::backend::{Backend, BatchSupport};
use crate::metrics::{self, Outcome};
use crate::tensor::Tensor;

/// Body of an instance thread: runs batches until the scheduler drains or aborts.
pub(super) fn run(shared: Arc<Shared>, mut backend: Box<dyn Backend>) {
    while let Some(entries) = next_batch(&shared) {
        run_batch(&shared, backend.as_mut(), entries);
    }
    let mut state = shared.lock();
    state.live -= 1;
    drop(state);
    shared.exited.notify_all();
}

/// Removes expired and cancelled requests, answering or counting them.
pub(super) fn drop_dead(shared: &Shared, state: &mut State, now: Instant) {
    let dropped = state.queue.remove_dead(now);
    if dropped.is_empty() {
        return;
    }
    metrics::set_queue_depth(&shared.model, state.queue.len());
    for (entry, why) in dropped {
        match why {
            Dropped::Expired => {
                let _ = entry.reply.send(Err(InferError::Expired));
            }
            Dropped::Cancelled => metrics::record_request(&shared.model, Outcome::Cancelled),
        }
    }
}

/// Waits until the policy hands this instance a batch; `None` when the thread should exit.
fn next_batch(shared: &Shared) -> Option<Vec<Entry>> {
    let mut state = shared.lock();
    state.idle += 1;
    let batch = loop {
        let now = Instant::now();
        drop_dead(shared, &mut state, now);
        let rules = match state.phase {
            Phase::Aborted => {
                abort_queue(shared, &mut state);
                break None;
            }
            Phase::Draining if state.queue.is_empty() => break None,
            Phase::Draining => &shared.flush_rules,
            Phase::Running => &shared.rules,
        };
        match decide(state.queue.pending(), now, state.idle, rules) {
            Decision::Dispatch { requests } => {
                let entries = state.queue.take(requests);
                metrics::set_queue_depth(&shared.model, state.queue.len());
                if !state.queue.is_empty() {
                    shared.work.notify_one();
                }
                break Some(entries);
            }
            Decision::WaitUntil(due) => {
                let timeout = due.saturating_duration_since(now);
                state = shared
                    .work
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            Decision::Idle => {
                state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        }
    };
    state.idle -= 1;
    batch
}

/// Calls the backend, turning a panic into an error so the instance thread survives.
fn infer(backend: &mut dyn Backend, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
    match catch_unwind(AssertUnwindSafe(|| backend.infer(inputs))) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("the backend panicked while running the batch".into()),
    }
}

/// Runs one batch and answers each of its requests.
fn run_batch(shared: &Shared, backend: &mut dyn Backend, entries: Vec<Entry>) {
    let dispatched = Instant::now();
    let device = backend.device().to_string();
    let mut compute = Duration::ZERO;
    let mut timed = |backend: &mut dyn Backend, inputs: Vec<Tensor>| {
        let started = Instant::now();
        let result = infer(backend, inputs);
        compute += started.elapsed();
        result
    };

    let (replies, requests): (Vec<_>, Vec<_>) =
        entries.into_iter().map(|e| (e.reply, e.request)).unzip();
    let counts: Vec<usize> = requests.iter().map(|r| r.batch_size).collect();
    let arrivals: Vec<Instant> = requests.iter().map(|r| r.arrived).collect();

    let (results, executed): (Vec<Result<Vec<Tensor>, String>>, usize) =
        match shared.signature.batch {
            BatchSupport::Unbatched => {
                let results: Vec<_> = requests
                    .into_iter()
                    .map(|r| timed(backend, r.inputs))
                    .collect();
                for _ in &results {
                    metrics::record_batch_size(&shared.model, 1);
                }
                (results, 1)
            }
            BatchSupport::Dynamic { .. } => {
                let total: usize = counts.iter().sum();
                metrics::record_batch_size(&shared.model, total);
                let outputs = timed(
                    backend,
                    concat_columns(requests.into_iter().map(|r| r.inputs)),
                );
                (split_outputs(outputs, &counts), total)
            }
            BatchSupport::Fixed(n) => {
                let total: usize = counts.iter().sum();
                let outputs = batch::chunk_and_pad(
                    concat_columns(requests.into_iter().map(|r| r.inputs)),
                    total,
                    n,
                )
                .and_then(|runs| {
                    let mut per_run = Vec::with_capacity(runs.len());
                    for (inputs, real) in runs {
                        metrics::record_batch_size(&shared.model, n);
                        let outputs = timed(backend, inputs)?;
                        per_run.push(
                            outputs
                                .into_iter()
                                .map(|t| batch::truncate(t, real))
                                .collect::<Result<Vec<_>, _>>()?,
                        );
                    }
                    Ok(concat_columns(per_run))
                });
                (split_outputs(outputs, &counts), n)
            }
        };

    let expected_outputs = shared.signature.outputs.len();
    for ((reply, arrived), result) in replies.into_iter().zip(arrivals).zip(results) {
        let result = result.and_then(|outputs| match outputs.len() {
            n if n == expected_outputs => Ok(outputs),
            n => Err(format!(
                "the backend returned {n} outputs; the model declares {expected_outputs}"
            )),
        });
        let answer = result
            .map_err(InferError::Backend)
            .map(|outputs| InferenceResponse {
                outputs,
                timings: RequestTimings {
                    queue: dispatched.saturating_duration_since(arrived),
                    compute,
                    batch_size: executed,
                    device: device.clone(),
                },
            });
        if reply.send(answer).is_err() {
            // The client left while its batch ran.
            metrics::record_request(&shared.model, Outcome::Cancelled);
        }
    }
}

/// Concatenates rows of tensors (one row per request or run) along dimension 0, column by column.
fn concat_columns(rows: impl IntoIterator<Item = Vec<Tensor>>) -> Vec<Tensor> {
    let mut columns: Vec<Vec<Tensor>> = Vec::new();
    for row in rows {
        for (i, tensor) in row.into_iter().enumerate() {
            if columns.len() <= i {
                columns.push(Vec::new());
            }
            columns[i].push(tensor);
        }
    }
    columns.into_iter().map(batch::concat).collect()
}

/// Splits the batch's outputs per request; one error answers every request.
fn split_outputs(
    outputs: Result<Vec<Tensor>, String>,
    counts: &[usize],
) -> Vec<Result<Vec<Tensor>, String>> {
    let per_request = outputs.and_then(|outputs| {
        let mut per_request: Vec<Vec<Tensor>> = counts
            .iter()
            .map(|_| Vec::with_capacity(outputs.len()))
            .collect();
        for output in &outputs {
            let pieces = batch::split(output, counts)
                .map_err(|why| format!("backend output does not match the batch: {why}"))?;
            for (request, piece) in per_request.iter_mut().zip(pieces) {
                request.push(piece);
            }
        }
        Ok(per_request)
    });
    match per_request {
        Ok(per_request) => per_request.into_iter().map(Ok).collect(),
        Err(why) => counts.iter().map(|_| Err(why.clone())).collect(),
    }
}
