//! An owned tensor as it travels between the API, the batcher and a backend: raw little-endian
//! row-major bytes plus name, datatype and shape.

use inference_proto::DataType;

/// A named tensor holding raw row-major little-endian element bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    /// Full shape; for batched models dimension 0 is the batch (sample count).
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}
