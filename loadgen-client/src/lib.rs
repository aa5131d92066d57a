//! `loadgen-client`: the MLPerf LoadGen (exact to 6.0.17) driving KServe v2 servers over gRPC.

pub mod sut;
