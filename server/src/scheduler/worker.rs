//! The mechanism: the loop of one instance thread (find a batch under the lock, run it outside the
//! lock, answer every request of it), with batches concatenated, padded or split for the backend,
//! and the instance's health: idle checks, out of service on a device failure, back when the
//! device is.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch;
use super::policy::{decide, BatchRules, Decision, Sleep};
use super::queue::{Dropped, Entry};
use super::{
    abort_queue, answer_queue, decision_changed, unavailable, InferError, InferenceResponse, Phase,
    RequestTimings, Shared, State,
};
use crate::backend::{Backend, BackendError, BatchSupport};
use ::metrics::Histogram;

use crate::metrics::{self, RanOn};
use crate::tensor::Tensor;

/// What an instance thread does next.
enum Next {
    Batch(Vec<Entry>),
    /// Idle for a health interval: ask the backend whether its device is still there.
    CheckHealth,
    Exit,
}

/// Body of an instance thread: runs batches until the scheduler drains or aborts.
pub(super) fn run(shared: Arc<Shared>, index: usize, mut backend: Box<dyn Backend>) {
    let rules = shared.rules[index].clone();
    let flush_rules = rules.flushing();
    let batch_sizes = metrics::batch_size_histogram(RanOn {
        model: &shared.model,
        backend: shared.backend,
        device: backend.device(),
    });
    loop {
        match next_batch(&shared, index, &rules, &flush_rules) {
            Next::Batch(entries) => {
                let ran = run_batch(&shared, backend.as_mut(), &batch_sizes, entries);
                let on = RanOn {
                    model: &shared.model,
                    backend: shared.backend,
                    device: backend.device(),
                };
                metrics::set_runtime_metrics(on, index, backend.runtime_metrics());
                if let Err(failure) = ran {
                    out_of_service(&shared, index, backend.as_mut(), failure);
                }
            }
            Next::CheckHealth => {
                if let Err(failure) = check_health(backend.as_mut()) {
                    out_of_service(&shared, index, backend.as_mut(), failure);
                }
            }
            Next::Exit => break,
        }
    }
    let mut state = shared.lock();
    state.live -= 1;
    drop(state);
    shared.exited.notify_all();
}

/// The backend's health check, with a panic counted as a failed device.
fn check_health(backend: &mut dyn Backend) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| backend.health())) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the backend panicked in its health check".into()),
    }
}

