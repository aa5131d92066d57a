//! A KServe v2 REST inference body (JSON, or JSON header + binary tensors when the first byte
//! says so): decoding, then validation. Any input may be refused; none may panic.
#![no_main]

use std::collections::BTreeMap;

use inference_proto::DataType;
use inference_server::api::infer::{validate, InferTarget};
use inference_server::api::rest::codec::decode_infer;
use inference_server::backend::{BatchSupport, ModelSignature, TensorSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: whether an Inference-Header-Content-Length is sent, and how long.
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let header_length = (first & 1 == 1).then(|| usize::from(first >> 1) * 4);
    let Ok((request, _plan)) = decode_infer("m", "", body, header_length) else {
        return;
    };
    let signature = ModelSignature {
        inputs: vec![TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            dims: vec![-1, 4],
        }],
        outputs: vec![],
        batch: BatchSupport::Dynamic { max: 8 },
        quantization: BTreeMap::new(),
    };
    let _ = validate(
        request,
        InferTarget {
            signature: &signature,
            max_batch_size: 8,
        },
    );
});
