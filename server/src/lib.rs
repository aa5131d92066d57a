//! `inference-server`: a KServe v2 gRPC inference daemon for edge accelerators.

pub mod api;
pub mod backend;
pub mod config;
pub mod echo;
pub mod metrics;
pub mod metrics_endpoint;
pub mod model_config;
pub mod repository;
pub mod scheduler;
pub mod statistics;
pub mod telemetry;
pub mod tensor;
