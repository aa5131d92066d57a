//! Process lifecycle of the real binary: systemd notifications, draining on SIGTERM/SIGINT with
//! requests in flight, and the Prometheus `/metrics` endpoint.

mod common;
mod service_support;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use inference_proto::inference::model_infer_request::InferInputTensor;
use inference_proto::inference::ModelInferRequest;
use service_support::{f32_bytes, f32_values, Repo, Server};

fn request(model: &str, batch: usize) -> ModelInferRequest {
    let values: Vec<f32> = (0..batch * 4).map(|v| v as f32).collect();
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![batch as i64, 4],
            parameters: HashMap::new(),
            contents: None,
        }],
        raw_input_contents: vec![f32_bytes(&values)],
        ..Default::default()
    }
}

/// Reads systemd notifications until one contains `wanted`.
fn expect_notification(socket: &UnixDatagram, wanted: &str) {
    let mut buffer = [0u8; 1024];
    loop {
        let len = socket
            .recv(&mut buffer)
            .unwrap_or_else(|e| panic!("no '{wanted}' notification: {e}"));
        if String::from_utf8_lossy(&buffer[..len]).contains(wanted) {
            return;
        }
    }
}

#[tokio::test]
async fn sigterm_drains_queued_requests_then_exits_zero() {
    // Requests wait up to 3 s for a batch of 8 to fill, so they are still queued at SIGTERM.
    let repo = Repo::new().model(
        "slow",
        "affine.onnx",
        "max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 3000000\npreferred_batch_sizes = [8]\n",
    );
    let notify_dir = tempfile::tempdir().expect("tempdir");
    let notify_path = notify_dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("socket timeout");
    let notify = notify_path.display().to_string();
    let mut server = Server::start_with(
        repo.path(),
        &["--shutdown-grace", "10"],
        &[("NOTIFY_SOCKET", notify.as_str())],
    )
    .await;
    expect_notification(&socket, "READY=1");

    let client = server.client().await;
    let calls: Vec<_> = (1..=3)
        .map(|batch| {
            let mut client = client.clone();
            tokio::spawn(async move { client.model_infer(request("slow", batch)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for call in &calls {
        assert!(
            !call.is_finished(),
            "requests should still be waiting for a full batch"
        );
    }
    server.signal("TERM");
    let started = std::time::Instant::now();
    for (index, call) in calls.into_iter().enumerate() {
        let batch = index + 1;
        let response = call
            .await
            .expect("task")
            .unwrap_or_else(|status| {
                panic!(
                    "request {batch} failed during drain: {status}\n{}",
                    server.log()
                )
            })
            .into_inner();
        let expected: Vec<f32> = (0..batch * 4).map(|v| v as f32 * 2.0 + 1.0).collect();
        assert_eq!(f32_values(&response.raw_output_contents[0]), expected);
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "draining should flush the queue at once, took {:?}",
        started.elapsed()
    );
    expect_notification(&socket, "STOPPING=1");
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

#[tokio::test]
async fn metrics_endpoint_reports_requests_and_model_states() {
    let repo = Repo::new()
        .model("affine", "affine.onnx", "max_batch_size = 8\n")
        .model("broken", "affine.onnx", "max_batch_size = \"eight\"\n");
    let mut server = Server::start(repo.path(), &[]).await;
    let mut client = server.client().await;
    for batch in [1, 2] {
        client
            .model_infer(request("affine", batch))
            .await
            .expect("infer");
    }
    let mut bad = request("affine", 1);
    bad.inputs[0].datatype = "FP64".into();
    client.model_infer(bad).await.expect_err("invalid");

    let text = server.metrics().await;
    let value = |name: &str, labels: &[&str]| -> Option<f64> {
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .find(|line| labels.iter().all(|label| line.contains(label)))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let model = "model=\"affine\"";
    assert_eq!(
        value("inference_requests_total", &[model, "outcome=\"success\""]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value("inference_requests_total", &[model, "outcome=\"invalid\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("model_state", &[model, "state=\"ready\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            "model_state",
            &["model=\"broken\"", "state=\"unavailable\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("model_state", &["model=\"broken\"", "state=\"ready\""]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value("inference_inflight_requests", &[model]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value("inference_request_duration_seconds_count", &[model]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value("inference_batch_size_count", &[model]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value("model_load_duration_seconds_count", &[model]),
        Some(1.0),
        "{text}"
    );
    assert!(value("inference_queue_depth", &[model]).is_some(), "{text}");

    // SIGINT stops the server cleanly too.
    server.signal("INT");
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", server.log());
}
