//! A gRPC ModelInferRequest as bytes off the wire: decoding, then validation against a batching
//! model with an FP32 and a BYTES input. Any input may be refused; none may panic.
#![no_main]

use std::collections::BTreeMap;

use inference_proto::inference::ModelInferRequest;
use inference_proto::DataType;
use inference_server::api::infer::{validate, InferTarget};
use inference_server::backend::{BatchSupport, ModelSignature, TensorSpec};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn signature() -> ModelSignature {
    let spec = |name: &str, datatype, dims: &[i64]| TensorSpec {
        name: name.into(),
        datatype,
        dims: dims.to_vec(),
    };
    ModelSignature {
        inputs: vec![spec("x", DataType::Fp32, &[-1, 4]), spec("text", DataType::Bytes, &[2])],
        outputs: vec![spec("y", DataType::Fp32, &[-1, 4])],
        batch: BatchSupport::Dynamic { max: 8 },
        quantization: BTreeMap::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ModelInferRequest::decode(data) else {
        return;
    };
    let signature = signature();
    let _ = validate(
        request,
        InferTarget {
            signature: &signature,
            max_batch_size: 8,
        },
    );
});
