//! mlperf.conf / user.conf text: parsing and applying it (the first byte picks the scenario and
//! whether it is read as the rules file or as a user.conf), normalising the settings and sizing
//! the schedule they imply. Any text may be refused; none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loadgen::config::{ConfType, ConfigSession};
use loadgen::schedule::check_test_memory;
use loadgen::settings::{EffectiveSettings, TestSettings};

const SCENARIOS: [&str; 4] = ["SingleStream", "MultiStream", "Server", "Offline"];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, text)) = data.split_first() else {
        return;
    };
    let scenario = SCENARIOS[usize::from(choice & 3)];
    let conf_type = if choice & 4 == 0 {
        ConfType::MlperfConf
    } else {
        ConfType::UserConf
    };
    let text = String::from_utf8_lossy(text);
    let mut settings = TestSettings {
        scenario: scenario.parse().expect("a scenario name"),
        ..TestSettings::default()
    };
    let mut session = ConfigSession::new();
    if session
        .apply_text(&mut settings, &text, "resnet50", scenario, conf_type)
        .is_err()
    {
        return;
    }
    let (effective, _diagnostics) = EffectiveSettings::new(&settings, 1024, 50_000);
    // 1 GiB: what the client would have to spare.
    let _ = check_test_memory(&effective, 50_000, Some(1 << 30));
});
