//! The whole path under concurrent load with the real ONNX Runtime backend: many submitters,
//! several instances, dynamic batches formed and split back to the right requests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{f32_tensor, f32_values, load_backend, model};
use inference_server::backend::{Backend, BatchSupport};
use inference_server::scheduler::{BatchingConfig, InferError, InferenceRequest, ModelScheduler};

fn scheduler(
    model_file: &str,
    max_batch_size: usize,
    instances: usize,
    delay: Duration,
) -> ModelScheduler {
    let config = format!("backend = \"onnxruntime\"\ninstances = {instances}\n");
    let backends: Vec<Box<dyn Backend>> = (0..instances)
        .map(|_| load_backend(&config, &model(model_file), max_batch_size).expect("model loads"))
        .collect();
    let config = BatchingConfig {
        max_batch_size,
        max_queue_delay: delay,
        ..BatchingConfig::default()
    };
    ModelScheduler::start(model_file, "onnxruntime", config, backends)
}

/// `samples` rows of 4 values unique to (`who`, `i`).
fn input(who: usize, i: usize, samples: usize) -> Vec<f32> {
    (0..samples * 4)
        .map(|k| (who * 10_000 + i * 10 + k) as f32 * 0.5)
        .collect()
}

#[test]
fn concurrent_submitters_get_their_own_rows_back() {
    let scheduler = Arc::new(scheduler("affine.onnx", 8, 2, Duration::from_millis(2)));
    assert_eq!(
        scheduler.signature().batch,
        BatchSupport::Dynamic { max: 8 }
    );
    let threads: Vec<_> = (0..12)
        .map(|who| {
            let scheduler = Arc::clone(&scheduler);
            std::thread::spawn(move || {
                let mut shared_batches = 0;
                for i in 0..40 {
                    let samples = 1 + (who + i) % 4;
                    let x = input(who, i, samples);
                    let req = InferenceRequest::new(
                        vec![f32_tensor("x", &[samples as i64, 4], &x)],
                        samples,
                    );
                    let response = scheduler
                        .submit(req)
                        .unwrap()
                        .blocking_recv()
                        .unwrap()
                        .unwrap();
                    let expected: Vec<f32> = x.iter().map(|v| v * 2.0 + 1.0).collect();
                    assert_eq!(response.outputs[0].shape, [samples as i64, 4]);
                    assert_eq!(
                        f32_values(&response.outputs[0]),
                        expected,
                        "thread {who} request {i}"
                    );
                    assert!(
                        response.timings.batch_size >= samples && response.timings.batch_size <= 8
                    );
                    assert_eq!(response.timings.device, "cpu");
                    if response.timings.batch_size > samples {
                        shared_batches += 1;
                    }
                }
                shared_batches
            })
        })
        .collect();
    let shared: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        shared > 0,
        "under concurrent load some requests must share a batch"
    );
    scheduler.shutdown(Duration::from_secs(5));
    assert_eq!(scheduler.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callers_await_answers_without_blocking_the_runtime() {
    let scheduler = Arc::new(scheduler("affine.onnx", 4, 1, Duration::from_millis(5)));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let scheduler = Arc::clone(&scheduler);
            tokio::spawn(async move {
                let x = input(99, i, 1);
                let rx = scheduler
                    .submit(InferenceRequest::new(vec![f32_tensor("x", &[1, 4], &x)], 1))?;
                let response = rx.await.map_err(|_| InferError::Cancelled)??;
                let expected: Vec<f32> = x.iter().map(|v| v * 2.0 + 1.0).collect();
                assert_eq!(f32_values(&response.outputs[0]), expected);
                Ok::<usize, InferError>(response.timings.batch_size)
            })
        })
        .collect();
    let mut largest = 0;
    for task in tasks {
        largest = largest.max(task.await.unwrap().unwrap());
    }
    assert!(
        largest > 1,
        "32 simultaneous requests with a 5 ms delay should batch"
    );
    let scheduler = Arc::clone(&scheduler);
    tokio::task::spawn_blocking(move || scheduler.shutdown(Duration::from_secs(5)))
        .await
        .unwrap();
}

#[test]
fn fixed_batch_onnx_model_is_padded_and_split() {
    let scheduler = scheduler("affine_fixed2.onnx", 4, 1, Duration::ZERO);
    assert_eq!(scheduler.signature().batch, BatchSupport::Fixed(2));
    for samples in [1usize, 2, 3, 4] {
        let x = input(7, samples, samples);
        let req = InferenceRequest::new(vec![f32_tensor("x", &[samples as i64, 4], &x)], samples);
        let response = scheduler
            .submit(req)
            .unwrap()
            .blocking_recv()
            .unwrap()
            .unwrap();
        let expected: Vec<f32> = x.iter().map(|v| v * 2.0 + 1.0).collect();
        assert_eq!(
            f32_values(&response.outputs[0]),
            expected,
            "{samples} samples"
        );
        assert_eq!(response.timings.batch_size, 2);
    }
}
