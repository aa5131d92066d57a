//! The `model.scenario.key = value` config files (mlperf.conf, user.conf, audit.config) with every
//! quirk of the official `TestSettings::FromConfig`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::cnum::{is_c_number, strtod, strtoull_base0};
use crate::diagnostics::{Diagnostic, Site};
use crate::settings::{TestMode, TestSettings};

/// The rules file compiled into the official LoadGen (6.0.17 values).
pub const MLPERF_CONF: &str = include_str!("mlperf.conf");

const FILE: &str = "test_settings_internal.cc";

/// Which kind of file is being applied; it decides which keys are honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfType {
    /// The embedded mlperf.conf: the only source of the official seeds.
    MlperfConf,
    /// A user.conf: the first one also applies the embedded mlperf.conf.
    UserConf,
    /// audit.config (compliance tests), read with model `*`.
    AuditConfig,
}

/// Why a config file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("can't open file {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {errors} bad line(s); nothing was applied")]
    Invalid { path: String, errors: usize },
}

/// Applies config files in sequence, like successive `FromConfig` calls in one process, and
/// keeps the detail-log lines they produce.
///
/// Unlike the official library, a session can take a replacement for the embedded mlperf.conf
/// ([`ConfigSession::apply_rules_file`]); a user.conf applied afterwards then builds on that file
/// instead of re-applying the embedded one.
#[derive(Debug, Default)]
pub struct ConfigSession {
    user_conf_count: usize,
    /// A replacement rules file was applied: the first user.conf must not apply the embedded one.
    rules_replaced: bool,
    /// Lines for the detail log (`error_invalid_config`, ...), in the order they happened.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigSession {
    /// A session in which no file was applied yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `FromConfig(path, model, scenario, conf_type)` for a file on disk.
    pub fn apply_file(
        &mut self,
        settings: &mut TestSettings,
        path: &Path,
        model: &str,
        scenario: &str,
        conf_type: ConfType,
    ) -> Result<(), ConfigError> {
        self.before_user_conf(settings, model, scenario, conf_type);
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(source) => {
                self.diagnostics.push(Diagnostic::error(
                    "error_invalid_config",
                    format!("can't open file {}", path.display()),
                    Site::new(FILE, 562),
                ));
                return Err(ConfigError::Open {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        self.apply_parsed(
            settings,
            &text,
            &path.display().to_string(),
            model,
            scenario,
            conf_type,
        )
    }

    /// Applies `path` in place of the embedded mlperf.conf (as [`ConfType::MlperfConf`], so it
    /// may set the seeds and the other rules-only keys). A later [`ConfType::UserConf`] file
    /// then applies on top of it: the embedded mlperf.conf is not applied, and that user.conf
    /// still cannot set the rules-only keys. Not valid for submissions (the official library
    /// always starts from its embedded file).
    pub fn apply_rules_file(
        &mut self,
        settings: &mut TestSettings,
        path: &Path,
        model: &str,
        scenario: &str,
    ) -> Result<(), ConfigError> {
        self.apply_file(settings, path, model, scenario, ConfType::MlperfConf)?;
        self.rules_replaced = true;
        Ok(())
    }

    /// `FromConfig` for text already in memory (`conf_type` MlperfConf applies the text given).
    pub fn apply_text(
        &mut self,
        settings: &mut TestSettings,
        text: &str,
        model: &str,
        scenario: &str,
        conf_type: ConfType,
    ) -> Result<(), ConfigError> {
        self.before_user_conf(settings, model, scenario, conf_type);
        self.apply_parsed(settings, text, "<text>", model, scenario, conf_type)
    }

    fn before_user_conf(
        &mut self,
        settings: &mut TestSettings,
        model: &str,
        scenario: &str,
        conf_type: ConfType,
    ) {
        if conf_type != ConfType::UserConf {
            return;
        }
        if self.user_conf_count == 0 {
            if self.rules_replaced {
                self.user_conf_count += 1;
                return;
            }
            // The embedded file is always valid, so this cannot fail.
            let _ = self.apply_parsed(
                settings,
                MLPERF_CONF,
                "mlperf.conf",
                model,
                scenario,
                ConfType::MlperfConf,
            );
        } else {
            self.diagnostics.push(Diagnostic::error(
                "error_invalid_config",
                "Multiple conf files are used. This is not valid for official submission.",
                Site::new(FILE, 620),
            ));
        }
        self.user_conf_count += 1;
    }

    fn apply_parsed(
        &mut self,
        settings: &mut TestSettings,
        text: &str,
        path: &str,
        model: &str,
        scenario: &str,
        conf_type: ConfType,
    ) -> Result<(), ConfigError> {
        let (kv, bad_lines) = parse(text);
        if !bad_lines.is_empty() {
            let errors = bad_lines.len();
            self.diagnostics.extend(bad_lines);
            return Err(ConfigError::Invalid {
                path: path.to_string(),
                errors,
            });
        }
        let lookup = Lookup { kv: &kv, model };
        if let Some(mode) = lookup.uint(scenario, "mode", 1) {
            match mode {
                0 => settings.mode = TestMode::SubmissionRun,
                1 => settings.mode = TestMode::AccuracyOnly,
                2 => settings.mode = TestMode::PerformanceOnly,
                3 => settings.mode = TestMode::FindPeakPerformance,
                _ => self.diagnostics.push(Diagnostic::error(
                    "error_invalid_config",
                    "Invalid value passed to Mode key in config.",
                    Site::new(FILE, 709),
                )),
            }
        }
        apply_keys(settings, &lookup, scenario, conf_type);
        Ok(())
    }
}

/// One parsed file: the last value of each key.
type KeyValues = BTreeMap<String, String>;

/// Tokenises a file: returns the key/values and one diagnostic per bad line.
fn parse(text: &str) -> (KeyValues, Vec<Diagnostic>) {
    let mut kv = KeyValues::new();
    let mut errors = Vec::new();
    // `std::getline` splits on '\n' only; other whitespace separates tokens.
    for (line_idx, line) in text.split('\n').enumerate() {
        let line_nr = line_idx + 1;
        let mut key = "";
        let mut looking_for = 0;
        for token in line
            .split(|c: char| c.is_ascii_whitespace())
            .filter(|t| !t.is_empty())
        {
            if token == "#" && looking_for != 2 {
                break;
            }
            if looking_for == 2 {
                if is_c_number(token) {
                    kv.insert(key.to_string(), token.to_string());
                    continue;
                }
                errors.push(Diagnostic::error(
                    "error_invalid_config",
                    format!("value needs to be integer or double, line={line_nr}"),
                    Site::new(FILE, 661),
                ));
                break;
            }
            if looking_for == 1 && token != "=" {
                errors.push(Diagnostic::error(
                    "error_invalid_config",
                    format!("expected 'key=value', line={line_nr}"),
                    Site::new(FILE, 674),
                ));
                break;
            }
            if looking_for == 0 {
                key = token;
            }
            looking_for += 1;
        }
    }
    // A file ending in '\n' has no extra empty line for getline; the split above adds one, but an
    // empty line can never produce an error, so line numbers stay right.
    (kv, errors)
}

struct Lookup<'a> {
    kv: &'a KeyValues,
    model: &'a str,
}

impl Lookup<'_> {
    /// The raw value: `model.scenario.key`, `*.scenario.key`, `model.*.key`, `*.*.key`.
    fn find(&self, scenario: &str, key: &str) -> Option<&str> {
        let m = self.model;
        [
            format!("{m}.{scenario}.{key}"),
            format!("*.{scenario}.{key}"),
            format!("{m}.*.{key}"),
            format!("*.*.{key}"),
        ]
        .iter()
        .find_map(|k| self.kv.get(k).map(String::as_str))
    }

    /// Integer lookup: `strtoull(value, 0) * (uint64)multiplier`, wrapping like C.
    fn uint(&self, scenario: &str, key: &str, multiplier: u64) -> Option<u64> {
        self.find(scenario, key)
            .map(|v| strtoull_base0(v).0.wrapping_mul(multiplier))
    }

    /// Floating lookup: `strtod(value) * multiplier`.
    fn double(&self, scenario: &str, key: &str, multiplier: f64) -> Option<f64> {
        self.find(scenario, key).map(|v| strtod(v).0 * multiplier)
    }

    fn set_u64(&self, field: &mut u64, scenario: &str, key: &str, multiplier: u64) {
        if let Some(v) = self.uint(scenario, key, multiplier) {
            *field = v;
        }
    }

    fn set_f64(&self, field: &mut f64, scenario: &str, key: &str, multiplier: f64) {
        if let Some(v) = self.double(scenario, key, multiplier) {
            *field = v;
        }
    }

    fn set_flag(&self, field: &mut bool, scenario: &str, key: &str, true_when_one_only: bool) {
        if let Some(v) = self.uint(scenario, key, 1) {
            *field = if true_when_one_only { v == 1 } else { v != 0 };
        }
    }
}

/// The key table of `FromConfig`, in its order.
fn apply_keys(s: &mut TestSettings, l: &Lookup<'_>, scenario: &str, conf_type: ConfType) {
    const MS: u64 = 1_000_000;
    if conf_type == ConfType::MlperfConf {
        l.set_u64(&mut s.qsl_rng_seed, scenario, "qsl_rng_seed", 1);
        l.set_u64(
            &mut s.sample_index_rng_seed,
            scenario,
            "sample_index_rng_seed",
            1,
        );
        l.set_u64(&mut s.schedule_rng_seed, scenario, "schedule_rng_seed", 1);
        l.set_f64(
            &mut s.accuracy_log_probability,
            scenario,
            "accuracy_log_probability",
            0.01,
        );
        l.set_flag(&mut s.test05, scenario, "test05", true);
        l.set_u64(
            &mut s.test05_qsl_rng_seed,
            scenario,
            "test05_qsl_rng_seed",
            1,
        );
        l.set_u64(
            &mut s.test05_sample_index_rng_seed,
            scenario,
            "test05_sample_index_rng_seed",
            1,
        );
        l.set_u64(
            &mut s.test05_schedule_rng_seed,
            scenario,
            "test05_schedule_rng_seed",
            1,
        );
    }
    l.set_flag(
        &mut s.use_token_latencies,
        scenario,
        "use_token_latencies",
        true,
    );
    if s.use_token_latencies {
        l.set_u64(&mut s.server_ttft_latency, "Server", "ttft_latency", MS);
        l.set_u64(&mut s.server_tpot_latency, "Server", "tpot_latency", MS);
    }
    l.set_flag(
        &mut s.infer_token_latencies,
        scenario,
        "infer_token_latencies",
        true,
    );
    if s.infer_token_latencies {
        l.set_u64(
            &mut s.token_latency_scaling_factor,
            scenario,
            "token_latency_scaling_factor",
            1,
        );
    }
    l.set_f64(
        &mut s.single_stream_target_latency_percentile,
        "SingleStream",
        "target_latency_percentile",
        0.01,
    );
    l.set_f64(
        &mut s.multi_stream_target_latency_percentile,
        "MultiStream",
        "target_latency_percentile",
        0.01,
    );
    l.set_u64(
        &mut s.multi_stream_samples_per_query,
        "MultiStream",
        "samples_per_query",
        1,
    );
    l.set_f64(
        &mut s.server_target_latency_percentile,
        "Server",
        "target_latency_percentile",
        0.01,
    );
    l.set_u64(
        &mut s.server_target_latency_ns,
        "Server",
        "target_latency",
        MS,
    );
    l.set_flag(
        &mut s.performance_issue_unique,
        scenario,
        "performance_issue_unique",
        false,
    );
    l.set_flag(
        &mut s.performance_issue_same,
        scenario,
        "performance_issue_same",
        false,
    );
    l.set_u64(
        &mut s.performance_issue_same_index,
        scenario,
        "performance_issue_same_index",
        1,
    );
    l.set_flag(
        &mut s.sample_concatenate_permutation,
        scenario,
        "sample_concatenate_permutation",
        true,
    );
    l.set_flag(
        &mut s.server_coalesce_queries,
        "Server",
        "coalesce_queries",
        false,
    );
    if let Some(v) = l.uint("Server", "max_async_queries", 1) {
        // Stored through an `int` in the original.
        s.server_max_async_queries = i64::from(v as i32) as u64;
    }
    l.set_u64(&mut s.min_duration_ms, scenario, "min_duration", 1);
    l.set_u64(&mut s.max_duration_ms, scenario, "max_duration", 1);
    l.set_u64(&mut s.min_query_count, scenario, "min_query_count", 1);
    l.set_u64(&mut s.max_query_count, scenario, "max_query_count", 1);
    l.set_u64(
        &mut s.performance_sample_count_override,
        scenario,
        "performance_sample_count_override",
        1,
    );
    l.set_u64(
        &mut s.accuracy_sample_count_override,
        scenario,
        "accuracy_sample_count_override",
        1,
    );
    l.set_f64(
        &mut s.single_stream_expected_latency_ns,
        "SingleStream",
        "target_latency",
        1e6,
    );
    l.set_f64(
        &mut s.multi_stream_expected_latency_ns,
        "MultiStream",
        "target_latency",
        1e6,
    );
    l.set_f64(&mut s.server_target_qps, "Server", "target_qps", 1.0);
    l.set_f64(&mut s.offline_expected_qps, "Offline", "target_qps", 1.0);
    l.set_flag(&mut s.print_timestamps, scenario, "print_timestamps", false);
    l.set_u64(
        &mut s.accuracy_log_rng_seed,
        scenario,
        "accuracy_log_rng_seed",
        1,
    );
    l.set_u64(
        &mut s.accuracy_log_sampling_target,
        scenario,
        "accuracy_log_sampling_target",
        1,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::TestScenario;

    fn with_user_conf(
        text: &str,
        scenario: &str,
    ) -> (TestSettings, ConfigSession, Result<(), ConfigError>) {
        let mut s = TestSettings {
            scenario: scenario.parse().unwrap_or(TestScenario::SingleStream),
            ..TestSettings::default()
        };
        let mut session = ConfigSession::new();
        let r = session.apply_text(&mut s, text, "resnet50", scenario, ConfType::UserConf);
        (s, session, r)
    }

    #[test]
    fn embedded_mlperf_conf_applies_official_values() {
        let (s, session, r) = with_user_conf("", "Server");
        assert!(r.is_ok());
        assert!(session.diagnostics.is_empty());
        assert_eq!(s.qsl_rng_seed, 2_085_463_073_848_966_840);
        assert_eq!(s.sample_index_rng_seed, 2_747_215_439_041_700_203);
        assert_eq!(s.schedule_rng_seed, 16_159_082_839_903_944_936);
        assert_eq!(s.performance_sample_count_override, 1024);
        assert_eq!(s.server_target_latency_ns, 15_000_000);
        assert_eq!(s.min_duration_ms, 600_000);
        assert_eq!(s.server_target_latency_percentile, 0.99);
        let (s, _, _) = with_user_conf("", "Offline");
        assert_eq!(s.min_query_count, 24576);
        let (s, _, _) = with_user_conf("", "MultiStream");
        assert_eq!(s.min_query_count, 662);
        assert_eq!(s.multi_stream_expected_latency_ns, 80e6);
        let (s, _, _) = with_user_conf("", "SingleStream");
        assert_eq!(s.single_stream_expected_latency_ns, 10e6);
        assert!((s.single_stream_target_latency_percentile - 0.9).abs() < 1e-12);
    }

    #[test]
    fn user_conf_overrides_at_any_wildcard_level() {
        let (s, _, r) = with_user_conf("*.Server.target_latency = 50\n", "Server");
        assert!(r.is_ok());
        assert_eq!(s.server_target_latency_ns, 50_000_000);
    }

    #[test]
    fn equals_must_be_its_own_token() {
        let (s, session, r) =
            with_user_conf("resnet50.SingleStream.min_duration=5\n", "SingleStream");
        assert!(r.is_ok());
        assert!(session.diagnostics.is_empty());
        assert_eq!(s.min_duration_ms, 600_000);
    }

    #[test]
    fn trailing_comment_token_invalidates_whole_file() {
        let text = "resnet50.SingleStream.min_query_count = 7\nresnet50.SingleStream.min_duration = 321 # note\n";
        let (s, session, r) = with_user_conf(text, "SingleStream");
        assert!(matches!(r, Err(ConfigError::Invalid { errors: 1, .. })));
        assert_eq!(s.min_query_count, 100);
        assert_eq!(s.qsl_rng_seed, 2_085_463_073_848_966_840);
        assert_eq!(session.diagnostics.len(), 1);
        assert_eq!(
            session.diagnostics[0].message,
            "value needs to be integer or double, line=2"
        );
        let (_, session, r) = with_user_conf("a.b.c 5\n", "SingleStream");
        assert!(r.is_err());
        assert_eq!(
            session.diagnostics[0].message,
            "expected 'key=value', line=1"
        );
    }

    #[test]
    fn numbers_follow_c_parsing() {
        let text = "*.*.min_query_count = 0x20\n*.*.max_query_count = 1e3\n# comment = x\n*.SingleStream.target_latency = 1.5\n";
        let (s, _, r) = with_user_conf(text, "SingleStream");
        assert!(r.is_ok());
        assert_eq!(s.min_query_count, 32);
        assert_eq!(s.max_query_count, 1);
        assert_eq!(s.single_stream_expected_latency_ns, 1.5e6);
        let (s, _, _) = with_user_conf("*.Server.target_latency = 2.7\n", "Server");
        assert_eq!(s.server_target_latency_ns, 2_000_000);
    }

    #[test]
    fn seeds_only_come_from_mlperf_conf() {
        let (s, _, r) = with_user_conf(
            "*.*.qsl_rng_seed = 5\n*.*.accuracy_log_probability = 50\n",
            "Server",
        );
        assert!(r.is_ok());
        assert_eq!(s.qsl_rng_seed, 2_085_463_073_848_966_840);
        assert_eq!(s.accuracy_log_probability, 0.0);
    }

    #[test]
    fn second_user_conf_is_flagged() {
        let mut s = TestSettings::default();
        let mut session = ConfigSession::new();
        session
            .apply_text(&mut s, "", "resnet50", "Server", ConfType::UserConf)
            .unwrap_or_else(|e| panic!("{e}"));
        session
            .apply_text(
                &mut s,
                "*.*.mode = 1\n",
                "resnet50",
                "Server",
                ConfType::UserConf,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.mode, TestMode::AccuracyOnly);
        assert_eq!(session.diagnostics.len(), 1);
        assert!(session.diagnostics[0]
            .message
            .starts_with("Multiple conf files"));
    }

    /// Writes `text` to a file in a fresh temporary folder (kept alive by the returned guard).
    fn conf_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = dir.path().join("rules.conf");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        (dir, path)
    }

    #[test]
    fn replaced_rules_file_is_the_base_of_user_conf() {
        let (_dir, rules) =
            conf_file("*.*.qsl_rng_seed = 7\n*.Server.target_latency = 33\n*.*.min_duration = 5\n");
        let mut s = TestSettings::default();
        let mut session = ConfigSession::new();
        session
            .apply_rules_file(&mut s, &rules, "resnet50", "Server")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.qsl_rng_seed, 7, "a rules file may set the seeds");
        session
            .apply_text(
                &mut s,
                "*.*.min_duration = 9\n*.*.sample_index_rng_seed = 3\n*.*.test05 = 1\n",
                "resnet50",
                "Server",
                ConfType::UserConf,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.min_duration_ms, 9,
            "user.conf still overrides the rules file"
        );
        assert_eq!(
            s.server_target_latency_ns, 33_000_000,
            "the embedded mlperf.conf (15 ms for resnet50) was not re-applied"
        );
        assert_eq!(s.qsl_rng_seed, 7);
        assert_eq!(s.sample_index_rng_seed, 0, "user.conf cannot set seeds");
        assert!(!s.test05);
        assert_eq!(s.performance_sample_count_override, 0);
        assert!(
            session.diagnostics.is_empty(),
            "one user.conf is not 'multiple'"
        );
    }

