//! Faults, through the real binary: a backend error fails only the batch it happened in; a
//! broken version beside good ones is reported while the good ones serve; a model file corrupted
//! on disk keeps the loaded version serving on reload (for a whole model and for one version)
//! and is UNAVAILABLE with the reason on a restart; a client that goes away mid-request is
//! dropped and counted once.

mod common;
mod service_support;

use std::time::Duration;

use inference_proto::inference::model_infer_request::InferInputTensor;
use inference_proto::inference::{
    ModelInferRequest, ModelReadyRequest, RepositoryIndexRequest, ServerReadyRequest,
};
use service_support::{f32_bytes, f32_values, metric, Repo, Server};
use tonic::Code;

/// The fake model: `y = 2x + 1` on FP32 [N, 4].
const FAKE_MODEL: &str = "inputs = [{ name = \"x\", datatype = \"FP32\", dims = [-1, 4] }]\n\
    outputs = [{ name = \"y\", datatype = \"FP32\", dims = [-1, 4] }]\nscale = 2.0\noffset = 1.0\n";

/// One FP32 [1, 4] sample for `model` (either the fake or the affine ONNX model).
fn request(model: &str, version: &str, values: [f32; 4]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![f32_bytes(&values)],
        ..Default::default()
    }
}

/// A fake model batching two requests per run, each run taking `delay_ms`; a batch whose first
/// value is 13 fails in the backend.
fn failing_repo(delay_ms: u64) -> Repo {
    Repo::new().file("fake/1/model.fake", FAKE_MODEL.as_bytes()).file(
        "fake/config.toml",
        format!(
            "backend = \"fake\"\nmax_batch_size = 2\n[fake]\ndelay_ms = {delay_ms}\nfail_on = 13.0\n\
             [dynamic_batching]\nmax_queue_delay_us = 100000\npreferred_batch_sizes = [2]\n"
        )
        .as_bytes(),
    )
}

#[tokio::test]
async fn a_backend_error_fails_only_its_batch() {
    let repo = failing_repo(200);
    let server = Server::start(repo.path(), &[]).await;
    let send = |x: f32| {
        let server = &server;
        async move {
            server
                .client()
                .await
                .model_infer(request("fake", "", [x; 4]))
                .await
        }
    };
    // Batch A = [13, 1] runs and fails while batch B = [2, 3] waits for the instance.
    let (a1, a2, b1, b2) = tokio::join!(
        send(13.0),
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            send(1.0).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(80)).await;
            send(2.0).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            send(3.0).await
        },
    );
    for failed in [a1, a2] {
        let status = failed.expect_err("batch A fails");
        assert_eq!(status.code(), Code::Internal, "{status}");
        assert!(status.message().contains("fails on 13"), "{status}");
    }
    for (answer, x) in [(b1, 2.0), (b2, 3.0)] {
        let response = answer.expect("batch B succeeds").into_inner();
        assert_eq!(
            f32_values(&response.raw_output_contents[0]),
            [2.0 * x + 1.0; 4]
        );
    }
    let page = server.metrics().await;
    assert_eq!(
        metric(
            &page,
            "inference_requests_total{",
            &["outcome=\"backend_error\""]
        ),
        2.0,
        "{page}"
    );
    assert_eq!(
        metric(&page, "inference_requests_total{", &["outcome=\"success\""]),
        2.0,
        "{page}"
    );
    // The instance stays in service.
    send(4.0).await.expect("serves after the failure");
}

#[tokio::test]
async fn a_client_gone_mid_request_is_dropped_and_counted_once() {
    let repo = Repo::new()
        .file("slow/1/model.fake", FAKE_MODEL.as_bytes())
        .file(
            "slow/config.toml",
            b"backend = \"fake\"\nmax_batch_size = 1\n[fake]\ndelay_ms = 300\n",
        );
    let server = Server::start(repo.path(), &[]).await;
    // One request running on the instance, one queued behind it; both clients give up.
    let (mut first, mut second) = (server.client().await, server.client().await);
    let running = first.model_infer(request("slow", "", [1.0; 4]));
    let queued = second.model_infer(request("slow", "", [2.0; 4]));
    let gave_up = tokio::time::timeout(Duration::from_millis(100), async {
        tokio::join!(running, queued)
    })
    .await;
    assert!(gave_up.is_err(), "the requests should still be running");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let page = server.metrics().await;
    assert_eq!(
        metric(
            &page,
            "inference_requests_total{",
            &["outcome=\"cancelled\""]
        ),
        2.0,
        "{page}"
    );
    assert_eq!(
        metric(&page, "inference_requests_total{", &["outcome=\"success\""]),
        0.0,
        "{page}"
    );
    let response = server
        .client()
        .await
        .model_infer(request("slow", "", [3.0; 4]))
        .await
        .expect("serves the next client")
        .into_inner();
    assert_eq!(f32_values(&response.raw_output_contents[0]), [7.0; 4]);
}

