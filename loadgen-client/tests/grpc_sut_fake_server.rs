//! The gRPC SUT against an in-process fake KServe server: start-up checks, request splitting,
//! payloads, server timings and failure completion.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inference_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use inference_proto::inference::infer_parameter::ParameterChoice;
use inference_proto::inference::model_infer_response::InferOutputTensor;
use inference_proto::inference::model_metadata_response::TensorMetadata;
use inference_proto::inference::*;
use loadgen::sut::{
    CompletionHandler, Qsl, QuerySample, ResponseSink, SampleResponse, ServerTiming, Sut,
};
use loadgen_client::dataset::imagenet::ImagenetSource;
use loadgen_client::dataset::DatasetQsl;
use loadgen_client::grpc_sut::{GrpcSut, GrpcSutConfig, GrpcSutError};
use loadgen_client::profile::lookup;
use tonic::{Request, Response, Status};

/// Serves model "digits": input FP32 [-1,1,8,8], output logits FP32 [-1,10], one-hot at the
/// class `round(first pixel * 255) % 10`; fails every request of exactly 3 samples, and
/// refuses as overloaded the next `refuse` requests and every request of exactly 5 samples.
#[derive(Default)]
struct Fake {
    batches: Mutex<Vec<usize>>,
    refuse: AtomicUsize,
}

type R<T> = Result<Response<T>, Status>;
use inference_proto::inference as pb;

#[tonic::async_trait]
impl GrpcInferenceService for Fake {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> R<ServerLiveResponse> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }
    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> R<ServerReadyResponse> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }
    async fn model_ready(&self, r: Request<ModelReadyRequest>) -> R<ModelReadyResponse> {
        if r.get_ref().name != "digits" {
            return Err(Status::not_found(format!(
                "unknown model '{}'",
                r.get_ref().name
            )));
        }
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }
    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> R<ServerMetadataResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn model_metadata(&self, _: Request<ModelMetadataRequest>) -> R<ModelMetadataResponse> {
        let t = |name: &str, shape: Vec<i64>| TensorMetadata {
            name: name.into(),
            datatype: "FP32".into(),
            shape,
        };
        Ok(Response::new(ModelMetadataResponse {
            name: "digits".into(),
            versions: vec!["1".into()],
            platform: "fake".into(),
            inputs: vec![t("input", vec![-1, 1, 8, 8])],
            outputs: vec![t("logits", vec![-1, 10])],
        }))
    }
    async fn model_infer(&self, r: Request<ModelInferRequest>) -> R<ModelInferResponse> {
        let req = r.into_inner();
        let n = usize::try_from(req.inputs[0].shape[0]).unwrap_or(0);
        self.batches.lock().unwrap().push(n);
        if n == 3 {
            return Err(Status::internal("boom"));
        }
        let refused = self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
            .is_ok();
        if refused || n == 5 {
            return Err(Status::resource_exhausted("queue is full"));
        }
        let raw = &req.raw_input_contents[0];
        let mut logits = Vec::new();
        for sample in raw.chunks_exact(64 * 4) {
            let first = f32::from_le_bytes([sample[0], sample[1], sample[2], sample[3]]);
            let class = (first * 255.0).round() as usize % 10;
            for c in 0..10 {
                logits.extend_from_slice(&f32::from(u8::from(c == class)).to_le_bytes());
            }
        }
        let int = |v: i64| InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(v)),
        };
        Ok(Response::new(ModelInferResponse {
            model_name: "digits".into(),
            parameters: [
                ("queue_time_us".to_string(), int(5)),
                ("compute_time_us".to_string(), int(7)),
                ("batch_size".to_string(), int(n as i64)),
            ]
            .into(),
            outputs: vec![InferOutputTensor {
                name: "logits".into(),
                datatype: "FP32".into(),
                shape: vec![n as i64, 10],
                ..Default::default()
            }],
            raw_output_contents: vec![logits],
            ..Default::default()
        }))
    }
    type ModelStreamInferStream = futures::stream::Empty<Result<ModelStreamInferResponse, Status>>;
    async fn model_stream_infer(
        &self,
        _: Request<tonic::Streaming<ModelInferRequest>>,
    ) -> R<Self::ModelStreamInferStream> {
        Err(Status::unimplemented("fake"))
    }
    async fn model_config(&self, _: Request<ModelConfigRequest>) -> R<ModelConfigResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn model_statistics(
        &self,
        _: Request<ModelStatisticsRequest>,
    ) -> R<ModelStatisticsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn repository_index(
        &self,
        _: Request<RepositoryIndexRequest>,
    ) -> R<RepositoryIndexResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> R<RepositoryModelLoadResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> R<RepositoryModelUnloadResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> R<pb::SystemSharedMemoryStatusResponse> {
        Err(Status::unimplemented(
            "the fake server has no system_shared_memory_status",
        ))
    }
    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> R<pb::SystemSharedMemoryRegisterResponse> {
        Err(Status::unimplemented(
            "the fake server has no system_shared_memory_register",
        ))
    }
    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> R<pb::SystemSharedMemoryUnregisterResponse> {
        Err(Status::unimplemented(
            "the fake server has no system_shared_memory_unregister",
        ))
    }
    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> R<pb::CudaSharedMemoryStatusResponse> {
        Err(Status::unimplemented(
            "the fake server has no cuda_shared_memory_status",
        ))
    }
    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> R<pb::CudaSharedMemoryRegisterResponse> {
        Err(Status::unimplemented(
            "the fake server has no cuda_shared_memory_register",
        ))
    }
    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> R<pb::CudaSharedMemoryUnregisterResponse> {
        Err(Status::unimplemented(
            "the fake server has no cuda_shared_memory_unregister",
        ))
    }
    async fn trace_setting(
        &self,
        _: Request<pb::TraceSettingRequest>,
    ) -> R<pb::TraceSettingResponse> {
        Err(Status::unimplemented(
            "the fake server has no trace_setting",
        ))
    }
    async fn log_settings(&self, _: Request<pb::LogSettingsRequest>) -> R<pb::LogSettingsResponse> {
        Err(Status::unimplemented("the fake server has no log_settings"))
    }
}

