//! The scheduler's mechanism (threads, queue limits, deadlines, cancellation, padding, shutdown)
//! with an in-process backend that computes `y = 2x + 1`, records the batches it sees, and can be
//! held at a gate to keep an instance busy.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{f32_tensor, f32_values};
use inference_proto::DataType;
use inference_server::backend::{Backend, BackendError, BatchSupport, ModelSignature, TensorSpec};
use inference_server::scheduler::{
    BatchingConfig, InferError, InferenceRequest, InferenceResponse, ModelScheduler,
};
use inference_server::tensor::Tensor;
use tokio::sync::oneshot;

/// `y = 2x + 1` over one FP32 input of per-sample dims `dims`.
struct Affine {
    signature: ModelSignature,
    /// Dimension 0 of every batch run.
    runs: Arc<Mutex<Vec<i64>>>,
    /// Held by a test to keep this instance busy.
    gate: Arc<Mutex<()>>,
    /// Set by a test: this instance's device is gone (runs and health checks fail).
    gone: Arc<AtomicBool>,
}

impl Backend for Affine {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn device(&self) -> &str {
        "test"
    }

    fn health(&mut self) -> Result<(), BackendError> {
        match self.gone.load(Ordering::SeqCst) {
            true => Err(self.unplugged()),
            false => Ok(()),
        }
    }

    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        if self.gone.load(Ordering::SeqCst) {
            return Err(self.unplugged());
        }
        self.runs.lock().unwrap().push(inputs[0].shape[0]);
        let _busy = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let x = f32_values(&inputs[0]);
        if x.iter().any(|v| *v == -2.0) {
            panic!("backend bug triggered by -2");
        }
        if x.iter().any(|v| *v == -1.0) {
            return Err(BackendError::Internal("refusing -1".into()));
        }
        let y: Vec<f32> = x.iter().map(|v| v * 2.0 + 1.0).collect();
        Ok(vec![f32_tensor("y", &inputs[0].shape, &y)])
    }
}

impl Affine {
    fn unplugged(&self) -> BackendError {
        BackendError::DeviceUnavailable {
            device: "test".into(),
            reason: "unplugged by the test".into(),
        }
    }
}

struct Harness {
    scheduler: ModelScheduler,
    runs: Arc<Mutex<Vec<i64>>>,
    gate: Arc<Mutex<()>>,
    /// Each instance's device-gone switch, by index.
    gone: Vec<Arc<AtomicBool>>,
}

impl Harness {
    /// Holds the gate and submits a 1-sample request, returning once an instance runs it: that
    /// instance stays busy until the returned guard drops.
    fn occupy(&self) -> (MutexGuard<'_, ()>, Answer) {
        let busy = self.gate.lock().unwrap();
        let first = self.scheduler.submit(request(1, 0.0)).unwrap();
        until_runs(&self.runs, 1);
        (busy, first)
    }
}

fn harness(batch: BatchSupport, dims: &[i64], config: BatchingConfig, instances: usize) -> Harness {
    let runs = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Mutex::new(()));
    let signature = ModelSignature {
        inputs: vec![TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            dims: dims.to_vec(),
        }],
        outputs: vec![TensorSpec {
            name: "y".into(),
            datatype: DataType::Fp32,
            dims: dims.to_vec(),
        }],
        batch,
        quantization: Default::default(),
    };
    let gone: Vec<Arc<AtomicBool>> = (0..instances).map(|_| Arc::default()).collect();
    let backends: Vec<Box<dyn Backend>> = gone
        .iter()
        .map(|gone| {
            Box::new(Affine {
                signature: signature.clone(),
                runs: Arc::clone(&runs),
                gate: Arc::clone(&gate),
                gone: Arc::clone(gone),
            }) as Box<dyn Backend>
        })
        .collect();
    Harness {
        scheduler: ModelScheduler::start("test-model", "test", config, backends),
        runs,
        gate,
        gone,
    }
}

