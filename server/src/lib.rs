//! `inference-server`: a KServe v2 gRPC inference daemon for edge accelerators.

pub mod backend;
pub mod tensor;
