//! A MERA deployment's signature, read from its files without loading any vendor code:
//! `deploy.json` is a TVM graph-executor graph (nodes, `arg_nodes`, `heads`, and per node entry
//! a `shape` and `dltype`), and `deploy.params` a TVM parameter dictionary whose names are the
//! argument nodes that are weights rather than inputs.

use std::collections::HashSet;
use std::path::Path;

use inference_proto::DataType;
use serde::Deserialize;

/// One input or output of the graph, with full dims.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphTensor {
    pub name: String,
    /// TVM's dtype string (`float32`).
    pub dtype: String,
    pub datatype: DataType,
    pub dims: Vec<i64>,
}

/// The inputs (in graph order) and outputs (in `heads` order) of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSignature {
    pub inputs: Vec<GraphTensor>,
    pub outputs: Vec<GraphTensor>,
}

#[derive(Deserialize)]
struct Graph {
    nodes: Vec<Node>,
    arg_nodes: Vec<usize>,
    heads: Vec<Vec<usize>>,
    node_row_ptr: Vec<usize>,
    attrs: GraphAttrs,
}

#[derive(Deserialize)]
struct Node {
    name: String,
}

#[derive(Deserialize)]
struct GraphAttrs {
    /// `["list_shape", [[...], ...]]`
    shape: (String, Vec<Vec<i64>>),
    /// `["list_str", ["float32", ...]]`
    dltype: (String, Vec<String>),
}

/// The protocol datatype of a TVM dtype string.
pub fn datatype_of(dtype: &str) -> Option<DataType> {
    Some(match dtype {
        "float32" => DataType::Fp32,
        "float16" => DataType::Fp16,
        "float64" => DataType::Fp64,
        "bfloat16" => DataType::Bf16,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint8" => DataType::Uint8,
        "uint16" => DataType::Uint16,
        "uint32" => DataType::Uint32,
        "uint64" => DataType::Uint64,
        _ => return None,
    })
}

/// The graph (`deploy.json`) and params (`deploy.params`) of the deployment in `dir`.
pub fn read_files(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read =
        |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("cannot read {name}: {e}"));
    Ok((read("deploy.json")?, read("deploy.params")?))
}

/// Reads the signature of the deployment in `dir` (see [`parse`]).
pub fn read(dir: &Path, output_names: &[String]) -> Result<GraphSignature, String> {
    let (json, params) = read_files(dir)?;
    parse(&json, &params, output_names)
}

/// The signature of a deployment's graph and params; `output_names` replace the outputs' names
/// (the graph keeps none but its nodes'), in order.
pub fn parse(
    json: &[u8],
    params: &[u8],
    output_names: &[String],
) -> Result<GraphSignature, String> {
    let graph: Graph = serde_json::from_slice(json)
        .map_err(|e| format!("deploy.json is not a TVM graph-executor graph: {e}"))?;
    let weights: HashSet<String> = param_names(params)?.into_iter().collect();
    let entry = |node: usize, index: usize, name: String| -> Result<GraphTensor, String> {
        let row = graph
            .node_row_ptr
            .get(node)
            .map(|r| r + index)
            .ok_or_else(|| format!("deploy.json: node {node} has no entry"))?;
        let dims = graph.attrs.shape.1.get(row).cloned();
        let dtype = graph.attrs.dltype.1.get(row).cloned();
        let (Some(dims), Some(dtype)) = (dims, dtype) else {
            return Err(format!("deploy.json: entry {row} has no shape or dltype"));
        };
        let datatype = datatype_of(&dtype).ok_or_else(|| {
            format!("deploy.json: '{name}' has dtype {dtype}, which KServe has not")
        })?;
        Ok(GraphTensor {
            name,
            dtype,
            datatype,
            dims,
        })
    };
    let node_name = |node: usize| {
        graph
            .nodes
            .get(node)
            .map(|n| n.name.clone())
            .ok_or_else(|| format!("deploy.json: no node {node}"))
    };
    let mut inputs = Vec::new();
    for &node in &graph.arg_nodes {
        let name = node_name(node)?;
        if !weights.contains(&name) {
            inputs.push(entry(node, 0, name)?);
        }
    }
    if !output_names.is_empty() && output_names.len() != graph.heads.len() {
        return Err(format!(
            "dna.outputs names {} output(s), and the deployment has {}",
            output_names.len(),
            graph.heads.len()
        ));
    }
    let mut outputs = Vec::new();
    for (i, head) in graph.heads.iter().enumerate() {
        let (&node, &index) = (
            head.first().unwrap_or(&usize::MAX),
            head.get(1).unwrap_or(&0),
        );
        let name = output_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("output_{i}"));
        outputs.push(entry(node, index, name)?);
    }
    if inputs.is_empty() || outputs.is_empty() {
        return Err("deploy.json has no inputs or no outputs".into());
    }
    Ok(GraphSignature { inputs, outputs })
}

