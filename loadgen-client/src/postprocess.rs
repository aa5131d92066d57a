//! Model output tensors → the per-sample payload MLPerf's accuracy scripts read: a class index
//! as one float32, or 7-float detection groups `[qsl_idx, ymin, xmin, ymax, xmax, score, class]`.

use inference_proto::DataType;

use crate::profile::PostProcess;

/// One output tensor of a response: its datatype and raw little-endian bytes.
#[derive(Debug, Clone, Copy)]
pub struct OutputTensor<'a> {
    pub datatype: DataType,
    pub raw: &'a [u8],
}

/// Why a response could not be turned into payloads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostProcessError {
    #[error("output datatype {0} cannot be read as numbers")]
    UnsupportedType(DataType),
    #[error("output of {bytes} bytes is not a whole number of {datatype} elements")]
    Ragged { bytes: usize, datatype: DataType },
    #[error("output of {elements} elements does not split into {batch} samples")]
    BatchMismatch { elements: usize, batch: usize },
    #[error("the profile reads {expected} outputs, the response has {found}")]
    OutputCount { expected: usize, found: usize },
    #[error("the output tensor is empty")]
    Empty,
}

/// Reads a raw tensor as numbers.
pub fn to_f64s(tensor: OutputTensor<'_>) -> Result<Vec<f64>, PostProcessError> {
    let size = tensor
        .datatype
        .element_size()
        .ok_or(PostProcessError::UnsupportedType(tensor.datatype))?;
    if !tensor.raw.len().is_multiple_of(size) {
        return Err(PostProcessError::Ragged {
            bytes: tensor.raw.len(),
            datatype: tensor.datatype,
        });
    }
    let chunks = tensor.raw.chunks_exact(size);
    fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        out
    }
    Ok(match tensor.datatype {
        DataType::Fp32 => chunks
            .map(|b| f64::from(f32::from_le_bytes(arr(b))))
            .collect(),
        DataType::Fp64 => chunks.map(|b| f64::from_le_bytes(arr(b))).collect(),
        DataType::Fp16 => chunks
            .map(|b| f64::from(half::f16::from_le_bytes(arr(b)).to_f32()))
            .collect(),
        DataType::Bf16 => chunks
            .map(|b| f64::from(half::bf16::from_le_bytes(arr(b)).to_f32()))
            .collect(),
        DataType::Int64 => chunks.map(|b| i64::from_le_bytes(arr(b)) as f64).collect(),
        DataType::Uint64 => chunks.map(|b| u64::from_le_bytes(arr(b)) as f64).collect(),
        DataType::Int32 => chunks
            .map(|b| f64::from(i32::from_le_bytes(arr(b))))
            .collect(),
        DataType::Uint32 => chunks
            .map(|b| f64::from(u32::from_le_bytes(arr(b))))
            .collect(),
        DataType::Int16 => chunks
            .map(|b| f64::from(i16::from_le_bytes(arr(b))))
            .collect(),
        DataType::Uint16 => chunks
            .map(|b| f64::from(u16::from_le_bytes(arr(b))))
            .collect(),
        DataType::Int8 => chunks.map(|b| f64::from(b[0] as i8)).collect(),
        DataType::Uint8 | DataType::Bool => chunks.map(|b| f64::from(b[0])).collect(),
        DataType::Bytes => return Err(PostProcessError::UnsupportedType(DataType::Bytes)),
    })
}

/// Splits `values` into `batch` equal per-sample parts.
fn per_sample(values: &[f64], batch: usize) -> Result<Vec<&[f64]>, PostProcessError> {
    if values.is_empty() {
        return Err(PostProcessError::Empty);
    }
    if batch == 0 || !values.len().is_multiple_of(batch) {
        return Err(PostProcessError::BatchMismatch {
            elements: values.len(),
            batch,
        });
    }
    Ok(values.chunks_exact(values.len() / batch).collect())
}

fn class_payload(class: f64) -> Vec<u8> {
    (class as f32).to_le_bytes().to_vec()
}

