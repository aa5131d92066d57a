//! Messages produced outside a running test (config parsing, settings validation) that must still
//! reach the detail log, with the source location the official LoadGen reports for them.

use std::time::Instant;

/// Where the official LoadGen emits a detail-log line (`metadata.file` / `metadata.line_no`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    pub file: &'static str,
    pub line: u32,
}

impl Site {
    /// A site in the official sources.
    pub const fn new(file: &'static str, line: u32) -> Self {
        Self { file, line }
    }
}

/// How a detail-log line is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One pending detail-log line with a string value.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub key: &'static str,
    pub message: String,
    pub site: Site,
    /// When the event happened; lines logged before the log opened get a wrapped negative time,
    /// like the official logger.
    pub at: Instant,
}

impl Diagnostic {
    /// An error line (`is_error: true`).
    pub fn error(key: &'static str, message: impl Into<String>, site: Site) -> Self {
        Self {
            severity: Severity::Error,
            key,
            message: message.into(),
            site,
            at: Instant::now(),
        }
    }
}
