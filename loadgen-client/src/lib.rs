//! `loadgen-client`: the MLPerf LoadGen (exact to 6.0.17) driving KServe v2 servers over gRPC.

pub mod accuracy;
pub mod breakdown;
pub mod cnum;
pub mod config;
pub mod dataset;
pub mod diagnostics;
pub mod early_stopping;
pub mod grpc_sut;
pub mod logs;
pub mod null_sut;
pub mod postprocess;
pub mod profile;
pub mod progress;
pub mod results;
pub mod rng;
pub mod runner;
pub mod schedule;
pub mod settings;
pub mod sut;
