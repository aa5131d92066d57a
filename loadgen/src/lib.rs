#![doc = include_str!("../README.md")]

pub mod breakdown;
pub mod cnum;
pub mod config;
pub mod diagnostics;
pub mod early_stopping;
pub mod logs;
pub mod null_sut;
pub mod observer;
pub mod results;
pub mod rng;
pub mod runner;
pub mod schedule;
pub mod settings;
pub mod sources;
pub mod sut;
pub mod timeline;

pub use runner::{start_test, LoadgenError, LogPaths, Metric, RunOptions, TestOutcome};
pub use settings::{LogSettings, TestMode, TestScenario, TestSettings};
pub use sources::{Overrides, ResolvedSettings, SettingsError, SettingsSources};
pub use sut::{Qsl, QslError, QuerySample, ResponseSink, SampleResponse, ServerTiming, Sut};
