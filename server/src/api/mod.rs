//! The gRPC front: the KServe v2 service, health and reflection, served on one listener. Thin:
//! validate, convert, submit, respond; model logic lives in the repository and scheduler.

pub mod health;
pub mod infer;
pub mod rest;
pub mod service;
pub mod shared_memory;

use std::future::Future;

use inference_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

pub use self::health::{Health, HealthService};
pub use self::service::{InferenceService, ServerState, ServiceOptions};

/// A client-given string (a model or region name) cut to a length fit for an error message, so a
/// hostile client cannot make errors echo megabytes back.
pub fn clip(text: &str) -> String {
    const MAX: usize = 128;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

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
    Server::builder()
        .add_service(inference)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        // Nagle's algorithm would hold small responses for the peer's delayed ACK (~40 ms).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
