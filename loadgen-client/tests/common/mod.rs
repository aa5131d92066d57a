//! Shared by the gRPC tests: a fake KServe v2 server (plaintext or TLS), the digits data set,
//! and a completion collector.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inference_proto::inference as pb;
use inference_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use inference_proto::inference::infer_parameter::ParameterChoice;
use inference_proto::inference::model_infer_response::InferOutputTensor;
use inference_proto::inference::model_metadata_response::TensorMetadata;
use inference_proto::inference::*;
use loadgen::sut::{CompletionHandler, Qsl, SampleResponse};
use loadgen_client::dataset::imagenet::ImagenetSource;
use loadgen_client::dataset::DatasetQsl;
use loadgen_client::profile::lookup;
use tonic::metadata::MetadataMap;
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status};

/// Serves model "digits": input FP32 [-1,1,8,8], output logits FP32 [-1,10], one-hot at the
/// class `round(first pixel * 255) % 10`; fails every request of exactly 3 samples, and
/// refuses as overloaded the next `refuse` requests and every request of exactly 5 samples.
/// Records the `authorization` metadata of every call and, with `token` set, refuses calls
/// without `Bearer <token>` as UNAUTHENTICATED.
#[derive(Default)]
pub struct Fake {
    pub batches: Mutex<Vec<usize>>,
    pub refuse: AtomicUsize,
    /// `(call, authorization)` of every call, in order.
    pub authorizations: Mutex<Vec<(&'static str, Option<String>)>>,
    pub token: Mutex<Option<String>>,
    /// ModelConfig's max_batch_size; 0 = ModelConfig is unimplemented (a non-Triton server).
    pub max_batch_size: AtomicUsize,
}

impl Fake {
    fn check(&self, call: &'static str, metadata: &MetadataMap) -> Result<(), Status> {
        let got = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.authorizations
            .lock()
            .unwrap()
            .push((call, got.clone()));
        match &*self.token.lock().unwrap() {
            Some(token) if got.as_deref() != Some(format!("Bearer {token}").as_str()) => {
                Err(Status::unauthenticated("missing or wrong bearer token"))
            }
            _ => Ok(()),
        }
    }

