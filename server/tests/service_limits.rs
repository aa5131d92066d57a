//! The server under clients that are slow, greedy or hostile, through the real binary: every
//! bound holds, answers the right status, is counted in the metrics, and the server keeps
//! serving. Deadlines are DEADLINE_EXCEEDED at the deadline (queued or not) and count as
//! `expired`; connections past the limit and idle ones are closed; unfinished bodies are bounded
//! by the memory budget and the body timeout; a stream whose client never reads is held to a few
//! requests; long names are cut short in errors.

mod common;
mod service_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use inference_proto::inference::infer_parameter::ParameterChoice;
use inference_proto::inference::model_infer_request::InferInputTensor;
use inference_proto::inference::{InferParameter, ModelInferRequest, ServerLiveRequest};
use service_support::{f32_bytes, metric, Repo, Server};
use tokio::io::AsyncReadExt;
use tonic::Code;

/// The fake model: `y = 2x + 1` on FP32 [N, 4].
const FAKE_MODEL: &str = "inputs = [{ name = \"x\", datatype = \"FP32\", dims = [-1, 4] }]\n\
    outputs = [{ name = \"y\", datatype = \"FP32\", dims = [-1, 4] }]\nscale = 2.0\noffset = 1.0\n";

/// A repository with one fake model whose every run takes `delay_ms`.
fn slow_repo(delay_ms: u64) -> Repo {
    Repo::new()
        .file("slow/1/model.fake", FAKE_MODEL.as_bytes())
        .file(
            "slow/config.toml",
            format!("backend = \"fake\"\nmax_batch_size = 1\n[fake]\ndelay_ms = {delay_ms}\n")
                .as_bytes(),
        )
}

fn request(x: f32) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "slow".into(),
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

#[tokio::test]
async fn deadlines_are_deadline_exceeded_at_the_deadline_and_count_as_expired() {
    let repo = slow_repo(400);
    let server = Server::start(repo.path(), &[]).await;
    let busy = {
        let mut client = server.client().await;
        tokio::spawn(async move { client.model_infer(request(1.0)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await; // the instance is busy now

    // gRPC deadlines (the grpc-timeout header, from a client that does not give up by itself),
    // queued behind the busy instance.
    let mut waiting = Vec::new();
    for i in 0..3 {
        let addr = server.grpc_addr;
        waiting.push(tokio::spawn(async move {
            let sent = Instant::now();
            let status = unary_with_timeout(addr, &request(i as f32), "60m").await;
            (status, sent.elapsed())
        }));
    }
    for task in waiting {
        let (status, took) = task.await.expect("task");
        assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
        assert!(
            took < Duration::from_millis(250),
            "answered at the deadline, took {took:?}"
        );
    }
    // tonic's client gives up at the same deadline by itself; the server counts that expired
    // too, not cancelled.
    let mut client = server.client().await;
    let mut call = tonic::Request::new(request(9.0));
    call.set_timeout(Duration::from_millis(60));
    client
        .model_infer(call)
        .await
        .expect_err("past its deadline");

    // Triton's `timeout` parameter (µs), 30 ms.
    let mut timed = request(5.0);
    timed.parameters.insert(
        "timeout".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(30_000)),
        },
    );
    let sent = Instant::now();
    let status = server
        .client()
        .await
        .model_infer(timed)
        .await
        .expect_err("30 ms deadline");
    let took = sent.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(
        took >= Duration::from_millis(30) && took < Duration::from_millis(200),
        "took {took:?}"
    );

    busy.await
        .expect("task")
        .expect("the busy request itself finishes");
    let page = server.metrics().await;
    assert_eq!(
        metric(&page, "inference_requests_total{", &["outcome=\"expired\""]),
        5.0,
        "{page}"
    );
    assert_eq!(
        metric(
            &page,
            "inference_requests_total{",
            &["outcome=\"cancelled\""]
        ),
        0.0,
        "{page}"
    );
    server
        .client()
        .await
        .model_infer(request(2.0))
        .await
        .expect("still serving");
}

/// Whether the server closes `stream` within `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(limit, stream.read(&mut byte)).await;
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn connections_past_the_limit_and_idle_ones_are_closed() {
    let repo = slow_repo(0);
    let server = Server::start(
        repo.path(),
        &["--max-connections", "4", "--idle-timeout", "1"],
    )
    .await;
    // Idle raw TCP connections: the first ones fill the limit, the next are closed at once.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(
            tokio::net::TcpStream::connect(server.grpc_addr)
                .await
                .expect("connect"),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut extra = held.split_off(4);
    for stream in &mut extra {
        assert!(
            closed_within(stream, Duration::from_secs(2)).await,
            "a connection over the limit stays open"
        );
    }
    // The held ones say nothing for over a second: closed as idle, and the server serves again.
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "an idle connection stays open"
        );
    }
    let mut client = server.client().await;
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .expect("live")
            .into_inner()
            .live
    );
    let page = server.metrics().await;
    assert!(
        metric(
            &page,
            "inference_connections_total{",
            &["outcome=\"rejected_limit\"", "listener=\"grpc\""]
        ) >= 2.0,
        "{page}"
    );
    assert!(
        metric(
            &page,
            "inference_connections_total{",
            &["outcome=\"closed_idle\"", "listener=\"grpc\""]
        ) >= 4.0,
        "{page}"
    );
}

