//! A model's config.toml: parsing and checking. Any text may be refused; none may panic.
#![no_main]

use std::path::Path;

use inference_server::model_config::ModelConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ModelConfig::parse(Path::new("model/config.toml"), text);
    }
});