    #[test]
    fn replaced_rules_file_errors() {
        let mut s = TestSettings::default();
        let mut session = ConfigSession::new();
        let r = session.apply_rules_file(
            &mut s,
            Path::new("/nonexistent/rules.conf"),
            "resnet50",
            "Server",
        );
        assert!(matches!(r, Err(ConfigError::Open { .. })), "{r:?}");
        let (_dir, rules) = conf_file("*.*.qsl_rng_seed = 7 x\n");
        let r = session.apply_rules_file(&mut s, &rules, "resnet50", "Server");
        assert!(
            matches!(r, Err(ConfigError::Invalid { errors: 1, .. })),
            "{r:?}"
        );
        assert_eq!(s.qsl_rng_seed, 0);
        // A failed replacement leaves the embedded file in charge of the next user.conf.
        session
            .apply_text(&mut s, "", "resnet50", "Server", ConfType::UserConf)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.qsl_rng_seed, 2_085_463_073_848_966_840);
    }

    #[test]
    fn audit_config_keys() {
        let mut s = TestSettings::default();
        let mut session = ConfigSession::new();
        let text = "*.*.mode = 2\n*.*.accuracy_log_rng_seed = 720381539243781796\n*.*.accuracy_log_sampling_target = 4096\n";
        session
            .apply_text(&mut s, text, "*", "Server", ConfType::AuditConfig)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.accuracy_log_rng_seed, 720_381_539_243_781_796);
        assert_eq!(s.accuracy_log_sampling_target, 4096);
        assert_eq!(s.mode, TestMode::PerformanceOnly);
    }
}
