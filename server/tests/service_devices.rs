//! Instance groups and device health through the real binary over gRPC: a model on two devices
//! serves from both; a device that vanishes takes its instance out of service while the other
//! keeps serving, and comes back when the device does; with no instance left the model is
//! UNAVAILABLE and NOT_SERVING. The fake runtime's `fake:N` devices are present while a file
//! exists, so a test can pull one out; OpenVINO's CPU and AUTO devices show real groups.

mod common;
mod service_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use inference_proto::inference::infer_parameter::ParameterChoice;
use inference_proto::inference::model_infer_request::InferInputTensor;
use inference_proto::inference::{ModelInferRequest, ModelReadyRequest, RepositoryIndexRequest};
use service_support::{f32_bytes, f32_values, Repo, Server};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The fake model: `y = 2x + 1` on FP32 [N, 4].
const FAKE_MODEL: &str = "inputs = [{ name = \"x\", datatype = \"FP32\", dims = [-1, 4] }]\n\
    outputs = [{ name = \"y\", datatype = \"FP32\", dims = [-1, 4] }]\nscale = 2.0\noffset = 1.0\n";

fn request(model: &str, x: [f32; 4]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![f32_bytes(&x)],
        ..Default::default()
    }
}

fn device_of(response: &inference_proto::inference::ModelInferResponse) -> String {
    match response
        .parameters
        .get("device")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        Some(ParameterChoice::StringParam(device)) => device.clone(),
        other => panic!("no device parameter: {other:?}"),
    }
}

/// Waits until `check` holds, up to 10 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn health_of(server: &Server, model: &str) -> i32 {
    let mut health = HealthClient::new(server.channel().await.expect("channel"));
    health
        .check(HealthCheckRequest {
            service: model.into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status
}

fn fake_repo(presence: &Path, groups: &str) -> Repo {
    Repo::new()
        .file("m/1/model.fake", FAKE_MODEL.as_bytes())
        .file(
            "m/config.toml",
            format!(
                "backend = \"fake\"\nmax_batch_size = 4\n{groups}\n[fake]\npresence_dir = \"{}\"\ndelay_ms = 2\n",
                presence.display()
            )
            .as_bytes(),
        )
}

#[tokio::test]
async fn a_vanished_device_is_taken_out_while_the_other_group_serves_and_comes_back() {
    let devices = tempfile::tempdir().expect("temp dir");
    let plug = devices.path().join("fake-1");
    std::fs::write(&plug, "").expect("plug the device in");
    let repo = fake_repo(
        devices.path(),
        "[[instance_group]]\ndevice = \"cpu\"\n[[instance_group]]\ndevice = \"fake:1\"\n",
    );
    let server = Server::start(repo.path(), &["--device-health-interval", "0.2"]).await;
    let mut client = server.client().await;

    // Both groups serve: concurrent requests land on both devices.
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        let answers = futures::future::join_all((0..8).map(|i| {
            let mut client = client.clone();
            async move { client.model_infer(request("m", [i as f32; 4])).await }
        }))
        .await;
        for answer in answers {
            let answer = answer.expect("served").into_inner();
            assert_eq!(f32_values(&answer.raw_output_contents[0])[0] % 2.0, 1.0);
            seen.insert(device_of(&answer));
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["cpu".to_string(), "fake:1".to_string()])
    );

    // Pull the device out: its instance goes out of service, the cpu one keeps serving.
    std::fs::remove_file(&plug).expect("unplug");
    eventually("fake:1 out of service in RepositoryIndex", async || {
        let index = client
            .repository_index(RepositoryIndexRequest::default())
            .await
            .expect("index")
            .into_inner();
        index
            .models
            .iter()
            .any(|m| m.reason.contains("1 of 2 instances in service"))
    })
    .await;
    for i in 0..20 {
        let answer = client
            .model_infer(request("m", [i as f32; 4]))
            .await
            .expect("the cpu group still serves")
            .into_inner();
        assert_eq!(device_of(&answer), "cpu");
    }
    assert_eq!(health_of(&server, "m").await, ServingStatus::Serving as i32);
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("inference_instance_up{")
                && l.contains("device=\"fake:1\"")
                && l.contains("backend=\"fake\"")
                && l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(
            |l| l.starts_with("inference_compute_duration_seconds_count{")
                && l.contains("device=\"cpu\"")
        ),
        "{metrics}"
    );

    // Plug it back: the instance returns.
    std::fs::write(&plug, "").expect("plug back in");
    eventually("fake:1 back in service", async || {
        let metrics = server.metrics().await;
        metrics.lines().any(|l| {
            l.starts_with("inference_instance_up{")
                && l.contains("device=\"fake:1\"")
                && l.ends_with(" 1")
        })
    })
    .await;
}

