//! The server as a systemd service, through the real binary: the notify protocol for real (a
//! `NOTIFY_SOCKET` datagram socket sees READY=1, watchdog pings, RELOADING=1 then READY=1 on
//! SIGHUP, STOPPING=1 on SIGTERM), and reloading the repository without a restart under load —
//! new versions swapped in, a broken one leaving the old serving, models added and removed —
//! with not one request failing.

mod common;
mod service_support;

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inference_proto::inference::model_infer_request::InferInputTensor;
use inference_proto::inference::{ModelInferRequest, ModelMetadataRequest, RepositoryIndexRequest};
use service_support::{f32_bytes, f32_values, read_until, Repo, Server};

#[tokio::test]
async fn the_notify_protocol_reports_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let repo = Repo::new().model("affine", "affine.onnx", "");
    let path_text = path.display().to_string();
    let server = Server::start_with(
        repo.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", path_text.as_str()),
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .await;

    let ready = read_until(&socket, "READY=1", Duration::from_secs(10));
    assert!(ready.iter().any(|m| m.contains("READY=1")), "{ready:?}");
    let pings = read_until(&socket, "never", Duration::from_millis(1500));
    let watchdog = pings.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        watchdog >= 3,
        "about every 200 ms for 1.5 s, got {watchdog}: {pings:?}"
    );

    server.signal("HUP");
    let reload = read_until(&socket, "READY=1", Duration::from_secs(10));
    let reloading = reload.iter().position(|m| m.contains("RELOADING=1"));
    let ready_again = reload.iter().rposition(|m| m.contains("READY=1"));
    assert!(
        matches!((reloading, ready_again), (Some(r), Some(d)) if r < d),
        "RELOADING=1 then READY=1: {reload:?}"
    );
    assert!(
        reload.iter().any(|m| m.contains("MONOTONIC_USEC=")),
        "{reload:?}"
    );

    server.signal("TERM");
    let stopping = read_until(&socket, "STOPPING=1", Duration::from_secs(10));
    assert!(
        stopping.iter().any(|m| m.contains("STOPPING=1")),
        "{stopping:?}"
    );
    let mut server = server;
    assert!(server.wait_exit(Duration::from_secs(30)).await.success());
}

fn request(x: f32) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![f32_bytes(&[x; 4])],
        ..Default::default()
    }
}

async fn served_versions(server: &Server, model: &str) -> Vec<String> {
    match server
        .client()
        .await
        .model_metadata(ModelMetadataRequest {
            name: model.into(),
            version: String::new(),
        })
        .await
    {
        Ok(answer) => answer.into_inner().versions,
        Err(_) => Vec::new(),
    }
}

async fn reload_and_wait(server: &Server, what: &str, check: impl AsyncFn() -> bool) {
    server.signal("HUP");
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "reload never gave: {what}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reloading_under_load_swaps_versions_keeps_the_old_one_on_failure_and_fails_nothing() {
    let repo = Repo::new().model(
        "m",
        "affine.onnx",
        "max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 200\n",
    );
    let server = Server::start(repo.path(), &[]).await;
    assert_eq!(served_versions(&server, "m").await, ["1"]);

    // Four clients in closed loops for the whole test; every answer must be right.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for worker in 0..4 {
        let mut client = server.client().await;
        let (stop, answered, failed) = (
            Arc::clone(&stop),
            Arc::clone(&answered),
            Arc::clone(&failed),
        );
        load.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let x = (worker * 1000 + i) as f32;
                match client.model_infer(request(x)).await {
                    Ok(answer)
                        if f32_values(&answer.get_ref().raw_output_contents[0])
                            == [x * 2.0 + 1.0; 4] =>
                    {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => errors.push("a wrong answer".to_string()),
                    Err(status) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(status.to_string());
                    }
                }
                i += 1;
            }
            errors
        }));
    }

    // A new version: loaded and warmed up beside version 1, then swapped in.
    let repo = repo.version("m", 2, "affine.onnx");
    reload_and_wait(&server, "version 2 served", async || {
        served_versions(&server, "m").await == ["2"]
    })
    .await;

    // A broken new version: version 2 keeps serving, and the index says why.
    let repo = repo.file("m/3/model.onnx", b"this is not an ONNX model");
    server.signal("HUP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(served_versions(&server, "m").await, ["2"]);
    assert!(
        server.log().contains("new files failed to load"),
        "{}",
        server.log()
    );
    std::fs::remove_dir_all(repo.path().join("m/3")).expect("remove the broken version");

    // A model added, then removed.
    let repo = repo.model("n", "affine.onnx", "");
    reload_and_wait(&server, "model n served", async || {
        served_versions(&server, "n").await == ["1"]
    })
    .await;
    std::fs::remove_dir_all(repo.path().join("n")).expect("remove model n");
    reload_and_wait(&server, "model n unloaded", async || {
        let index = server
            .client()
            .await
            .repository_index(RepositoryIndexRequest::default())
            .await
            .expect("index")
            .into_inner();
        !index
            .models
            .iter()
            .any(|m| m.name == "n" && m.state == "READY")
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for task in load {
        errors.extend(task.await.expect("load task"));
    }
    assert!(
        answered.load(Ordering::Relaxed) > 100,
        "too little load to mean anything"
    );
    assert!(
        errors.is_empty(),
        "{} requests failed during reloads: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}
