//! `loadgen-client`: the [`loadgen`] LoadGen core driving KServe v2 servers over gRPC, with the
//! datasets, model profiles and accuracy scoring of the MLPerf vision benchmarks.

pub mod accuracy;
pub mod calibrate;
pub mod client_log;
pub mod dataset;
pub mod grpc_sut;
pub mod official;
pub mod package;
pub mod postprocess;
pub mod profile;
pub mod progress;
pub mod report;
pub mod run_info;
pub mod security;
pub mod store;
pub mod system;
pub mod telemetry;
mod whole_body;