#[tokio::test]
async fn with_no_instance_left_the_model_is_unavailable_and_not_serving_until_its_device_returns() {
    let devices = tempfile::tempdir().expect("temp dir");
    let plug = devices.path().join("fake-2");
    std::fs::write(&plug, "").expect("plug the device in");
    let repo = fake_repo(devices.path(), "device = \"fake:2\"\n");
    let server = Server::start(repo.path(), &["--device-health-interval", "0.2"]).await;
    let mut client = server.client().await;
    client
        .model_infer(request("m", [1.0; 4]))
        .await
        .expect("served");

    std::fs::remove_file(&plug).expect("unplug");
    eventually(
        "an UNAVAILABLE answer naming the device",
        async || match client.model_infer(request("m", [1.0; 4])).await {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
                assert!(status.message().contains("fake:2"), "{status}");
                true
            }
            Ok(_) => false,
        },
    )
    .await;
    eventually("health NOT_SERVING", async || {
        health_of(&server, "m").await == ServingStatus::NotServing as i32
    })
    .await;
    let ready = client
        .model_ready(ModelReadyRequest {
            name: "m".into(),
            version: String::new(),
        })
        .await
        .expect("ModelReady")
        .into_inner()
        .ready;
    assert!(!ready);
    assert!(
        server.metrics().await.contains("outcome=\"unavailable\""),
        "UNAVAILABLE answers are counted"
    );

    std::fs::write(&plug, "").expect("plug back in");
    eventually("served again", async || {
        client.model_infer(request("m", [1.0; 4])).await.is_ok()
    })
    .await;
    eventually("health SERVING again", async || {
        health_of(&server, "m").await == ServingStatus::Serving as i32
    })
    .await;
}

#[tokio::test]
async fn an_openvino_model_on_two_instance_groups_serves_from_both() {
    let repo = Repo::new().version("m", 1, "affine.onnx").file(
        "m/config.toml",
        b"backend = \"openvino\"\nmax_batch_size = 4\n\
          [[instance_group]]\ndevice = \"CPU\"\n[[instance_group]]\ndevice = \"AUTO\"\n\
          [dynamic_batching]\nmax_queue_delay_us = 200\n",
    );
    let server = Server::start(repo.path(), &[]).await;
    let client = server.client().await;
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let answers = futures::future::join_all((0..8).map(|i| {
            let mut client = client.clone();
            async move { client.model_infer(request("m", [i as f32; 4])).await }
        }))
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            let answer = answer.expect("served").into_inner();
            assert_eq!(
                f32_values(&answer.raw_output_contents[0]),
                [i as f32 * 2.0 + 1.0; 4]
            );
            seen.insert(device_of(&answer));
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["AUTO".to_string(), "CPU".to_string()])
    );
    let mut client = client;
    let config = client
        .model_config(inference_proto::inference::ModelConfigRequest {
            name: "m".into(),
            version: String::new(),
        })
        .await
        .expect("ModelConfig")
        .into_inner()
        .config
        .expect("a config");
    assert_eq!(config.backend, "openvino");
    assert_eq!(config.platform, "openvino");
    assert_eq!(config.instance_group.len(), 2);
    assert_eq!(config.default_model_filename, "model.onnx");
}
