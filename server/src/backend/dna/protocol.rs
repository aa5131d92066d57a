//! What the server and a DNA worker process say to each other over the worker's stdin and
//! stdout: one frame per message, a JSON header and the tensor bytes after it. Both sides read
//! the deployment's signature from its files, so tensors travel as bytes in graph order.
//!
//! A frame is `u32` header length (little endian), the header (JSON), `u32` blob count, then per
//! blob a `u64` length and its bytes. Tensor data travels as blobs, never inside the JSON.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Largest header accepted (a header names tensors and paths; anything bigger is corrupt).
const MAX_HEADER: u32 = 1 << 20;
/// Largest frame payload accepted: 4 GiB of tensors.
const MAX_BLOB_BYTES: u64 = 4 << 30;

/// The server's requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Loads a deployment: `deploy.so`, `deploy.json` and `deploy.params` in `dir`, with the
    /// MERA runtime library at `library`, and initialises the device `device_code` (Sakura-1 1,
    /// Xilinx U50 2, Intel IA420 3) when the deployment runs anything on the DNA IP.
    Load {
        dir: String,
        library: String,
        device_code: i64,
    },
    /// Runs once on the inputs (blobs in the graph's input order).
    Infer,
}

/// How a request failed, which decides the server's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The runtime library cannot be loaded or lacks the TVM C API.
    Library,
    /// The deployment cannot be loaded.
    Model,
    /// The device cannot be initialised or failed.
    Device,
    /// Anything else.
    Internal,
}

/// The worker's answers, one per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// The deployment is loaded.
    Loaded,
    /// The outputs (blobs in the graph's output order) and the runtime's metrics of the run
    /// (`get_runtime_metrics`: `key=value,...|` per DNA subgraph; empty without one).
    Outputs {
        runtime_metrics: String,
    },
    Failed {
        kind: FailureKind,
        message: String,
    },
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(
    out: &mut impl Write,
    header: &T,
    blobs: &[&[u8]],
) -> io::Result<()> {
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    out.write_all(&(json.len() as u32).to_le_bytes())?;
    out.write_all(&json)?;
    out.write_all(&(blobs.len() as u32).to_le_bytes())?;
    for blob in blobs {
        out.write_all(&(blob.len() as u64).to_le_bytes())?;
        out.write_all(blob)?;
    }
    out.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of the stream (before a frame starts).
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
) -> io::Result<Option<(T, Vec<Vec<u8>>)>> {
    let mut word = [0u8; 4];
    match input.read_exact(&mut word) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let header_len = u32::from_le_bytes(word);
    if header_len > MAX_HEADER {
        return Err(corrupt(format!("a {header_len}-byte header")));
    }
    let mut json = vec![0u8; header_len as usize];
    input.read_exact(&mut json)?;
    let header = serde_json::from_slice(&json).map_err(|e| corrupt(format!("header: {e}")))?;
    input.read_exact(&mut word)?;
    let count = u32::from_le_bytes(word);
    let mut blobs = Vec::new();
    let mut total = 0u64;
    for _ in 0..count {
        let mut len = [0u8; 8];
        input.read_exact(&mut len)?;
        let len = u64::from_le_bytes(len);
        total = total.saturating_add(len);
        if total > MAX_BLOB_BYTES {
            return Err(corrupt(format!("{total} bytes of tensors")));
        }
        let mut blob = vec![0u8; len as usize];
        input.read_exact(&mut blob)?;
        blobs.push(blob);
    }
    Ok(Some((header, blobs)))
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt frame: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_corrupt_ones_are_errors() {
        let request = Request::Load {
            dir: "/models/m/1".into(),
            library: "libmeratvm.so".into(),
            device_code: 1,
        };
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &request, &[&[1, 2, 3]]).unwrap();
        let (back, blobs): (Request, _) = read_frame(&mut buffer.as_slice()).unwrap().unwrap();
        assert_eq!(back, request);
        assert_eq!(blobs, [vec![1, 2, 3]]);
        assert!(read_frame::<Request>(&mut &[][..]).unwrap().is_none());

        let mut huge = (MAX_HEADER + 1).to_le_bytes().to_vec();
        huge.extend([0; 8]);
        let err = read_frame::<Request>(&mut huge.as_slice()).unwrap_err();
        assert!(err.to_string().contains("corrupt frame"), "{err}");
        let truncated = &buffer[..buffer.len() - 1];
        assert!(read_frame::<Request>(&mut &truncated[..]).is_err());
    }
}
