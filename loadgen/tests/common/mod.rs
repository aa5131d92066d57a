//! Helpers shared by the LoadGen integration tests: locating the official reference outputs and
//! reading detail logs and accuracy logs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use loadgen::config::{ConfType, ConfigSession};
use loadgen::settings::{TestMode, TestScenario, TestSettings};

/// Reports a test that cannot run for lack of Python tools: a printed skip, or a failure when
/// `LOADGEN_REQUIRE_PYTHON` is set (CI sets it, so a missing tool can never pass silently).
pub fn python_unavailable(reason: &str) {
    if std::env::var_os("LOADGEN_REQUIRE_PYTHON").is_some() {
        panic!("{reason}, and LOADGEN_REQUIRE_PYTHON is set");
    }
    println!("SKIPPED: {reason}");
}

/// A reference folder of the official LoadGen 6.0.17, committed as test data
/// (`tests/data/official-loadgen-6.0.17`, made by `tests/tools/official-loadgen-probe.py`).
pub fn reference(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/official-loadgen-6.0.17")
        .join(name)
}

/// The script that runs the official LoadGen with the probe SUT.
pub fn probe_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/official-loadgen-probe.py")
}

/// One `:::MLLOG` line.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub value: serde_json::Value,
    pub is_error: bool,
}

/// Parses every `:::MLLOG` line (panics on invalid JSON, like the submission checker fails).
pub fn read_detail(path: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.strip_prefix(":::MLLOG "))
        .map(|json| {
            let v: serde_json::Value =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
            Entry {
                key: v["key"].as_str().unwrap_or_default().to_string(),
                value: v["value"].clone(),
                is_error: v["metadata"]["is_error"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

/// All values of `key`, in order.
pub fn values(entries: &[Entry], key: &str) -> Vec<serde_json::Value> {
    entries
        .iter()
        .filter(|e| e.key == key)
        .map(|e| e.value.clone())
        .collect()
}

/// The first value of `key`.
pub fn first(entries: &[Entry], key: &str) -> serde_json::Value {
    values(entries, key)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {key}"))
}

/// `(seq_id, qsl_idx)` of every accuracy-log entry.
pub fn accuracy_entries(path: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    v.as_array()
        .unwrap_or_else(|| panic!("not an array"))
        .iter()
        .map(|e| {
            (
                e["seq_id"].as_u64().unwrap_or(u64::MAX),
                e["qsl_idx"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// Settings as the probe builds them: scenario, `FromConfig(user.conf, model, scenario)`, mode.
pub fn probe_settings(
    user_conf: &Path,
    model: &str,
    scenario: TestScenario,
    mode: TestMode,
) -> TestSettings {
    let mut s = TestSettings {
        scenario,
        ..TestSettings::default()
    };
    ConfigSession::new()
        .apply_file(
            &mut s,
            user_conf,
            model,
            scenario.as_str(),
            ConfType::UserConf,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    s.mode = mode;
    s
}

/// Digits replaced by `#`, for comparing layouts of timing-dependent text.
pub fn mask_digits(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_number = false;
    for c in s.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// Every detail line has the reference's bytes once numbers are masked, and the same
/// `metadata.file` and `metadata.line_no`. The `loadgen_*` identity lines, whose values name
/// who wrote the log, are compared by key and position only.
pub fn assert_same_line_layout(ours: &Path, theirs: &Path) {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let (ours, theirs) = (read(ours), read(theirs));
    assert_eq!(ours.lines().count(), theirs.lines().count());
    let parse =
        |l: &str| -> serde_json::Value { serde_json::from_str(&l[9..]).unwrap_or_default() };
    for (a, b) in ours.lines().zip(theirs.lines()) {
        let (va, vb) = (parse(a), parse(b));
        if vb["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("loadgen_"))
        {
            assert_eq!(va["key"], vb["key"], "{a}");
        } else {
            assert_eq!(mask_digits(a), mask_digits(b));
        }
        let meta = |v: &serde_json::Value| {
            (
                v["metadata"]["file"].clone(),
                v["metadata"]["line_no"].clone(),
            )
        };
        assert_eq!(meta(&va), meta(&vb), "{a}");
    }
}