async fn model_ready(server: &Server, name: &str, version: &str) -> bool {
    server
        .client()
        .await
        .model_ready(ModelReadyRequest {
            name: name.into(),
            version: version.into(),
        })
        .await
        .expect("ModelReady")
        .into_inner()
        .ready
}

async fn index(server: &Server) -> Vec<(String, String, String, String)> {
    server
        .client()
        .await
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("RepositoryIndex")
        .into_inner()
        .models
        .into_iter()
        .map(|m| (m.name, m.version, m.state, m.reason))
        .collect()
}

fn affine(model: &str, version: &str) -> ModelInferRequest {
    request(model, version, [0.0, 1.0, 2.0, 3.0])
}

#[tokio::test]
async fn a_broken_version_is_reported_and_the_good_ones_serve() {
    let repo = Repo::new()
        .model("pinned", "affine.onnx", "versions = [1, 2, 3]\n")
        .version("pinned", 3, "affine.onnx")
        .file("pinned/2/model.onnx", b"\x08\x07not a protobuf model\xff");
    let server = Server::start(repo.path(), &[]).await;
    let ready = server
        .client()
        .await
        .server_ready(ServerReadyRequest {})
        .await
        .expect("ServerReady")
        .into_inner()
        .ready;
    assert!(ready, "pinned serves versions 1 and 3");
    for (version, expected) in [("1", true), ("2", false), ("3", true), ("", true)] {
        assert_eq!(
            model_ready(&server, "pinned", version).await,
            expected,
            "version '{version}'"
        );
    }
    let status = server
        .client()
        .await
        .model_infer(affine("pinned", "2"))
        .await
        .expect_err("version 2 is broken");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(
        status.message().contains("version 2 failed to load")
            && status.message().contains("pinned/2/model.onnx"),
        "{status}"
    );
    for version in ["1", "3", ""] {
        server
            .client()
            .await
            .model_infer(affine("pinned", version))
            .await
            .unwrap_or_else(|s| panic!("version '{version}' serves: {s}"));
    }
    let rows = index(&server).await;
    let states: Vec<(&str, &str)> = rows
        .iter()
        .map(|(_, version, state, _)| (version.as_str(), state.as_str()))
        .collect();
    assert_eq!(
        states,
        [("1", "READY"), ("2", "UNAVAILABLE"), ("3", "READY")],
        "{rows:?}"
    );
    assert!(rows[1].3.contains("pinned/2/model.onnx"), "{rows:?}");
    assert!(
        server.log().contains("model version failed to load"),
        "{}",
        server.log()
    );

    // Version 3 goes bad on disk: a reload keeps the loaded version 3 serving.
    let v3 = repo.path().join("pinned/3/model.onnx");
    let bytes = std::fs::read(&v3).expect("read version 3");
    std::fs::write(&v3, &bytes[..bytes.len() / 2]).expect("truncate version 3");
    server.signal("HUP");
    let log = server
        .wait_for_log("repository reloaded", Duration::from_secs(20))
        .await;
    assert!(
        log.contains("model version failed to reload; the loaded one keeps serving"),
        "{log}"
    );
    server
        .client()
        .await
        .model_infer(affine("pinned", "3"))
        .await
        .expect("the loaded version 3 keeps serving");
    assert!(model_ready(&server, "pinned", "3").await);
}

#[tokio::test]
async fn a_model_file_corrupted_on_disk_keeps_serving_on_reload_and_is_unavailable_on_restart() {
    let repo = Repo::new()
        .model("victim", "affine.onnx", "")
        .model("bystander", "affine.onnx", "");
    let model_file = repo.path().join("victim/1/model.onnx");
    let mut server = Server::start(repo.path(), &[]).await;
    server
        .client()
        .await
        .model_infer(affine("victim", ""))
        .await
        .expect("serves before");

    // Half the file is lost (a full SD card, an interrupted copy).
    let bytes = std::fs::read(&model_file).expect("read model");
    std::fs::write(&model_file, &bytes[..bytes.len() / 2]).expect("truncate model");
    server.signal("HUP");
    let logged = server
        .wait_for_log("repository reloaded", Duration::from_secs(20))
        .await;
    assert!(logged.contains("victim/1/model.onnx"), "{logged}");
    server
        .client()
        .await
        .model_infer(affine("victim", ""))
        .await
        .expect("the loaded version keeps serving after a failed reload");
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(20)).await;

    let server = Server::start(repo.path(), &[]).await;
    let status = server
        .client()
        .await
        .model_infer(affine("victim", ""))
        .await
        .expect_err("cannot load after a restart");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("victim/1/model.onnx"), "{status}");
    let rows = index(&server).await;
    let victim = rows.iter().find(|r| r.0 == "victim").expect("victim row");
    assert_eq!(victim.2, "UNAVAILABLE", "{rows:?}");
    assert!(victim.3.contains("victim/1/model.onnx"), "{rows:?}");
    server
        .client()
        .await
        .model_infer(affine("bystander", ""))
        .await
        .expect("the other model serves");
}
