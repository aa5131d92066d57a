//! Tensor plumbing for batches: checking a request against the model's signature, concatenating
//! requests along dimension 0, splitting outputs back per request, and cutting or padding a batch
//! into the fixed-size runs a device may demand.

use std::hash::{Hash, Hasher};

use inference_proto::DataType;

use crate::backend::{BatchSupport, ModelSignature};
use crate::tensor::Tensor;

/// Checks `inputs` (signature order) for a request of `samples` samples; returns the hash of the
/// per-sample dims, which decides which requests can share a batch.
pub fn validate(
    signature: &ModelSignature,
    inputs: &[Tensor],
    samples: usize,
    max_samples: usize,
) -> Result<u64, String> {
    if inputs.len() != signature.inputs.len() {
        return Err(format!(
            "expected {} inputs, got {}",
            signature.inputs.len(),
            inputs.len()
        ));
    }
    let batched = signature.batch != BatchSupport::Unbatched;
    if batched && (samples == 0 || samples > max_samples) {
        return Err(format!("batch size {samples} is outside 1..={max_samples}"));
    }
    let mut key = std::collections::hash_map::DefaultHasher::new();
    for (tensor, spec) in inputs.iter().zip(&signature.inputs) {
        if tensor.name != spec.name {
            return Err(format!(
                "input '{}' found where '{}' was expected",
                tensor.name, spec.name
            ));
        }
        if tensor.datatype != spec.datatype {
            return Err(format!(
                "input '{}' is {}, the model expects {}",
                spec.name, tensor.datatype, spec.datatype
            ));
        }
        let per_sample: &[i64] = if batched {
            match tensor.shape.split_first() {
                Some((first, rest)) if *first == samples as i64 => rest,
                _ => {
                    return Err(format!(
                        "input '{}' has shape {:?}; dimension 0 must be the batch size {samples}",
                        spec.name, tensor.shape
                    ))
                }
            }
        } else {
            &tensor.shape
        };
        let fits = per_sample.len() == spec.dims.len()
            && per_sample
                .iter()
                .zip(&spec.dims)
                .all(|(d, s)| *d >= 0 && (*s < 0 || d == s));
        if !fits {
            return Err(format!(
                "input '{}' has shape {:?}; the model expects {}{:?} (-1 = any)",
                spec.name,
                tensor.shape,
                if batched { "[batch] + " } else { "" },
                spec.dims
            ));
        }
        let elements = element_count(&tensor.shape)
            .ok_or_else(|| format!("input '{}': shape too large", spec.name))?;
        check_data(tensor, elements)?;
        per_sample.hash(&mut key);
    }
    Ok(key.finish())
}

