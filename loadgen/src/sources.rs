//! Settings from their sources, with the precedence the official harnesses use: the rules file
//! (the embedded 6.0.17 mlperf.conf, or a replacement), then user.conf through the official
//! `FromConfig` rules, then explicit overrides assigned straight to the [`TestSettings`] fields (a
//! harness's command line).
//!
//! A user.conf that cannot be opened is an error. One that exists but does not parse is handled as
//! the official LoadGen handles it: its `error_invalid_config` lines go to the detail log, nothing
//! from it is applied, and the test runs ([`ResolvedSettings::ignored_user_conf`] says so). A
//! replacement rules file that does not parse is an error, since running without any rules would
//! silently use zero seeds.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConfType, ConfigError, ConfigSession, MLPERF_CONF};
use crate::diagnostics::Diagnostic;
use crate::settings::{TestMode, TestScenario, TestSettings};

/// Values that win over both conf files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub mode: Option<TestMode>,
    /// Server `target_qps` and Offline `expected_qps`.
    pub target_qps: Option<f64>,
    /// Server `target_latency` and MultiStream `expected_latency`.
    pub target_latency: Option<Duration>,
    pub min_duration: Option<Duration>,
    /// MultiStream `samples_per_query`.
    pub samples_per_query: Option<u64>,
    /// `performance_sample_count_override`.
    pub performance_sample_count: Option<u64>,
}

/// Where a test's settings come from.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsSources {
    pub scenario: TestScenario,
    /// MLPerf benchmark name the conf lines are looked up with (`resnet50`, ...).
    pub model: String,
    /// A rules file replacing the embedded mlperf.conf (not valid for submissions).
    pub rules_file: Option<PathBuf>,
    pub user_conf: Option<PathBuf>,
    pub overrides: Overrides,
}

impl SettingsSources {
    /// Sources with only the embedded mlperf.conf.
    pub fn new(scenario: TestScenario, model: &str) -> Self {
        SettingsSources {
            scenario,
            model: model.to_string(),
            rules_file: None,
            user_conf: None,
            overrides: Overrides::default(),
        }
    }
}

/// Which conf file an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfFile {
    Rules,
    UserConf,
}

/// A conf file the test cannot run without.
#[derive(Debug, thiserror::Error)]
#[error("{source}{details}")]
pub struct SettingsError {
    pub file: ConfFile,
    pub source: ConfigError,
    /// The file's own error lines, `; `-separated in parentheses, or empty.
    pub details: String,
}

/// The settings of a test, with the detail-log lines their files produced.
#[derive(Debug)]
pub struct ResolvedSettings {
    pub settings: TestSettings,
    /// Lines that open the detail log (`error_invalid_config`, ...): pass them as
    /// [`crate::runner::RunOptions::pre_test_diagnostics`].
    pub diagnostics: Vec<Diagnostic>,
    /// A user.conf that did not parse and was not applied (the test still runs, as officially).
    pub ignored_user_conf: Option<SettingsError>,
}

impl SettingsSources {
    /// Applies every source in order of precedence.
    pub fn resolve(&self) -> Result<ResolvedSettings, SettingsError> {
        let mut settings = TestSettings {
            scenario: self.scenario,
            ..TestSettings::default()
        };
        let scenario = self.scenario.as_str();
        let model = self.model.as_str();
        let mut session = ConfigSession::new();
        if let Some(rules) = &self.rules_file {
            session
                .apply_rules_file(&mut settings, rules, model, scenario)
                .map_err(|e| settings_error(ConfFile::Rules, e, &session.diagnostics, 0))?;
        }
        let mut ignored_user_conf = None;
        match &self.user_conf {
            Some(user) => {
                let first_line = session.diagnostics.len();
                match session.apply_file(&mut settings, user, model, scenario, ConfType::UserConf) {
                    Ok(()) => {}
                    Err(e @ ConfigError::Invalid { .. }) => {
                        ignored_user_conf = Some(settings_error(
                            ConfFile::UserConf,
                            e,
                            &session.diagnostics,
                            first_line,
                        ))
                    }
                    Err(e @ ConfigError::Open { .. }) => {
                        return Err(settings_error(ConfFile::UserConf, e, &[], 0))
                    }
                }
            }
            None if self.rules_file.is_none() => {
                // The embedded file is always valid.
                let _ = session.apply_text(
                    &mut settings,
                    MLPERF_CONF,
                    model,
                    scenario,
                    ConfType::MlperfConf,
                );
            }
            None => {}
        }
        self.overrides.apply(&mut settings);
        Ok(ResolvedSettings {
            settings,
            diagnostics: session.diagnostics,
            ignored_user_conf,
        })
    }
}

impl Overrides {
    /// Assigns every value that is set.
    pub fn apply(&self, settings: &mut TestSettings) {
        if let Some(mode) = self.mode {
            settings.mode = mode;
        }
        if let Some(qps) = self.target_qps {
            settings.server_target_qps = qps;
            settings.offline_expected_qps = qps;
        }
        if let Some(latency) = self.target_latency {
            settings.server_target_latency_ns =
                u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
            settings.multi_stream_expected_latency_ns = latency.as_nanos() as f64;
        }
        if let Some(duration) = self.min_duration {
            settings.min_duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        }
        if let Some(n) = self.samples_per_query {
            settings.multi_stream_samples_per_query = n;
        }
        if let Some(n) = self.performance_sample_count {
            settings.performance_sample_count_override = n;
        }
    }
}

