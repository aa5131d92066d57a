//! `loadgen-client`: the MLPerf LoadGen (exact to 6.0.17) driving KServe v2 servers over gRPC.

pub mod sut;
pub mod profile;
pub mod rng;
pub mod dataset;
pub mod cnum;
pub mod config;
pub mod diagnostics;
pub mod logs;
pub mod settings;
pub mod postprocess;
pub mod grpc_sut;
pub mod schedule;
pub mod early_stopping;
pub mod results;
pub mod accuracy;
pub mod progress;
pub mod breakdown;
pub mod runner;
pub mod null_sut;
