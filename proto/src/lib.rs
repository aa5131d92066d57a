//! The KServe v2 gRPC protocol (`inference.GRPCInferenceService`) shared by the server and the
//! benchmark client: generated tonic/prost stubs plus the tensor datatype vocabulary.

mod datatype;

pub use datatype::{DataType, UnknownDataType};

/// Generated protobuf messages and the tonic client/server for `inference.GRPCInferenceService`.
#[allow(clippy::all, missing_docs)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// Encoded `FileDescriptorSet` of the protocol, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));