/// Product of `shape`, or `None` on a negative dim or overflow.
fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| {
        usize::try_from(*d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Checks that `tensor.data` holds exactly `elements` elements.
fn check_data(tensor: &Tensor, elements: usize) -> Result<(), String> {
    match tensor.datatype.element_size() {
        Some(size) if elements.checked_mul(size) == Some(tensor.data.len()) => Ok(()),
        Some(size) => Err(format!(
            "input '{}' has {} bytes; shape {:?} of {} needs {}",
            tensor.name,
            tensor.data.len(),
            tensor.shape,
            tensor.datatype,
            elements.saturating_mul(size)
        )),
        None => element_offsets(&tensor.data, elements)
            .map(|_| ())
            .map_err(|why| format!("input '{}': {why}", tensor.name)),
    }
}

/// Byte offsets of each BYTES element (4-byte little-endian length, then the bytes), plus the end.
fn element_offsets(data: &[u8], elements: usize) -> Result<Vec<usize>, String> {
    let mut offsets = Vec::with_capacity(elements + 1);
    let mut at = 0usize;
    for _ in 0..elements {
        offsets.push(at);
        let header = data
            .get(at..at + 4)
            .ok_or("BYTES data ends inside an element length")?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        at = at
            .checked_add(4 + len)
            .filter(|end| *end <= data.len())
            .ok_or("BYTES element runs past the data")?;
    }
    if at != data.len() {
        return Err(format!(
            "BYTES data has {} bytes beyond its {elements} elements",
            data.len() - at
        ));
    }
    offsets.push(at);
    Ok(offsets)
}

/// Byte offset where each of the `samples` samples of `tensor` starts, plus the end.
fn sample_offsets(tensor: &Tensor, samples: usize) -> Result<Vec<usize>, String> {
    if tensor.shape.first().copied() != Some(samples as i64) {
        return Err(format!(
            "'{}' has shape {:?}, expected {samples} samples",
            tensor.name, tensor.shape
        ));
    }
    let per_sample = element_count(&tensor.shape[1..])
        .ok_or_else(|| format!("'{}': invalid shape", tensor.name))?;
    match tensor.datatype.element_size() {
        Some(size) => {
            let stride = per_sample * size;
            if stride * samples != tensor.data.len() {
                return Err(format!(
                    "'{}' has {} bytes for shape {:?}",
                    tensor.name,
                    tensor.data.len(),
                    tensor.shape
                ));
            }
            Ok((0..=samples).map(|i| i * stride).collect())
        }
        None => {
            let elements = element_offsets(&tensor.data, per_sample * samples)?;
            Ok((0..=samples).map(|i| elements[i * per_sample]).collect())
        }
    }
}

/// Concatenates the same input of several requests along dimension 0 (their per-sample dims are
/// equal: the policy batches only equal shape keys). `parts` is never empty in practice; an empty
/// list gives an empty tensor.
pub fn concat(parts: Vec<Tensor>) -> Tensor {
    let mut parts = parts.into_iter();
    let Some(mut out) = parts.next() else {
        return Tensor {
            name: String::new(),
            datatype: DataType::Uint8,
            shape: vec![0],
            data: vec![],
        };
    };
    for part in parts {
        if let (Some(total), Some(more)) = (out.shape.first_mut(), part.shape.first()) {
            *total += *more;
        }
        out.data.extend_from_slice(&part.data);
    }
    out
}

/// Splits a batched output into consecutive pieces of `counts` samples.
pub fn split(tensor: &Tensor, counts: &[usize]) -> Result<Vec<Tensor>, String> {
    let total: usize = counts.iter().sum();
    let offsets = sample_offsets(tensor, total)?;
    let mut start = 0;
    Ok(counts
        .iter()
        .map(|count| {
            let end = start + count;
            let mut shape = tensor.shape.clone();
            shape[0] = *count as i64;
            let piece = Tensor {
                name: tensor.name.clone(),
                datatype: tensor.datatype,
                shape,
                data: tensor.data[offsets[start]..offsets[end]].to_vec(),
            };
            start = end;
            piece
        })
        .collect())
}

/// Bytes of one all-zero sample: zero elements, or empty strings for BYTES.
fn zero_sample(tensor: &Tensor) -> Vec<u8> {
    let per_sample = element_count(tensor.shape.get(1..).unwrap_or(&[])).unwrap_or(0);
    vec![0u8; per_sample * tensor.datatype.element_size().unwrap_or(4)]
}

/// Cuts a batch of `samples` samples into runs of exactly `n`, padding the last with zero samples.
/// Returns the runs (inputs in order) and how many real samples each holds.
pub fn chunk_and_pad(
    inputs: Vec<Tensor>,
    samples: usize,
    n: usize,
) -> Result<Vec<(Vec<Tensor>, usize)>, String> {
    let n = n.max(1);
    let runs = samples.div_ceil(n);
    let offsets = inputs
        .iter()
        .map(|t| sample_offsets(t, samples))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..runs)
        .map(|run| {
            let first = run * n;
            let real = n.min(samples - first);
            let tensors = inputs
                .iter()
                .zip(&offsets)
                .map(|(t, off)| {
                    let mut data = t.data[off[first]..off[first + real]].to_vec();
                    let zero = zero_sample(t);
                    for _ in real..n {
                        data.extend_from_slice(&zero);
                    }
                    let mut shape = t.shape.clone();
                    shape[0] = n as i64;
                    Tensor {
                        name: t.name.clone(),
                        datatype: t.datatype,
                        shape,
                        data,
                    }
                })
                .collect();
            (tensors, real)
        })
        .collect())
}

