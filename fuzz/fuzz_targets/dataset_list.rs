//! An ImageNet list file (`<file> <label>` per line). Any text may be refused; none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loadgen_client::dataset::imagenet::parse_list;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(entries) = parse_list(text, 1000) {
            assert!(entries.len() <= 1000);
        }
    }
});
