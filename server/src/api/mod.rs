//! The gRPC front: the KServe v2 service, health and reflection, served on one listener. Thin:
//! validate, convert, submit, respond; model logic lives in the repository and scheduler.

pub mod access;
pub mod health;
pub mod infer;
pub mod rest;
pub mod service;
pub mod shared_memory;
pub mod transport;

use std::future::Future;

use inference_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;

use self::transport::{Limits, Policy};

pub use self::health::{Health, HealthService};
pub use self::service::{InferenceService, ServerState, ServiceOptions};

pub use crate::echo::clip;

/// Why the gRPC server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server task ended abnormally: {0}")]
    Task(String),
}

/// Serves the inference, health and reflection services on `listener` under `policy` until
/// `shutdown` completes; then stops taking connections and returns once in-flight calls are
/// answered.
pub async fn serve(
    listener: TcpListener,
    service: InferenceService,
    health: HealthService,
    max_message_size: usize,
    policy: Policy,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    // Both reflection versions: grpcurl and older tools speak v1alpha only.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(inference_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let mut inference = GrpcInferenceServiceServer::new(service)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size);
    // Compressed requests are accepted; responses are compressed when the client asks for it.
    for encoding in [
        CompressionEncoding::Gzip,
        CompressionEncoding::Deflate,
        CompressionEncoding::Zstd,
    ] {
        inference = inference
            .accept_compressed(encoding)
            .send_compressed(encoding);
    }
    let routes = Routes::new(inference)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare();
    let policy = Policy {
        limits: Limits {
            max_grpc_message: Some(max_message_size),
            ..policy.limits
        },
        ..policy
    };
    transport::serve(listener, "grpc", routes, policy, shutdown).await;
    Ok(())
}
