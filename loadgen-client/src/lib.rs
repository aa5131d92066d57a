//! `loadgen-client`: the [`loadgen`] LoadGen core driving KServe v2 servers over gRPC, with the
//! datasets, model profiles and accuracy scoring of the MLPerf vision benchmarks.

pub mod accuracy;
pub mod dataset;
pub mod grpc_sut;
pub mod postprocess;
pub mod profile;
pub mod progress;
pub mod security;
pub mod telemetry;
mod whole_body;