/// The names in a TVM parameter dictionary (`SaveParams`: magic, reserved, name count, names,
/// then the arrays).
fn param_names(bytes: &[u8]) -> Result<Vec<String>, String> {
    const MAGIC: u64 = 0xF7E5_8D4F_0504_9CB7;
    let corrupt = || "deploy.params is not a TVM parameter file".to_string();
    let mut reader = ParamsReader { bytes, at: 0 };
    if reader.word() != Some(MAGIC) {
        return Err(corrupt());
    }
    reader.word().ok_or_else(corrupt)?; // reserved
    let count = reader.word().ok_or_else(corrupt)?;
    let mut names = Vec::new();
    for _ in 0..count {
        let len = reader
            .word()
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(corrupt)?;
        let name = reader.take(len).ok_or_else(corrupt)?;
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(names)
}

/// Reads a parameter file's header from the front.
struct ParamsReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> ParamsReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn word(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(names: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(0xF7E5_8D4F_0504_9CB7u64.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend((names.len() as u64).to_le_bytes());
        for name in names {
            out.extend((name.len() as u64).to_le_bytes());
            out.extend(name.as_bytes());
        }
        out.extend((names.len() as u64).to_le_bytes());
        out
    }

    #[test]
    fn inputs_are_the_argument_nodes_that_are_not_weights() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("deploy.json"),
            r#"{"nodes": [{"op": "null", "name": "x", "inputs": []},
                         {"op": "null", "name": "w", "inputs": []},
                         {"op": "tvm_op", "name": "f", "inputs": [[0,0,0],[1,0,0]]}],
                "arg_nodes": [0, 1], "heads": [[2, 0, 0]],
                "attrs": {"dltype": ["list_str", ["uint8", "float32", "float32"]],
                          "shape": ["list_shape", [[1, 224, 224, 3], [4], [1, 1000]]]},
                "node_row_ptr": [0, 1, 2, 3]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("deploy.params"), params(&["w"])).unwrap();
        let signature = read(dir.path(), &[]).unwrap();
        assert_eq!(signature.inputs.len(), 1);
        assert_eq!(signature.inputs[0].name, "x");
        assert_eq!(signature.inputs[0].datatype, DataType::Uint8);
        assert_eq!(signature.inputs[0].dims, [1, 224, 224, 3]);
        assert_eq!(signature.outputs[0].name, "output_0");
        assert_eq!(signature.outputs[0].dims, [1, 1000]);
        let named = read(dir.path(), &["logits".into()]).unwrap();
        assert_eq!(named.outputs[0].name, "logits");
        let err = read(dir.path(), &["a".into(), "b".into()]).unwrap_err();
        assert!(err.contains("names 2 output(s)"), "{err}");

        std::fs::write(dir.path().join("deploy.params"), b"junk").unwrap();
        let err = read(dir.path(), &[]).unwrap_err();
        assert!(err.contains("not a TVM parameter file"), "{err}");
        std::fs::write(dir.path().join("deploy.json"), "{}").unwrap();
        let err = read(dir.path(), &[]).unwrap_err();
        assert!(err.contains("not a TVM graph-executor graph"), "{err}");
    }
}
