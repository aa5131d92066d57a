//! The gRPC SUT against an in-process fake KServe server: start-up checks, request splitting,
//! payloads, server timings and failure completion.

mod common;

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{as_class, digits_qsl, serve, wait_for, Collect, Fake};
use loadgen::sut::{Qsl, QuerySample, ResponseSink, ServerTiming, Sut};
use loadgen_client::grpc_sut::{GrpcSut, GrpcSutConfig, GrpcSutError};
use loadgen_client::profile::lookup;

#[test]
fn sut_checks_splits_decodes_and_fails_cleanly() {
    let fake = Arc::new(Fake::default());
    let (_server, addr) = serve(Arc::clone(&fake), None);
    let dir = tempfile::tempdir().unwrap();
    let qsl = digits_qsl(dir.path());
    let profile = lookup("digits-cnn").unwrap();

    let endpoint = format!("http://{addr}");
    let config = GrpcSutConfig {
        endpoints: vec![endpoint.clone(), addr.to_string()],
        connections_per_endpoint: 2,
        network_threads: 2,
        model: "digits".into(),
        max_batch: 4,
        in_flight_per_connection: 8,
        in_flight_bytes_per_endpoint: 1 << 20,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        retries: 3,
        security: Default::default(),
    };
    let sut = GrpcSut::connect(&config, profile, qsl.store()).unwrap();
    assert!(sut.name().starts_with("Network SUT"), "{}", sut.name());

    let (tx, rx) = mpsc::channel();
    let sink = ResponseSink::new(Arc::new(Collect(Mutex::new(tx))));

    // One query of 10 samples, split 4 + 4 + 2.
    let samples: Vec<QuerySample> = (0..10)
        .map(|i| QuerySample {
            id: 100 + i as u64,
            index: 9 - i,
        })
        .collect();
    sut.issue_query(samples, sink.clone());
    let got = wait_for(&rx, 10);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.id, 100 + i as u64);
        assert_eq!(r.error, None);
        assert_eq!(as_class(&r.data), (9 - i) as f32, "payload is the label");
        let timing = r.server_timing.expect("server timings");
        assert_eq!((timing.queue_ns, timing.compute_ns), (5_000, 7_000));
        assert!(timing.batch_size == 4 || timing.batch_size == 2);
    }
    let mut batches = fake.batches.lock().unwrap().clone();
    batches.sort_unstable();
    assert_eq!(batches, vec![2, 4, 4]);

    // A failing request completes every sample with the error.
    let three: Vec<QuerySample> = (0..3)
        .map(|i| QuerySample {
            id: 200 + i,
            index: 1,
        })
        .collect();
    sut.issue_query(three, sink.clone());
    for r in wait_for(&rx, 3) {
        let error = r.error.expect("failed sample");
        assert!(error.contains("boom"), "{error}");
        assert!(r.data.is_empty() && r.server_timing.is_none());
    }

    // A sample the QSL did not load completes with an error instead of hanging.
    qsl.unload_samples_from_ram(&[4]);
    sut.issue_query(vec![QuerySample { id: 300, index: 4 }], sink.clone());
    let r = &wait_for(&rx, 1)[0];
    assert!(
        r.error.as_deref().unwrap_or("").contains("not loaded"),
        "{r:?}"
    );
    assert_eq!(
        r.server_timing, None::<ServerTiming>,
        "no request was sent for it"
    );

    // Overload answers are retried until the server accepts, and every retry is counted...
    use loadgen::observer::RunObserver;
    let stats = sut.retry_stats();
    assert!(stats.started().is_empty());
    fake.refuse.store(2, Ordering::SeqCst);
    sut.issue_query(vec![QuerySample { id: 400, index: 6 }], sink.clone());
    let r = &wait_for(&rx, 1)[0];
    assert_eq!((r.error.as_deref(), as_class(&r.data)), (None, 6.0));
    assert_eq!(
        fake.refuse.load(Ordering::SeqCst),
        0,
        "both refusals were retried"
    );
    assert_eq!(stats.counts(), (2, 0));
    // ...at most --retries times: then the samples fail with the server's status...
    fake.refuse.store(10, Ordering::SeqCst);
    sut.issue_query(vec![QuerySample { id: 450, index: 6 }], sink.clone());
    let r = &wait_for(&rx, 1)[0];
    let error = r.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("queue is full") && error.contains("refused after 3 retries"),
        "{error}"
    );
    assert_eq!(
        fake.refuse.load(Ordering::SeqCst),
        10 - 4,
        "one try and 3 retries"
    );
    assert_eq!(stats.counts(), (5, 1));
    fake.refuse.store(0, Ordering::SeqCst);
    let lines = stats.finished();
    assert_eq!(lines[0].key, "client_retries");
    assert!(lines[0].warning);
    let value: serde_json::Value = serde_json::from_str(&lines[0].json).unwrap();
    assert_eq!(value["resource_exhausted_retries"], 5);
    assert_eq!(value["requests_refused_after_retries"], 1);
    assert_eq!(value["max_retries_per_request"], 3);
    let section = stats.summary().unwrap();
    assert!(
        section.contains("\nretries: 5 (RESOURCE_EXHAUSTED)\n"),
        "{section}"
    );
    // A new test counts from 0.
    stats.started();
    assert_eq!(stats.counts(), (0, 0));
    assert!(!stats.finished()[0].warning);
    // ...and stop once the request's deadline would pass, however many are allowed.
    let impatient = GrpcSutConfig {
        request_timeout: Duration::from_millis(300),
        max_batch: 8,
        retries: 1000,
        ..config.clone()
    };
    let quick = GrpcSut::connect(&impatient, profile, qsl.store()).unwrap();
    let five: Vec<QuerySample> = (0..5)
        .map(|i| QuerySample {
            id: 500 + i,
            index: 0,
        })
        .collect();
    let started = Instant::now();
    quick.issue_query(five, sink.clone());
    for r in wait_for(&rx, 5) {
        assert!(
            r.error.as_deref().unwrap_or("").contains("queue is full"),
            "{r:?}"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "it retried first"
    );

    // Start-up checks: unknown model, and a profile that does not fit the model.
    let unknown = GrpcSutConfig {
        model: "nope".into(),
        ..config.clone()
    };
    let err = GrpcSut::connect(&unknown, profile, qsl.store())
        .err()
        .unwrap();
    assert!(
        matches!(err, GrpcSutError::ModelUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("unknown model 'nope'"), "{err}");
    let other = lookup("efficientnet-lite0-onnxruntime").unwrap();
    let err = GrpcSut::connect(&config, other, qsl.store()).err().unwrap();
    assert!(matches!(err, GrpcSutError::Mismatch { .. }), "{err}");
}

#[test]
fn requests_stay_within_the_models_max_batch_size() {
    let fake = Arc::new(Fake::default());
    fake.max_batch_size.store(2, Ordering::SeqCst);
    let (_server, addr) = serve(Arc::clone(&fake), None);
    let dir = tempfile::tempdir().unwrap();
    let qsl = digits_qsl(dir.path());
    let config = GrpcSutConfig {
        endpoints: vec![format!("http://{addr}")],
        connections_per_endpoint: 1,
        network_threads: 1,
        model: "digits".into(),
        // Offline's default; the model takes at most 2 (its ModelConfig), the shape says -1.
        max_batch: 32,
        in_flight_per_connection: 8,
        in_flight_bytes_per_endpoint: 1 << 20,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        retries: 0,
        security: Default::default(),
    };
    let sut = GrpcSut::connect(&config, lookup("digits-cnn").unwrap(), qsl.store()).unwrap();
    let (tx, rx) = mpsc::channel();
    let sink = ResponseSink::new(Arc::new(Collect(Mutex::new(tx))));
    let samples: Vec<QuerySample> = (0..7)
        .map(|i| QuerySample {
            id: i,
            index: i as usize,
        })
        .collect();
    sut.issue_query(samples, sink);
    assert!(wait_for(&rx, 7).iter().all(|r| r.error.is_none()));
    let mut batches = fake.batches.lock().unwrap().clone();
    batches.sort_unstable();
    assert_eq!(batches, vec![1, 2, 2, 2]);
}