/// One ModelInfer over a bare HTTP/2 connection with a `grpc-timeout` header; its grpc-status.
async fn unary_with_timeout(
    addr: std::net::SocketAddr,
    message: &ModelInferRequest,
    timeout: &str,
) -> Option<String> {
    use prost::Message;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("POST")
        .uri("http://localhost/inference.GRPCInferenceService/ModelInfer")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .expect("request");
    let (response, mut stream) = sender.send_request(request, false).expect("send");
    let encoded = message.encode_to_vec();
    let mut data = vec![0u8];
    data.extend((encoded.len() as u32).to_be_bytes());
    data.extend(encoded);
    stream
        .send_data(Bytes::from(data), true)
        .expect("send body");
    grpc_status(response).await
}

/// The grpc-status of an HTTP/2 response: in its headers (trailers-only) or its trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> Option<String> {
    let response = response.await.ok()?;
    if let Some(status) = response.headers().get("grpc-status") {
        return Some(status.to_str().ok()?.to_string());
    }
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.ok()??;
    Some(trailers.get("grpc-status")?.to_str().ok()?.to_string())
}

/// Opens an HTTP/2 stream to ModelInfer that announces a `declared`-byte message, sends
/// `sent` bytes of it and stops; returns the stream's gRPC status once the server answers.
async fn unfinished_body(
    sender: &mut h2::client::SendRequest<Bytes>,
    declared: u32,
    sent: usize,
) -> tokio::task::JoinHandle<Option<String>> {
    let request = http::Request::builder()
        .method("POST")
        .uri("http://localhost/inference.GRPCInferenceService/ModelInfer")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut stream) = sender.send_request(request, false).expect("send request");
    let mut data = vec![0u8];
    data.extend(declared.to_be_bytes());
    data.extend(std::iter::repeat_n(0u8, sent));
    tokio::spawn(async move {
        let _ = stream.send_data(Bytes::from(data), false);
        let status = grpc_status(response).await;
        drop(stream);
        status
    })
}