/// Turns the outputs of one request of `qsl_indices.len()` samples into one payload per
/// sample, in request order.
pub fn payloads(
    post: PostProcess,
    outputs: &[OutputTensor<'_>],
    qsl_indices: &[usize],
) -> Result<Vec<Vec<u8>>, PostProcessError> {
    let batch = qsl_indices.len();
    let expected = match post {
        PostProcess::ArgMax { .. } | PostProcess::ClassIndex { .. } => 1,
        PostProcess::Detections => 4,
    };
    if outputs.len() != expected {
        return Err(PostProcessError::OutputCount {
            expected,
            found: outputs.len(),
        });
    }
    let values = outputs
        .iter()
        .map(|t| to_f64s(*t))
        .collect::<Result<Vec<_>, _>>()?;
    match post {
        PostProcess::ArgMax { offset } => per_sample(&values[0], batch)?
            .into_iter()
            .map(|scores| {
                let best = argmax(scores).ok_or(PostProcessError::Empty)?;
                Ok(class_payload(best as f64 + offset as f64))
            })
            .collect(),
        PostProcess::ClassIndex { offset } => per_sample(&values[0], batch)?
            .into_iter()
            .map(|v| Ok(class_payload(v[0] + offset as f64)))
            .collect(),
        PostProcess::Detections => detections(&values, qsl_indices),
    }
}

/// Index of the first largest value.
fn argmax(values: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in values.iter().enumerate() {
        if best.is_none_or(|(_, b)| *v > b) {
            best = Some((i, *v));
        }
    }
    best.map(|(i, _)| i)
}

fn detections(
    values: &[Vec<f64>],
    qsl_indices: &[usize],
) -> Result<Vec<Vec<u8>>, PostProcessError> {
    let batch = qsl_indices.len();
    let counts = per_sample(&values[0], batch)?;
    let boxes = per_sample(&values[1], batch)?;
    let scores = per_sample(&values[2], batch)?;
    let classes = per_sample(&values[3], batch)?;
    let mut out = Vec::with_capacity(batch);
    for (s, &qsl_idx) in qsl_indices.iter().enumerate() {
        let slots = scores[s]
            .len()
            .min(classes[s].len())
            .min(boxes[s].len() / 4);
        let count = (counts[s][0].max(0.0) as usize).min(slots);
        let mut payload = Vec::with_capacity(count * 7 * 4);
        for d in 0..count {
            let b = &boxes[s][d * 4..d * 4 + 4];
            let group = [
                qsl_idx as f64,
                b[0],
                b[1],
                b[2],
                b[3],
                scores[s][d],
                classes[s][d],
            ];
            for v in group {
                payload.extend_from_slice(&(v as f32).to_le_bytes());
            }
        }
        out.push(payload);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn floats(payload: &[u8]) -> Vec<f32> {
        payload
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn argmax_per_sample_with_background_offset() {
        let logits = f32_bytes(&[0.1, 0.9, 0.0, /* sample 2 */ 5.0, 1.0, 5.0]);
        let out = [OutputTensor {
            datatype: DataType::Fp32,
            raw: &logits,
        }];
        let got = payloads(PostProcess::ArgMax { offset: -1 }, &out, &[7, 8]).unwrap();
        assert_eq!(floats(&got[0]), vec![0.0]);
        assert_eq!(floats(&got[1]), vec![-1.0], "ties pick the first");
        // float32 867.0 is the accuracy log's `00C05844`.
        assert_eq!(class_payload(867.0), vec![0x00, 0xC0, 0x58, 0x44]);
    }

    #[test]
    fn class_index_outputs_of_other_types() {
        let raw: Vec<u8> = [65i64, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = [OutputTensor {
            datatype: DataType::Int64,
            raw: &raw,
        }];
        let got = payloads(PostProcess::ClassIndex { offset: -1 }, &out, &[0, 1]).unwrap();
        assert_eq!((floats(&got[0]), floats(&got[1])), (vec![64.0], vec![2.0]));
        let fp16: Vec<u8> = [1.0f32, 3.0, 2.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let out = [OutputTensor {
            datatype: DataType::Fp16,
            raw: &fp16,
        }];
        let got = payloads(PostProcess::ArgMax { offset: 0 }, &out, &[0]).unwrap();
        assert_eq!(floats(&got[0]), vec![1.0]);
    }

    #[test]
    fn detections_become_seven_float_groups() {
        let num = f32_bytes(&[1.0, 0.0]);
        let boxes = f32_bytes(&[
            0.1, 0.2, 0.3, 0.4, 9.0, 9.0, 9.0, 9.0, /* s2 */ 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0,
        ]);
        let scores = f32_bytes(&[0.9, 0.8, 0.0, 0.0]);
        let classes = f32_bytes(&[18.0, 3.0, 0.0, 0.0]);
        let t = |raw| OutputTensor {
            datatype: DataType::Fp32,
            raw,
        };
        let out = [t(&num), t(&boxes), t(&scores), t(&classes)];
        let got = payloads(PostProcess::Detections, &out, &[5, 6]).unwrap();
        assert_eq!(floats(&got[0]), vec![5.0, 0.1, 0.2, 0.3, 0.4, 0.9, 18.0]);
        assert!(got[1].is_empty(), "no detections, empty payload");
    }

    #[test]
    fn malformed_outputs_are_errors_not_panics() {
        let raw = f32_bytes(&[1.0, 2.0, 3.0]);
        let out = [OutputTensor {
            datatype: DataType::Fp32,
            raw: &raw,
        }];
        assert_eq!(
            payloads(PostProcess::ArgMax { offset: 0 }, &out, &[0, 1]),
            Err(PostProcessError::BatchMismatch {
                elements: 3,
                batch: 2
            })
        );
        let odd = [OutputTensor {
            datatype: DataType::Fp32,
            raw: &raw[..5],
        }];
        assert!(matches!(
            payloads(PostProcess::ArgMax { offset: 0 }, &odd, &[0]),
            Err(PostProcessError::Ragged { .. })
        ));
        assert!(matches!(
            payloads(PostProcess::Detections, &out, &[0]),
            Err(PostProcessError::OutputCount { .. })
        ));
        let empty = [OutputTensor {
            datatype: DataType::Fp32,
            raw: &[],
        }];
        assert!(payloads(PostProcess::ArgMax { offset: 0 }, &empty, &[0]).is_err());
    }
}