/// Takes instance `index` out of service for `reason` and polls its health until the device is
/// back (then returns, in service again) or the scheduler stops.
fn out_of_service(shared: &Shared, index: usize, backend: &mut dyn Backend, reason: String) {
    let device = backend.device().to_string();
    let on = RanOn {
        model: &shared.model,
        backend: shared.backend,
        device: &device,
    };
    {
        let mut state = shared.lock();
        state.instances[index].in_service = false;
        state.instances[index].reason = reason.clone();
        tracing::error!(model = %shared.model, device = on.device, %reason, in_service = state.in_service(), "instance out of service");
        if state.in_service() == 0 {
            let error = unavailable(shared, &state);
            answer_queue(shared, &mut state, &error);
        }
    }
    metrics::set_instance_up(on, index, false);
    loop {
        // Woken early only by a phase change: the condvar also wakes for new requests.
        let due = Instant::now() + shared.health_interval;
        let mut state = shared.lock();
        loop {
            let now = Instant::now();
            if state.phase != Phase::Running {
                return;
            }
            if now >= due {
                break;
            }
            state = shared
                .work
                .wait_timeout(state, due - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(state);
        if check_health(backend).is_ok() {
            let mut state = shared.lock();
            state.instances[index].in_service = true;
            state.instances[index].reason.clear();
            tracing::info!(model = %shared.model, device = on.device, "instance back in service");
            drop(state);
            metrics::set_instance_up(on, index, true);
            return;
        }
    }
}

/// Removes expired and cancelled requests, answering the expired ones.
pub(super) fn drop_dead(shared: &Shared, state: &mut State, now: Instant) {
    let dropped = state.queue.remove_dead(now);
    if dropped.is_empty() {
        return;
    }
    shared.queue_depth.set(state.queue.len() as f64);
    for (entry, why) in dropped {
        match why {
            Dropped::Expired => {
                let _ = entry.reply.send(Err(InferError::Expired));
            }
            // Its request's future was dropped, which counted it (cancelled or expired).
            Dropped::Cancelled => {}
        }
    }
}

/// Waits until the policy hands instance `index` a batch, its health is due, or it should exit.
fn next_batch(shared: &Shared, index: usize, rules: &BatchRules, flush_rules: &BatchRules) -> Next {
    let mut state = shared.lock();
    // Whether the queue left behind a taken batch changes what another sleeping instance does.
    let mut wake_others = false;
    state.idle += 1;
    let idle_since = Instant::now();
    let next = loop {
        let now = Instant::now();
        drop_dead(shared, &mut state, now);
        let rules = match state.phase {
            Phase::Aborted => {
                abort_queue(shared, &mut state);
                break Next::Exit;
            }
            Phase::Draining if state.queue.is_empty() => break Next::Exit,
            Phase::Draining => flush_rules,
            Phase::Running => rules,
        };
        match decide(state.queue.pending(), now, state.idle, rules) {
            Decision::Dispatch { requests } => {
                let entries = state.queue.take(requests);
                shared.queue_depth.set(state.queue.len() as f64);
                wake_others = !state.queue.is_empty() && decision_changed(shared, &state);
                break Next::Batch(entries);
            }
            Decision::WaitUntil(due) => {
                let timeout = due.saturating_duration_since(now);
                state.sleeping[index] = Some(Sleep::Until(due));
                state = shared
                    .work
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                state.sleeping[index] = None;
            }
            Decision::Idle => {
                let health_due = idle_since + shared.health_interval;
                if now >= health_due {
                    break Next::CheckHealth;
                }
                state.sleeping[index] = Some(Sleep::ForWork);
                state = shared
                    .work
                    .wait_timeout(state, health_due - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                state.sleeping[index] = None;
            }
        }
    };
    state.idle -= 1;
    drop(state);
    if wake_others {
        shared.work.notify_all();
    }
    next
}

/// Calls the backend, turning a panic into an internal error so the instance thread survives.
fn infer(backend: &mut dyn Backend, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
    match catch_unwind(AssertUnwindSafe(|| backend.infer(inputs))) {
        Ok(result) => result,
        Err(_) => Err(BackendError::Internal(
            "the backend panicked while running the batch".into(),
        )),
    }
}

/// A failed run: what its requests are told, and whether the device failed.
struct RunFailure {
    answer: InferError,
    device_failed: Option<String>,
}

/// Classifies a backend error; an internal error is a device failure when the device's health
/// check fails right after it.
fn classify(shared: &Shared, backend: &mut dyn Backend, error: BackendError) -> RunFailure {
    let device = backend.device().to_string();
    let on = RanOn {
        model: &shared.model,
        backend: shared.backend,
        device: &device,
    };
    let device_failure = |reason: String| RunFailure {
        answer: InferError::Unavailable(format!(
            "the device of model '{}' failed ({}): {reason}",
            shared.model, on.device
        )),
        device_failed: Some(reason),
    };
    let failure = match error {
        BackendError::InvalidInput(message) => {
            metrics::record_backend_error(on, "invalid_input");
            return RunFailure {
                answer: InferError::Invalid(message),
                device_failed: None,
            };
        }
        BackendError::DeviceUnavailable { .. } => device_failure(error.to_string()),
        other => match check_health(backend) {
            Err(reason) => device_failure(format!("{other}; then the health check: {reason}")),
            Ok(()) => {
                metrics::record_backend_error(on, "internal");
                return RunFailure {
                    answer: InferError::Backend(other.to_string()),
                    device_failed: None,
                };
            }
        },
    };
    metrics::record_backend_error(on, "device");
    failure
}

/// Runs one batch and answers each of its requests. Returns the device failure, if the device
/// failed, so the caller takes the instance out of service.
fn run_batch(
    shared: &Shared,
    backend: &mut dyn Backend,
    batch_sizes: &Histogram,
    entries: Vec<Entry>,
) -> Result<(), String> {
    let dispatched = Instant::now();
    let device = backend.device().to_string();
    let mut compute = Duration::ZERO;
    let (mut gather, mut scatter) = (Duration::ZERO, Duration::ZERO);
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
    let total: usize = counts.iter().sum();

    let mut failure = None;
    let (results, executed): (Vec<Result<Vec<Tensor>, InferError>>, usize) =
        match backend.signature().batch {
            BatchSupport::Unbatched => {
                let mut results = Vec::with_capacity(requests.len());
                for request in requests {
                    batch_sizes.record(1.0);
                    let result = match timed(backend, request.inputs) {
                        Ok(outputs) => Ok(outputs),
                        Err(error) => {
                            let f = classify(shared, backend, error);
                            let answer = f.answer.clone();
                            failure = failure.or(f.device_failed);
                            Err(answer)
                        }
                    };
                    results.push(result);
                }
                (results, 1)
            }
            BatchSupport::Dynamic { max } if total <= max => {
                batch_sizes.record(total as f64);
                let started = Instant::now();
                let inputs = concat_columns(requests.into_iter().map(|r| r.inputs));
                gather = started.elapsed();
                let outputs = timed(backend, inputs).map_err(|error| {
                    let f = classify(shared, backend, error);
                    failure = f.device_failed;
                    f.answer
                });
                let started = Instant::now();
                let split = split_outputs(outputs, &counts);
                scatter = started.elapsed();
                (split, total)
            }
            // One request larger than the instance takes, or a fixed-batch device: runs of `n`.
            BatchSupport::Dynamic { max: n } | BatchSupport::Fixed(n) => {
                let started = Instant::now();
                let runs = batch::chunk_and_pad(
                    concat_columns(requests.into_iter().map(|r| r.inputs)),
                    total,
                    n,
                )
                .map_err(|why| InferError::Backend(format!("cannot cut the batch: {why}")));
                gather = started.elapsed();
                let outputs = runs.and_then(|runs| {
                    let mut per_run = Vec::with_capacity(runs.len());
                    for (inputs, real) in runs {
                        batch_sizes.record(n as f64);
                        let outputs = timed(backend, inputs).map_err(|error| {
                            let f = classify(shared, backend, error);
                            failure = f.device_failed;
                            f.answer
                        })?;
                        let started = Instant::now();
                        per_run.push(
                            outputs
                                .into_iter()
                                .map(|t| batch::truncate(t, real))
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(InferError::Backend)?,
                        );
                        scatter += started.elapsed();
                    }
                    Ok(concat_columns(per_run))
                });
                let started = Instant::now();
                let split = split_outputs(outputs, &counts);
                scatter += started.elapsed();
                (split, n)
            }
        };

    let runtime_metrics = backend.runtime_metrics().to_vec();
    let expected_outputs = shared.signature.outputs.len();
    for ((reply, arrived), result) in replies.into_iter().zip(arrivals).zip(results) {
        let result = result.and_then(|outputs| match outputs.len() {
            n if n == expected_outputs => Ok(outputs),
            n => Err(InferError::Backend(format!(
                "the backend returned {n} outputs; the model declares {expected_outputs}"
            ))),
        });
        let answer = result.map(|outputs| InferenceResponse {
            outputs,
            timings: RequestTimings {
                queue: dispatched.saturating_duration_since(arrived),
                compute,
                gather,
                scatter,
                batch_size: executed,
                device: device.clone(),
                runtime_metrics: runtime_metrics.clone(),
            },
        });
        // A send fails when the client left while its batch ran: its request's future was
        // dropped, which counted it (cancelled or expired).
        let _ = reply.send(answer);
    }
    match failure {
        Some(reason) => Err(reason),
        None => Ok(()),
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
    outputs: Result<Vec<Tensor>, InferError>,
    counts: &[usize],
) -> Vec<Result<Vec<Tensor>, InferError>> {
    let per_request = outputs.and_then(|outputs| {
        let mut per_request: Vec<Vec<Tensor>> = counts
            .iter()
            .map(|_| Vec::with_capacity(outputs.len()))
            .collect();
        for output in &outputs {
            let pieces = batch::split(output, counts).map_err(|why| {
                InferError::Backend(format!("backend output does not match the batch: {why}"))
            })?;
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
