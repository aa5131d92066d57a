//! A ModelInferResponse as bytes off the wire: the server-timing parameters the client reads, and
//! each profile's post-processing of its outputs. Any response may be refused; none may panic.
#![no_main]

use inference_proto::inference::ModelInferResponse;
use libfuzzer_sys::fuzz_target;
use loadgen_client::grpc_sut::{response_payloads, server_timing};
use loadgen_client::profile::PostProcess;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = ModelInferResponse::decode(data) else {
        return;
    };
    let _ = server_timing(&response.parameters);
    let names: Vec<String> = response.outputs.iter().map(|o| o.name.clone()).collect();
    for post in [
        PostProcess::ArgMax { offset: -1 },
        PostProcess::ClassIndex { offset: 0 },
        PostProcess::Detections,
    ] {
        for batch in [1usize, 3] {
            let indices: Vec<usize> = (0..batch).collect();
            let _ = response_payloads(&response, &names, post, &indices);
        }
    }
});
