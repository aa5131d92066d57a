//! The gRPC front: the KServe v2 service, health and reflection, served on one listener. Thin:
//! validate, convert, submit, respond; model logic lives in the repository and scheduler.

pub mod health;
pub mod infer;
pub mod service;

use std::future::Future;

use inference_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

pub use self::health::{Health, HealthService};
pub use self::service::{InferenceService, ServerState, ServiceOptions};

/// Why the gRPC server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC server task ended abnormally: {0}")]
    Task(String),
}

/// Serves the inference, health and reflection services on `listener` until `shutdown`
/// completes; then stops taking connections and returns once in-flight calls are answered.
pub async fn serve(
    listener: TcpListener,
    service: InferenceService,
    health: HealthService,
    max_message_size: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(inference_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let inference = GrpcInferenceServiceServer::new(service)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size);
    Server::builder()
        .add_service(inference)
        .add_service(health)
        .add_service(reflection)
        // Nagle's algorithm would hold small responses for the peer's delayed ACK (~40 ms).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
