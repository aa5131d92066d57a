//! Tensor element types as KServe v2 names them on the wire (`"FP32"`, `"UINT8"`, ...).

use std::fmt;
use std::str::FromStr;

/// A tensor element type of the KServe v2 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    /// Variable-length byte strings; raw form is a 4-byte little-endian length then the bytes.
    Bytes,
}

/// A datatype string that is not one of the KServe v2 names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown datatype '{0}' (expected one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES)")]
pub struct UnknownDataType(pub String);

const ALL: [(DataType, &str); 14] = [
    (DataType::Bool, "BOOL"),
    (DataType::Uint8, "UINT8"),
    (DataType::Uint16, "UINT16"),
    (DataType::Uint32, "UINT32"),
    (DataType::Uint64, "UINT64"),
    (DataType::Int8, "INT8"),
    (DataType::Int16, "INT16"),
    (DataType::Int32, "INT32"),
    (DataType::Int64, "INT64"),
    (DataType::Fp16, "FP16"),
    (DataType::Bf16, "BF16"),
    (DataType::Fp32, "FP32"),
    (DataType::Fp64, "FP64"),
    (DataType::Bytes, "BYTES"),
];

impl DataType {
    /// The wire name, e.g. `"FP32"`.
    pub fn as_str(self) -> &'static str {
        ALL.iter()
            .find(|(dt, _)| *dt == self)
            .map(|(_, name)| *name)
            .unwrap_or("BYTES")
    }

    /// Size of one element in bytes; `None` for variable-length `BYTES`.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// The matching `TYPE_*` value of Triton's model configuration.
    pub fn to_config_type(self) -> crate::inference::DataType {
        use crate::inference::DataType as T;
        match self {
            DataType::Bool => T::TypeBool,
            DataType::Uint8 => T::TypeUint8,
            DataType::Uint16 => T::TypeUint16,
            DataType::Uint32 => T::TypeUint32,
            DataType::Uint64 => T::TypeUint64,
            DataType::Int8 => T::TypeInt8,
            DataType::Int16 => T::TypeInt16,
            DataType::Int32 => T::TypeInt32,
            DataType::Int64 => T::TypeInt64,
            DataType::Fp16 => T::TypeFp16,
            DataType::Bf16 => T::TypeBf16,
            DataType::Fp32 => T::TypeFp32,
            DataType::Fp64 => T::TypeFp64,
            DataType::Bytes => T::TypeString,
        }
    }
}

impl FromStr for DataType {
    type Err = UnknownDataType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(s))
            .map(|(dt, _)| *dt)
            .ok_or_else(|| UnknownDataType(s.to_string()))
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sizes_match_the_protocol() {
        for (dt, name) in ALL {
            assert_eq!(name.parse::<DataType>().unwrap(), dt);
            assert_eq!(dt.as_str(), name);
        }
        assert_eq!(DataType::Fp16.element_size(), Some(2));
        assert_eq!(DataType::Int64.element_size(), Some(8));
        assert_eq!(DataType::Bytes.element_size(), None);
        assert!("FLOAT".parse::<DataType>().is_err());
    }
}