/// The error of `file`, with the file's error lines from `first_line` on.
fn settings_error(
    file: ConfFile,
    source: ConfigError,
    diagnostics: &[Diagnostic],
    first_line: usize,
) -> SettingsError {
    let lines: Vec<&str> = diagnostics
        .get(first_line..)
        .unwrap_or_default()
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    let details = if lines.is_empty() || matches!(source, ConfigError::Open { .. }) {
        String::new()
    } else {
        format!(" ({})", lines.join("; "))
    };
    SettingsError {
        file,
        source,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(scenario: TestScenario) -> SettingsSources {
        SettingsSources::new(scenario, "resnet50")
    }

    #[test]
    fn overrides_win_over_user_conf_which_wins_over_mlperf_conf() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.conf");
        std::fs::write(
            &user,
            "*.Server.target_qps = 50\n*.Server.min_duration = 1000\n",
        )
        .unwrap();

        let s = sources(TestScenario::Server).resolve().unwrap().settings;
        assert_eq!(
            s.server_target_latency_ns, 15_000_000,
            "mlperf.conf applies"
        );
        assert_eq!(s.min_duration_ms, 600_000);

        let mut with_user = sources(TestScenario::Server);
        with_user.user_conf = Some(user.clone());
        let s = with_user.resolve().unwrap().settings;
        assert_eq!((s.server_target_qps, s.min_duration_ms), (50.0, 1000));

        with_user.overrides = Overrides {
            mode: Some(TestMode::AccuracyOnly),
            target_qps: Some(70.0),
            target_latency: Some(Duration::from_millis(20)),
            min_duration: Some(Duration::from_secs(3)),
            ..Overrides::default()
        };
        let s = with_user.resolve().unwrap().settings;
        assert_eq!((s.server_target_qps, s.min_duration_ms), (70.0, 3000));
        assert_eq!(s.server_target_latency_ns, 20_000_000);
        assert_eq!(s.mode, TestMode::AccuracyOnly);
    }

    #[test]
    fn a_replacement_rules_file_is_the_base_for_user_conf() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("mlperf.conf");
        std::fs::write(
            &rules,
            "*.Offline.min_duration = 5000\n*.Offline.min_query_count = 7\n",
        )
        .unwrap();
        let user = dir.path().join("user.conf");
        std::fs::write(
            &user,
            "*.Offline.min_query_count = 9\n*.*.schedule_rng_seed = 5\n",
        )
        .unwrap();
        let mut src = sources(TestScenario::Offline);
        src.rules_file = Some(rules.clone());
        src.user_conf = Some(user);
        let resolved = src.resolve().unwrap();
        let s = resolved.settings;
        assert_eq!((s.min_duration_ms, s.min_query_count), (5000, 9));
        assert_eq!(s.schedule_rng_seed, 0, "user.conf cannot set seeds");
        assert_eq!(
            s.performance_sample_count_override, 0,
            "the embedded mlperf.conf (1024 for resnet50) is not applied"
        );
        assert!(
            resolved.diagnostics.is_empty(),
            "{:?}",
            resolved.diagnostics
        );

        std::fs::write(&rules, "*.*.qsl_rng_seed = 1 # bad\n").unwrap();
        let err = src.resolve().unwrap_err();
        assert_eq!(err.file, ConfFile::Rules);
        assert!(
            err.to_string()
                .contains("value needs to be integer or double, line=1"),
            "{err}"
        );
    }

    #[test]
    fn an_invalid_user_conf_is_logged_and_ignored_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.conf");
        std::fs::write(
            &user,
            "*.Server.target_qps = 50\n*.Server.min_duration = 1000 ms\n",
        )
        .unwrap();
        let mut src = sources(TestScenario::Server);
        src.user_conf = Some(user);
        let resolved = src.resolve().unwrap();
        assert_eq!(
            resolved.settings.server_target_qps, 1.0,
            "nothing from the file applies"
        );
        assert_eq!(resolved.settings.server_target_latency_ns, 15_000_000);
        assert_eq!(resolved.diagnostics.len(), 1, "{:?}", resolved.diagnostics);
        assert_eq!(resolved.diagnostics[0].key, "error_invalid_config");
        assert!(resolved.ignored_user_conf.is_some());

        src.user_conf = Some(dir.path().join("absent.conf"));
        let err = src.resolve().unwrap_err();
        assert_eq!(err.file, ConfFile::UserConf);
        assert!(err.to_string().starts_with("can't open file"), "{err}");
    }

    #[test]
    fn mode_comes_from_user_conf_unless_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.conf");
        std::fs::write(&user, "*.*.mode = 1\n").unwrap();
        let mut src = sources(TestScenario::SingleStream);
        assert_eq!(
            src.resolve().unwrap().settings.mode,
            TestMode::PerformanceOnly
        );
        src.user_conf = Some(user);
        assert_eq!(src.resolve().unwrap().settings.mode, TestMode::AccuracyOnly);
        src.overrides.mode = Some(TestMode::PerformanceOnly);
        assert_eq!(
            src.resolve().unwrap().settings.mode,
            TestMode::PerformanceOnly
        );
    }
}