#[tokio::test]
async fn unfinished_bodies_are_bounded_by_the_memory_budget_and_the_body_timeout() {
    let repo = slow_repo(0);
    let server = Server::start(
        repo.path(),
        &[
            "--max-message-size",
            "4000000",
            "--max-request-memory",
            "5000000",
            "--body-timeout",
            "2",
        ],
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(server.grpc_addr)
        .await
        .expect("connect");
    let (mut sender, connection) = h2::client::Builder::new()
        .initial_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .handshake(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    // Four bodies announce 3 MB and send 1.5 MB each: the first three fit in the 5 MB budget,
    // the fourth does not (RESOURCE_EXHAUSTED); the three that fit never finish (DEADLINE_EXCEEDED).
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(unfinished_body(&mut sender, 3_000_000, 1_500_000).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut statuses = Vec::new();
    for stream in streams {
        let status = tokio::time::timeout(Duration::from_secs(10), stream)
            .await
            .expect("every stream is answered")
            .expect("task");
        statuses.push(status.unwrap_or_default());
    }
    statuses.sort();
    // 4 = DEADLINE_EXCEEDED, 8 = RESOURCE_EXHAUSTED.
    assert_eq!(statuses, ["4", "4", "4", "8"], "{}", server.log());
    // A message announced over --max-message-size is refused from its prefix.
    let over = unfinished_body(&mut sender, 5_000_000, 10).await;
    let status = tokio::time::timeout(Duration::from_secs(5), over)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(status.as_deref(), Some("8"));
    let page = server.metrics().await;
    assert!(
        metric(
            &page,
            "inference_request_bodies_refused_total{",
            &["reason=\"memory_budget\""]
        ) >= 1.0,
        "{page}"
    );
    assert!(
        metric(
            &page,
            "inference_request_bodies_refused_total{",
            &["reason=\"timeout\""]
        ) >= 3.0,
        "{page}"
    );
    server
        .client()
        .await
        .model_infer(request(2.0))
        .await
        .expect("still serving");
}

#[tokio::test]
async fn a_stream_whose_client_never_reads_is_held_to_a_few_requests() {
    let repo = slow_repo(0);
    let server = Server::start(repo.path(), &[]).await;
    let (requests, inbound) = tokio::sync::mpsc::channel(16);
    let producer = tokio::spawn(async move {
        for i in 0..100_000 {
            if requests.send(request(i as f32)).await.is_err() {
                break;
            }
        }
    });
    let mut client = server.client().await;
    let responses = client
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .expect("stream opened");
    // Never read `responses`. The server runs what fits in the client's HTTP/2 receive window
    // and its own few slots, then stops reading the stream: the count stalls well below what
    // the client would send.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answered = |page: &str| metric(page, "inference_requests_total{", &["outcome=\"success\""]);
    let early = answered(&server.metrics().await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let page = server.metrics().await;
    assert_eq!(
        answered(&page),
        early,
        "the server kept running requests nobody reads"
    );
    assert!(
        early < 50_000.0,
        "{early} requests ran for a client that reads nothing"
    );
    assert!(
        metric(&page, "inference_stream_backpressure_total{", &[]) >= 1.0,
        "{page}"
    );
    drop(responses);
    producer.abort();
    server
        .client()
        .await
        .model_infer(request(2.0))
        .await
        .expect("still serving");
}

#[tokio::test]
async fn long_client_strings_are_cut_short_in_errors() {
    let repo = slow_repo(0);
    let server = Server::start(repo.path(), &[]).await;
    let mut unknown = request(1.0);
    unknown.model_name = "m".repeat(1 << 20);
    let status = server
        .client()
        .await
        .model_infer(unknown)
        .await
        .expect_err("unknown model");
    assert_eq!(status.code(), Code::NotFound, "{status}");
    assert!(
        status.message().len() < 1_000,
        "the error echoed {} bytes",
        status.message().len()
    );
    assert!(
        status.message().contains("(1048576 bytes)"),
        "{}",
        status.message()
    );
    let mut version = request(1.0);
    version.model_version = "9".repeat(100_000);
    let status = server
        .client()
        .await
        .model_infer(version)
        .await
        .expect_err("unknown version");
    assert!(status.message().len() < 1_000, "{}", status.message().len());
}