    /// The calls seen so far, by name.
    pub fn calls(&self) -> Vec<&'static str> {
        self.authorizations
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| *c)
            .collect()
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl GrpcInferenceService for Fake {
    async fn server_live(&self, r: Request<ServerLiveRequest>) -> R<ServerLiveResponse> {
        self.check("server_live", r.metadata())?;
        Ok(Response::new(ServerLiveResponse { live: true }))
    }
    async fn server_ready(&self, r: Request<ServerReadyRequest>) -> R<ServerReadyResponse> {
        self.check("server_ready", r.metadata())?;
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }
    async fn model_ready(&self, r: Request<ModelReadyRequest>) -> R<ModelReadyResponse> {
        self.check("model_ready", r.metadata())?;
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
        r: Request<ServerMetadataRequest>,
    ) -> R<ServerMetadataResponse> {
        self.check("server_metadata", r.metadata())?;
        Err(Status::unimplemented("fake"))
    }
    async fn model_metadata(&self, r: Request<ModelMetadataRequest>) -> R<ModelMetadataResponse> {
        self.check("model_metadata", r.metadata())?;
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
        self.check("model_infer", r.metadata())?;
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
        r: Request<tonic::Streaming<ModelInferRequest>>,
    ) -> R<Self::ModelStreamInferStream> {
        self.check("model_stream_infer", r.metadata())?;
        Err(Status::unimplemented("fake"))
    }
    async fn model_config(&self, r: Request<ModelConfigRequest>) -> R<ModelConfigResponse> {
        self.check("model_config", r.metadata())?;
        match self.max_batch_size.load(Ordering::SeqCst) {
            0 => Err(Status::unimplemented("fake")),
            max => Ok(Response::new(ModelConfigResponse {
                config: Some(ModelConfig {
                    name: "digits".into(),
                    max_batch_size: i32::try_from(max).unwrap_or(i32::MAX),
                    ..Default::default()
                }),
            })),
        }
    }
    async fn model_statistics(
        &self,
        r: Request<ModelStatisticsRequest>,
    ) -> R<ModelStatisticsResponse> {
        self.check("model_statistics", r.metadata())?;
        Err(Status::unimplemented("fake"))
    }
    async fn repository_index(
        &self,
        r: Request<RepositoryIndexRequest>,
    ) -> R<RepositoryIndexResponse> {
        self.check("repository_index", r.metadata())?;
        Err(Status::unimplemented("fake"))
    }
    async fn repository_model_load(
        &self,
        r: Request<RepositoryModelLoadRequest>,
    ) -> R<RepositoryModelLoadResponse> {
        self.check("repository_model_load", r.metadata())?;
        Err(Status::unimplemented("fake"))
    }
    async fn repository_model_unload(
        &self,
        r: Request<RepositoryModelUnloadRequest>,
    ) -> R<RepositoryModelUnloadResponse> {
        self.check("repository_model_unload", r.metadata())?;
        Err(Status::unimplemented("fake"))
    }
    async fn system_shared_memory_status(
        &self,
        r: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> R<pb::SystemSharedMemoryStatusResponse> {
        self.check("system_shared_memory_status", r.metadata())?;
        Err(Status::unimplemented(
            "the fake server has no system_shared_memory_status",
        ))
    }
    async fn system_shared_memory_register(
        &self,
        r: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> R<pb::SystemSharedMemoryRegisterResponse> {
        self.check("system_shared_memory_register", r.metadata())?;
        Err(Status::unimplemented(
            "the fake server has no system_shared_memory_register",
        ))
    }
    async fn system_shared_memory_unregister(
        &self,
        r: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> R<pb::SystemSharedMemoryUnregisterResponse> {
        self.check("system_shared_memory_unregister", r.metadata())?;
        Err(Status::unimplemented(
            "the fake server has no system_shared_memory_unregister",
        ))
    }
    async fn cuda_shared_memory_status(
        &self,
        r: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> R<pb::CudaSharedMemoryStatusResponse> {
        self.check("cuda_shared_memory_status", r.metadata())?;
        Err(Status::unimplemented(
            "the fake server has no cuda_shared_memory_status",
        ))
    }
    async fn cuda_shared_memory_register(
        &self,
        r: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> R<pb::CudaSharedMemoryRegisterResponse> {
        self.check("cuda_shared_memory_register", r.metadata())?;
        Err(Status::unimplemented(
            "the fake server has no cuda_shared_memory_register",
        ))
    }
    async fn cuda_shared_memory_unregister(
        &self,
        r: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> R<pb::CudaSharedMemoryUnregisterResponse> {
        self.check("cuda_shared_memory_unregister", r.metadata())?;
        Err(Status::unimplemented(
            "the fake server has no cuda_shared_memory_unregister",
        ))
    }
    async fn trace_setting(
        &self,
        r: Request<pb::TraceSettingRequest>,
    ) -> R<pb::TraceSettingResponse> {
        self.check("trace_setting", r.metadata())?;
        Err(Status::unimplemented(
            "the fake server has no trace_setting",
        ))
    }
    async fn log_settings(&self, r: Request<pb::LogSettingsRequest>) -> R<pb::LogSettingsResponse> {
        self.check("log_settings", r.metadata())?;
        Err(Status::unimplemented("the fake server has no log_settings"))
    }
}

/// Serves `fake` on a free loopback port, over TLS when `tls` is given; the runtime keeps it
/// running until dropped.
pub fn serve(
    fake: Arc<Fake>,
    tls: Option<ServerTlsConfig>,
) -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).unwrap();
    }
    let service = GrpcInferenceServiceServer::from_arc(fake);
    runtime.spawn(
        builder
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (runtime, addr)
}

/// Ten 8x8 gray images in `dir`; image k has pixel value k and label k.
pub fn digits_qsl(dir: &Path) -> DatasetQsl {
    let mut list = String::new();
    for k in 0..10u8 {
        let name = format!("d{k}.png");
        image::GrayImage::from_pixel(8, 8, image::Luma([k]))
            .save(dir.join(&name))
            .unwrap();
        list.push_str(&format!("{name} {k}\n"));
    }
    std::fs::write(dir.join("val_map.txt"), list).unwrap();
    let profile = lookup("digits-cnn").unwrap();
    let source = ImagenetSource::open(dir, None, None, profile).unwrap();
    let qsl = DatasetQsl::new(Box::new(source), 1024, None).unwrap();
    qsl.load_samples_to_ram(&(0..10).collect::<Vec<_>>())
        .unwrap();
    qsl
}

/// Hands completions to a channel.
pub struct Collect(pub Mutex<mpsc::Sender<SampleResponse>>);

impl CompletionHandler for Collect {
    fn complete(&self, _at: Instant, responses: Vec<SampleResponse>) {
        let tx = self.0.lock().unwrap();
        for r in responses {
            tx.send(r).unwrap();
        }
    }
}

/// The next `n` completions, sorted by id.
pub fn wait_for(rx: &mpsc::Receiver<SampleResponse>, n: usize) -> Vec<SampleResponse> {
    let mut got: Vec<SampleResponse> = (0..n)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a completion")
        })
        .collect();
    got.sort_by_key(|r| r.id);
    got
}

/// The float32 class in a payload.
pub fn as_class(data: &[u8]) -> f32 {
    f32::from_le_bytes(data.try_into().expect("one float32"))
}