struct Collect(Mutex<mpsc::Sender<SampleResponse>>);

impl CompletionHandler for Collect {
    fn complete(&self, _at: Instant, responses: Vec<SampleResponse>) {
        let tx = self.0.lock().unwrap();
        for r in responses {
            tx.send(r).unwrap();
        }
    }
}

fn wait_for(rx: &mpsc::Receiver<SampleResponse>, n: usize) -> Vec<SampleResponse> {
    let mut got: Vec<SampleResponse> = (0..n)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a completion")
        })
        .collect();
    got.sort_by_key(|r| r.id);
    got
}

fn as_class(data: &[u8]) -> f32 {
    f32::from_le_bytes(data.try_into().expect("one float32"))
}

#[test]
fn sut_checks_splits_decodes_and_fails_cleanly() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let fake = Arc::new(Fake::default());
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let service = GrpcInferenceServiceServer::from_arc(Arc::clone(&fake));
    server_rt.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // Ten 8x8 gray images; image k has pixel value k and label k.
    let dir = tempfile::tempdir().unwrap();
    let mut list = String::new();
    for k in 0..10u8 {
        let name = format!("d{k}.png");
        image::GrayImage::from_pixel(8, 8, image::Luma([k]))
            .save(dir.path().join(&name))
            .unwrap();
        list.push_str(&format!("{name} {k}\n"));
    }
    std::fs::write(dir.path().join("val_map.txt"), list).unwrap();
    let profile = lookup("digits-cnn").unwrap();
    let source = ImagenetSource::open(dir.path(), None, None, profile).unwrap();
    let qsl = DatasetQsl::new(Box::new(source), 1024, None).unwrap();
    qsl.load_samples_to_ram(&(0..10).collect::<Vec<_>>())
        .unwrap();

    let endpoint = format!("http://{addr}");
    let config = GrpcSutConfig {
        endpoints: vec![endpoint.clone(), addr.to_string()],
        connections_per_endpoint: 2,
        model: "digits".into(),
        max_batch: 4,
        in_flight_per_connection: 8,
        in_flight_bytes_per_endpoint: 1 << 20,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
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

    // Overload answers are retried until the server accepts...
    fake.refuse.store(2, Ordering::SeqCst);
    sut.issue_query(vec![QuerySample { id: 400, index: 6 }], sink.clone());
    let r = &wait_for(&rx, 1)[0];
    assert_eq!((r.error.as_deref(), as_class(&r.data)), (None, 6.0));
    assert_eq!(
        fake.refuse.load(Ordering::SeqCst),
        0,
        "both refusals were retried"
    );
    // ...and fail the samples once the request's deadline has passed.
    let impatient = GrpcSutConfig {
        request_timeout: Duration::from_millis(300),
        max_batch: 8,
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