fn config(max_batch_size: usize, delay_ms: u64) -> BatchingConfig {
    BatchingConfig {
        max_batch_size,
        max_queue_delay: Duration::from_millis(delay_ms),
        ..BatchingConfig::default()
    }
}

/// A request of `samples` samples of width 2, values starting at `start`.
fn request(samples: usize, start: f32) -> InferenceRequest {
    let x: Vec<f32> = (0..samples * 2).map(|i| start + i as f32).collect();
    InferenceRequest::new(vec![f32_tensor("x", &[samples as i64, 2], &x)], samples)
}

type Answer = oneshot::Receiver<Result<InferenceResponse, InferError>>;

fn wait(rx: Answer) -> Result<InferenceResponse, InferError> {
    rx.blocking_recv()
        .expect("scheduler dropped a request without answering")
}

fn check_affine(response: &InferenceResponse, samples: usize, start: f32) {
    let expected: Vec<f32> = (0..samples * 2)
        .map(|i| (start + i as f32) * 2.0 + 1.0)
        .collect();
    assert_eq!(response.outputs[0].shape, [samples as i64, 2]);
    assert_eq!(f32_values(&response.outputs[0]), expected);
}

/// Waits until the instances have taken everything queued.
fn until_queue_empty(scheduler: &ModelScheduler) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while scheduler.queue_depth() > 0 {
        assert!(Instant::now() < deadline, "queue never drained");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the backend has started `n` runs.
fn until_runs(runs: &Mutex<Vec<i64>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while runs.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "backend never ran");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn requests_wait_for_the_delay_then_go_as_one_batch() {
    let h = harness(BatchSupport::Dynamic { max: 8 }, &[2], config(8, 80), 1);
    let started = Instant::now();
    let rxs: Vec<Answer> = (0..3)
        .map(|i| h.scheduler.submit(request(1, i as f32 * 10.0)).unwrap())
        .collect();
    for (i, rx) in rxs.into_iter().enumerate() {
        let response = wait(rx).unwrap();
        check_affine(&response, 1, i as f32 * 10.0);
        assert_eq!(response.timings.batch_size, 3);
        assert_eq!(response.timings.device, "test");
        if i == 0 {
            assert!(
                response.timings.queue >= Duration::from_millis(70),
                "{:?}",
                response.timings
            );
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(75));
    assert_eq!(*h.runs.lock().unwrap(), [3]);
}

#[test]
fn an_instance_out_of_service_does_not_take_the_wake_up_of_the_one_in_service() {
    // Idle instances sleep for a whole health interval unless woken: 60 s here.
    let h = harness(
        BatchSupport::Dynamic { max: 8 },
        &[2],
        BatchingConfig {
            health_interval: Duration::from_secs(60),
            ..config(8, 0)
        },
        2,
    );
    h.gone[0].store(true, Ordering::SeqCst);
    // Requests go to whichever instance wakes; the first one instance 0 takes puts it out of
    // service (its request is answered UNAVAILABLE), instance 1 answers the others.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.scheduler.in_service() == 2 {
        assert!(Instant::now() < deadline, "instance 0 never took a request");
        let _ = wait(h.scheduler.submit(request(1, 0.0)).unwrap());
    }
    // Both sleep now, one waiting for work and one for its device: each new request must reach
    // the one in service at once.
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..20 {
        let started = Instant::now();
        let response = wait(h.scheduler.submit(request(1, i as f32)).unwrap()).unwrap();
        check_affine(&response, 1, i as f32);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "request {i} waited {:?} for the instance in service",
            started.elapsed()
        );
    }
}