/// Keeps the first `real` samples of a run's output (drops the padding).
pub fn truncate(tensor: Tensor, real: usize) -> Result<Tensor, String> {
    let samples = tensor
        .shape
        .first()
        .and_then(|d| usize::try_from(*d).ok())
        .unwrap_or(0);
    if samples == real {
        return Ok(tensor);
    }
    if samples < real {
        return Err(format!(
            "'{}' has {samples} samples, expected at least {real}",
            tensor.name
        ));
    }
    let offsets = sample_offsets(&tensor, samples)?;
    let mut shape = tensor.shape;
    shape[0] = real as i64;
    let mut data = tensor.data;
    data.truncate(offsets[real]);
    Ok(Tensor {
        name: tensor.name,
        datatype: tensor.datatype,
        shape,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TensorSpec;

    fn f32s(name: &str, shape: &[i64], values: &[f32]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    fn signature(batch: BatchSupport, dims: &[i64]) -> ModelSignature {
        let spec = TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            dims: dims.to_vec(),
        };
        ModelSignature {
            inputs: vec![spec.clone()],
            outputs: vec![spec],
            batch,
            quantization: Default::default(),
        }
    }

    #[test]
    fn validation_checks_names_types_shapes_and_bytes() {
        let sig = signature(BatchSupport::Dynamic { max: 8 }, &[2]);
        let ok = f32s("x", &[3, 2], &[0.0; 6]);
        assert!(validate(&sig, std::slice::from_ref(&ok), 3, 8).is_ok());
        let cases: Vec<(Vec<Tensor>, usize, &str)> = vec![
            (vec![], 3, "expected 1 inputs"),
            (vec![ok.clone()], 2, "dimension 0 must be the batch size 2"),
            (vec![ok.clone()], 9, "outside 1..=8"),
            (
                vec![f32s("y", &[3, 2], &[0.0; 6])],
                3,
                "'y' found where 'x'",
            ),
            (
                vec![f32s("x", &[3, 3], &[0.0; 9])],
                3,
                "expects [batch] + [2]",
            ),
            (
                vec![Tensor {
                    data: vec![0; 5],
                    ..ok.clone()
                }],
                3,
                "has 5 bytes",
            ),
            (
                vec![Tensor {
                    datatype: DataType::Int32,
                    ..ok.clone()
                }],
                3,
                "is INT32",
            ),
        ];
        for (inputs, samples, needle) in cases {
            let err = validate(&sig, &inputs, samples, 8).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn shape_keys_separate_different_dynamic_dims() {
        let sig = signature(BatchSupport::Dynamic { max: 8 }, &[-1]);
        let a = validate(&sig, &[f32s("x", &[1, 2], &[0.0; 2])], 1, 8).unwrap();
        let b = validate(&sig, &[f32s("x", &[2, 2], &[0.0; 4])], 2, 8).unwrap();
        let c = validate(&sig, &[f32s("x", &[1, 3], &[0.0; 3])], 1, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Unbatched: the full shape is checked, batch size is ignored.
        let sig = signature(BatchSupport::Unbatched, &[2, 2]);
        assert!(validate(&sig, &[f32s("x", &[2, 2], &[0.0; 4])], 0, 0).is_ok());
    }

    #[test]
    fn concat_then_split_round_trips() {
        let joined = concat(vec![
            f32s("x", &[1, 2], &[1.0, 2.0]),
            f32s("x", &[2, 2], &[3.0, 4.0, 5.0, 6.0]),
        ]);
        assert_eq!(joined.shape, [3, 2]);
        let parts = split(&joined, &[1, 2]).unwrap();
        assert_eq!(
            (parts[0].shape.clone(), values(&parts[0])),
            (vec![1, 2], vec![1.0, 2.0])
        );
        assert_eq!(
            (parts[1].shape.clone(), values(&parts[1])),
            (vec![2, 2], vec![3.0, 4.0, 5.0, 6.0])
        );
        assert!(
            split(&joined, &[1, 1]).is_err(),
            "counts must add up to dimension 0"
        );
    }

    #[test]
    fn fixed_runs_pad_and_truncate() {
        let batch = f32s("x", &[3, 1], &[1.0, 2.0, 3.0]);
        let runs = chunk_and_pad(vec![batch], 3, 2).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].1, values(&runs[0].0[0])), (2, vec![1.0, 2.0]));
        assert_eq!(
            (runs[1].1, runs[1].0[0].shape.clone(), values(&runs[1].0[0])),
            (1, vec![2, 1], vec![3.0, 0.0])
        );
        let kept = truncate(runs[1].0[0].clone(), 1).unwrap();
        assert_eq!((kept.shape.clone(), values(&kept)), (vec![1, 1], vec![3.0]));
    }

    #[test]
    fn bytes_tensors_split_by_element() {
        let mut data = Vec::new();
        for s in ["a", "bcd", ""] {
            data.extend_from_slice(&(s.len() as u32).to_le_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        let t = Tensor {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![3],
            data,
        };
        let parts = split(&t, &[2, 1]).unwrap();
        assert_eq!(parts[0].data.len(), 4 + 1 + 4 + 3);
        assert_eq!(parts[1].data, 0u32.to_le_bytes());
        let bad = Tensor {
            data: vec![9, 0, 0, 0, 1],
            ..t
        };
        assert!(split(&bad, &[3]).is_err());
    }
}