#[test]
fn a_full_batch_or_preferred_size_does_not_wait() {
    let full = harness(BatchSupport::Dynamic { max: 8 }, &[2], config(4, 10_000), 1);
    let started = Instant::now();
    let rxs: Vec<Answer> = [1, 3]
        .iter()
        .map(|s| full.scheduler.submit(request(*s, 0.0)).unwrap())
        .collect();
    for rx in rxs {
        wait(rx).unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(*full.runs.lock().unwrap(), [4]);

    let preferred = harness(
        BatchSupport::Dynamic { max: 8 },
        &[2],
        BatchingConfig {
            preferred_batch_sizes: vec![2],
            ..config(8, 10_000)
        },
        1,
    );
    let rxs: Vec<Answer> = (0..2)
        .map(|_| preferred.scheduler.submit(request(1, 0.0)).unwrap())
        .collect();
    for rx in rxs {
        assert_eq!(wait(rx).unwrap().timings.batch_size, 2);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn overflowing_request_goes_in_the_next_batch() {
    let h = harness(BatchSupport::Dynamic { max: 8 }, &[2], config(4, 0), 1);
    let (busy, first) = h.occupy();
    // While the instance is busy: 3 + 2 samples cannot share a batch of 4.
    let a = h.scheduler.submit(request(3, 1.0)).unwrap();
    let b = h.scheduler.submit(request(2, 2.0)).unwrap();
    drop(busy);
    check_affine(&wait(first).unwrap(), 1, 0.0);
    check_affine(&wait(a).unwrap(), 3, 1.0);
    check_affine(&wait(b).unwrap(), 2, 2.0);
    assert_eq!(*h.runs.lock().unwrap(), [1, 3, 2]);
}

#[test]
fn full_queue_rejects_at_once_with_its_limits() {
    let cfg = BatchingConfig {
        max_queue_requests: 2,
        max_queue_bytes: 1000,
        ..config(1, 0)
    };
    let h = harness(BatchSupport::Dynamic { max: 8 }, &[2], cfg, 1);
    let (busy, first) = h.occupy();
    until_queue_empty(&h.scheduler);
    let queued: Vec<Answer> = (0..2)
        .map(|_| h.scheduler.submit(request(1, 0.0)).unwrap())
        .collect();
    assert_eq!(h.scheduler.queue_depth(), 2);
    let started = Instant::now();
    match h.scheduler.submit(request(1, 0.0)) {
        Err(InferError::QueueFull {
            max_requests,
            max_bytes,
            queued_requests,
            ..
        }) => {
            assert_eq!((max_requests, max_bytes, queued_requests), (2, 1000, 2));
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "rejection must not block"
    );
    drop(busy);
    wait(first).unwrap();
    for rx in queued {
        wait(rx).unwrap();
    }
}

#[test]
fn byte_limit_counts_queued_bytes() {
    // Each request is 1 sample × 2 FP32 = 8 bytes; 20 bytes hold two.
    let cfg = BatchingConfig {
        max_queue_requests: 100,
        max_queue_bytes: 20,
        ..config(8, 0)
    };
    let h = harness(BatchSupport::Dynamic { max: 8 }, &[2], cfg, 1);
    let (busy, first) = h.occupy();
    until_queue_empty(&h.scheduler);
    let queued: Vec<Answer> = (0..2)
        .map(|_| h.scheduler.submit(request(1, 0.0)).unwrap())
        .collect();
    let err = h.scheduler.submit(request(1, 0.0)).unwrap_err();
    assert!(
        matches!(
            err,
            InferError::QueueFull {
                queued_bytes: 16,
                max_bytes: 20,
                ..
            }
        ),
        "{err}"
    );
    // A request larger than the byte limit can never fit: invalid, not retryable.
    let err = h.scheduler.submit(request(3, 0.0)).unwrap_err();
    assert!(
        matches!(&err, InferError::Invalid(m) if m.contains("24 bytes") && m.contains("20 bytes")),
        "{err}"
    );
    drop(busy);
    wait(first).unwrap();
    for rx in queued {
        wait(rx).unwrap();
    }
}

#[test]
fn expired_and_cancelled_requests_never_reach_the_device() {
    let h = harness(BatchSupport::Dynamic { max: 8 }, &[2], config(8, 0), 1);
    let (busy, first) = h.occupy();
    let mut expiring = request(2, 0.0);
    expiring.deadline = Some(Instant::now() + Duration::from_millis(20));
    let expiring = h.scheduler.submit(expiring).unwrap();
    let cancelled = h.scheduler.submit(request(3, 0.0)).unwrap();
    drop(cancelled);
    let live = h.scheduler.submit(request(4, 5.0)).unwrap();
    std::thread::sleep(Duration::from_millis(40));
    drop(busy);
    wait(first).unwrap();
    assert_eq!(wait(expiring).unwrap_err(), InferError::Expired);
    check_affine(&wait(live).unwrap(), 4, 5.0);
    // Only the first and the live request ran; the 2- and 3-sample ones never did.
    assert_eq!(*h.runs.lock().unwrap(), [1, 4]);
}

#[test]
fn fixed_batch_devices_get_padded_and_split_runs() {
    let h = harness(BatchSupport::Fixed(2), &[2], config(4, 0), 1);
    // One sample: padded to a run of 2, the padding's output dropped.
    check_affine(
        &wait(h.scheduler.submit(request(1, 3.0)).unwrap()).unwrap(),
        1,
        3.0,
    );
    // Three samples in one request: split into runs of 2 and 2 (one padded).
    let response = wait(h.scheduler.submit(request(3, 1.0)).unwrap()).unwrap();
    check_affine(&response, 3, 1.0);
    assert_eq!(response.timings.batch_size, 2);
    assert_eq!(*h.runs.lock().unwrap(), [2, 2, 2]);
    assert_eq!(h.scheduler.max_batch_size(), 4);
    assert!(matches!(
        h.scheduler.submit(request(5, 0.0)),
        Err(InferError::Invalid(_))
    ));
}

#[test]
fn unbatched_models_run_each_request_alone() {
    let h = harness(BatchSupport::Unbatched, &[-1, 2], config(8, 0), 1);
    let busy = h.gate.lock().unwrap();
    let rxs: Vec<Answer> = (0..3)
        .map(|i| h.scheduler.submit(request(i + 1, 0.0)).unwrap())
        .collect();
    drop(busy);
    for (i, rx) in rxs.into_iter().enumerate() {
        let response = wait(rx).unwrap();
        check_affine(&response, i + 1, 0.0);
        assert_eq!(response.timings.batch_size, 1);
    }
    assert_eq!(*h.runs.lock().unwrap(), [1, 2, 3]);
    assert_eq!(h.scheduler.max_batch_size(), 0);
}

#[test]
fn different_dynamic_dims_are_not_mixed_in_a_batch() {
    let h = harness(BatchSupport::Dynamic { max: 8 }, &[-1], config(8, 0), 1);
    let (busy, first) = h.occupy();
    let narrow = h
        .scheduler
        .submit(InferenceRequest::new(
            vec![f32_tensor("x", &[1, 2], &[1.0, 2.0])],
            1,
        ))
        .unwrap();
    let wide = h
        .scheduler
        .submit(InferenceRequest::new(
            vec![f32_tensor("x", &[1, 3], &[1.0, 2.0, 3.0])],
            1,
        ))
        .unwrap();
    drop(busy);
    wait(first).unwrap();
    assert_eq!(f32_values(&wait(narrow).unwrap().outputs[0]), [3.0, 5.0]);
    assert_eq!(f32_values(&wait(wide).unwrap().outputs[0]), [3.0, 5.0, 7.0]);
    assert_eq!(*h.runs.lock().unwrap(), [1, 1, 1]);
}

#[test]
fn backend_errors_and_panics_answer_the_batch_and_the_instance_survives() {
    let h = harness(BatchSupport::Dynamic { max: 8 }, &[2], config(8, 0), 1);
    let err = wait(h.scheduler.submit(request(1, -1.0)).unwrap()).unwrap_err();
    assert!(
        matches!(&err, InferError::Backend(m) if m.contains("refusing -1")),
        "{err}"
    );
    let err = wait(h.scheduler.submit(request(1, -2.0)).unwrap()).unwrap_err();
    assert!(
        matches!(&err, InferError::Backend(m) if m.contains("panicked")),
        "{err}"
    );
    check_affine(
        &wait(h.scheduler.submit(request(2, 1.0)).unwrap()).unwrap(),
        2,
        1.0,
    );
}

#[test]
fn invalid_requests_are_rejected_before_queueing() {
    let h = harness(BatchSupport::Dynamic { max: 8 }, &[2], config(8, 0), 1);
    let wrong_shape = InferenceRequest::new(vec![f32_tensor("x", &[1, 3], &[0.0; 3])], 1);
    assert!(
        matches!(h.scheduler.submit(wrong_shape), Err(InferError::Invalid(m)) if m.contains("[batch] + [2]"))
    );
    let wrong_count = InferenceRequest::new(vec![f32_tensor("x", &[2, 2], &[0.0; 4])], 1);
    assert!(matches!(
        h.scheduler.submit(wrong_count),
        Err(InferError::Invalid(_))
    ));
    assert!(
        matches!(h.scheduler.submit(request(9, 0.0)), Err(InferError::Invalid(m)) if m.contains("1..=8"))
    );
    assert_eq!(h.scheduler.queue_depth(), 0);
    assert_eq!(h.scheduler.signature().inputs[0].name, "x");
}

#[test]
fn shutdown_drains_the_queue_without_waiting_for_the_delay() {
    let h = harness(BatchSupport::Dynamic { max: 8 }, &[2], config(8, 60_000), 2);
    let rxs: Vec<Answer> = (0..3)
        .map(|i| h.scheduler.submit(request(1, i as f32)).unwrap())
        .collect();
    let started = Instant::now();
    h.scheduler.shutdown(Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain must not wait for the 60 s delay"
    );
    for (i, rx) in rxs.into_iter().enumerate() {
        check_affine(&wait(rx).unwrap(), 1, i as f32);
    }
    // Refused before queueing: the request comes back for the version that replaced this one.
    assert!(matches!(
        h.scheduler.submit(request(1, 0.0)).unwrap_err(),
        InferError::Replaced(_)
    ));
    h.scheduler.shutdown(Duration::ZERO); // idempotent
}

#[test]
fn shutdown_after_grace_answers_what_is_left() {
    let h = harness(BatchSupport::Dynamic { max: 8 }, &[2], config(1, 0), 1);
    let (busy, first) = h.occupy();
    let queued = h.scheduler.submit(request(1, 0.0)).unwrap();
    let started = Instant::now();
    h.scheduler.shutdown(Duration::from_millis(50));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(wait(queued).unwrap_err(), InferError::ShuttingDown);
    drop(busy);
    // The batch in flight still finishes and is answered.
    check_affine(&wait(first).unwrap(), 1, 0.0);
}

#[test]
fn many_threads_submitting_get_their_own_answers() {
    let h = Arc::new(harness(
        BatchSupport::Dynamic { max: 8 },
        &[2],
        config(8, 2),
        3,
    ));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let samples = 1 + (t + i) % 3;
                    let start = (t * 1000 + i * 10) as f32;
                    let response =
                        wait(h.scheduler.submit(request(samples, start)).unwrap()).unwrap();
                    check_affine(&response, samples, start);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let runs = h.runs.lock().unwrap();
    let samples: i64 = runs.iter().sum();
    assert_eq!(
        samples,
        (0..8)
            .flat_map(|t| (0..50).map(move |i| 1 + (t + i) % 3))
            .sum::<usize>() as i64
    );
    assert!(runs.iter().all(|n| (1..=8).contains(n)), "{runs:?}");
    assert!(
        runs.len() < 400,
        "some requests should have shared a batch ({} runs)",
        runs.len()
    );
}
