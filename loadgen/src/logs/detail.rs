//! The detail log (`mlperf_log_detail.txt`): one `:::MLLOG {...}` line per event, with the exact
//! key order, value formats and metadata of the official logger. Lines are written as they
//! happen; error lines are flushed at once and the buffer is flushed on drop.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use crate::diagnostics::{Diagnostic, Severity, Site};
use crate::logs::format::fmt_g;
use crate::logs::version;
use crate::observer::Observation;

/// A logged value, formatted like the original's `ArgValueTransform`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Quoted, not escaped.
    Str(String),
    /// Quoted and JSON-escaped (free text such as git messages, which the original escapes).
    Escaped(String),
    Int(i64),
    UInt(u64),
    /// C++ default stream format.
    Float(f64),
    Bool(bool),
    /// `[1,2,3]` without spaces.
    List(Vec<usize>),
    /// `{"k":"v",...}`.
    Map(Vec<(String, String)>),
    /// JSON rendered by the caller, written as it is.
    Json(String),
}

impl Value {
    fn render(&self) -> String {
        match self {
            Value::Str(s) => format!("\"{s}\""),
            Value::Escaped(s) => format!("\"{}\"", json_escape(s)),
            Value::Int(v) => v.to_string(),
            Value::UInt(v) => v.to_string(),
            Value::Float(v) => fmt_g(*v),
            Value::Bool(b) => b.to_string(),
            Value::List(items) => {
                let mut s = String::from("[");
                for i in items {
                    s.push_str(&i.to_string());
                    s.push(',');
                }
                // The original drops the last character unconditionally: `[]` becomes `]`.
                s.pop();
                s.push(']');
                s
            }
            Value::Json(json) => json.clone(),
            Value::Map(items) => {
                let mut s = String::from("{");
                for (k, v) in items {
                    s.push_str(&format!("\"{k}\":\"{v}\","));
                }
                s.pop();
                s.push('}');
                s
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::UInt(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Vec<usize>> for Value {
    fn from(v: Vec<usize>) -> Self {
        Value::List(v)
    }
}

/// Writer of the detail log; also counts the errors and warnings it logged.
pub struct DetailLog {
    out: BufWriter<File>,
    origin: Instant,
    pid: u32,
    tid: u64,
    errors: u64,
    warnings: u64,
    copy_to_stdout: bool,
}

impl DetailLog {
    /// Creates (truncates) the file; times are measured from `origin`.
    pub fn create(path: &Path, origin: Instant, copy_to_stdout: bool) -> io::Result<Self> {
        let pid = std::process::id();
        Ok(Self {
            out: BufWriter::new(File::create(path)?),
            origin,
            pid,
            tid: current_tid().unwrap_or(u64::from(pid)),
            errors: 0,
            warnings: 0,
            copy_to_stdout,
        })
    }

    /// Number of error lines written so far (`num_errors`).
    pub fn error_count(&self) -> u64 {
        self.errors
    }

    /// Number of warning lines written so far.
    pub fn warning_count(&self) -> u64 {
        self.warnings
    }

    /// Logs an informational line.
    pub fn log(
        &mut self,
        at: Instant,
        site: Site,
        key: &str,
        value: impl Into<Value>,
    ) -> io::Result<()> {
        self.write(at, site, key, &value.into(), Severity::Info)
    }

    /// Logs an error line (`is_error: true`) and flushes.
    pub fn error(
        &mut self,
        at: Instant,
        site: Site,
        key: &str,
        value: impl Into<Value>,
    ) -> io::Result<()> {
        self.write(at, site, key, &value.into(), Severity::Error)
    }

    /// Logs a warning line (`is_warning: true`).
    pub fn warning(
        &mut self,
        at: Instant,
        site: Site,
        key: &str,
        value: impl Into<Value>,
    ) -> io::Result<()> {
        self.write(at, site, key, &value.into(), Severity::Warning)
    }

    /// Logs an observer's lines, as warnings where they say so.
    pub fn observations(
        &mut self,
        at: Instant,
        site: Site,
        lines: &[Observation],
    ) -> io::Result<()> {
        for line in lines {
            let value = Value::Json(line.json.clone());
            if line.warning {
                self.warning(at, site, &line.key, value)?;
            } else {
                self.log(at, site, &line.key, value)?;
            }
        }
        Ok(())
    }

    /// Logs a pending diagnostic with its own time and severity.
    pub fn diagnostic(&mut self, d: &Diagnostic) -> io::Result<()> {
        self.write(
            d.at,
            d.site,
            d.key,
            &Value::Str(d.message.clone()),
            d.severity,
        )
    }

    /// The seven `loadgen_*` identity lines that open every log, naming `writer` (the program
    /// and version that uses this crate) as the log's author.
    pub fn log_version(&mut self, at: Instant, writer: &str) -> io::Result<()> {
        let file_sha1 = version::FILE_SHA1
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lines = [
            (
                53,
                "loadgen_version",
                version::loadgen_version(writer).into(),
            ),
            (
                55,
                "loadgen_build_date_local",
                version::BUILD_DATE_LOCAL.into(),
            ),
            (56, "loadgen_build_date_utc", version::BUILD_DATE_UTC.into()),
            (
                57,
                "loadgen_git_commit_date",
                version::GIT_COMMIT_DATE.into(),
            ),
            (
                58,
                "loadgen_git_log_message",
                Value::Escaped(version::GIT_LOG.into()),
            ),
            // Logged, never turned into the official `error_uncommitted_loadgen_changes`: a
            // development build is not a submission, and that error would fail the checker.
            (
                60,
                "loadgen_git_status_message",
                Value::Escaped(version::GIT_STATUS.into()),
            ),
            (67, "loadgen_file_sha1", Value::Map(file_sha1)),
        ];
        for (line, key, value) in lines {
            self.log(at, Site::new("version.cc", line), key, value)?;
        }
        Ok(())
    }

    /// Flushes buffered lines to disk.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn write(
        &mut self,
        at: Instant,
        site: Site,
        key: &str,
        value: &Value,
        severity: Severity,
    ) -> io::Result<()> {
        // Signed difference, printed as unsigned like the original (events logged before the
        // log opened wrap around).
        let ns: i64 = if at >= self.origin {
            at.duration_since(self.origin).as_nanos() as i64
        } else {
            -(self.origin.duration_since(at).as_nanos() as i64)
        };
        let ns = ns as u64;
        let (is_error, is_warning) = match severity {
            Severity::Error => {
                self.errors += 1;
                (true, false)
            }
            Severity::Warning => {
                self.warnings += 1;
                (false, true)
            }
            Severity::Info => (false, false),
        };
        let line = format!(
            ":::MLLOG {{\"key\": \"{key}\", \"value\": {}, \"time_ms\": {}.{:06}, \"namespace\": \"mlperf::logging\", \"event_type\": \"POINT_IN_TIME\", \"metadata\": {{\"is_error\": {is_error}, \"is_warning\": {is_warning}, \"file\": \"{}\", \"line_no\": {}, \"pid\": {}, \"tid\": {}}}}}\n",
            value.render(),
            ns / 1_000_000,
            ns % 1_000_000,
            site.file,
            site.line,
            self.pid,
            self.tid,
        );
        self.out.write_all(line.as_bytes())?;
        if self.copy_to_stdout {
            print!("{line}");
        }
        if is_error {
            self.out.flush()?;
        }
        Ok(())
    }
}

/// `text` as the inside of a JSON string.
fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// The kernel thread id of the calling thread, from `/proc/thread-self`.
fn current_tid() -> Option<u64> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn line_layout_and_values() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("d.txt");
        let origin = Instant::now();
        let mut log = DetailLog::create(&path, origin, false).unwrap_or_else(|e| panic!("{e}"));
        let at = origin + Duration::from_nanos(3_025_055_604);
        let site = Site::new("results.cc", 674);
        log.log(at, site, "result_validity", "VALID")
            .unwrap_or_else(|e| panic!("{e}"));
        log.log(at, site, "v", 1e6)
            .unwrap_or_else(|e| panic!("{e}"));
        log.log(at, site, "l", vec![216usize, 267])
            .unwrap_or_else(|e| panic!("{e}"));
        log.log(at, site, "e", Vec::<usize>::new())
            .unwrap_or_else(|e| panic!("{e}"));
        log.error(
            origin - Duration::from_nanos(1_000),
            site,
            "error_runtime",
            "x",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(log.error_count(), 1);
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = text.lines().collect();
        let pid = std::process::id();
        assert!(lines[0].starts_with(
            ":::MLLOG {\"key\": \"result_validity\", \"value\": \"VALID\", \"time_ms\": 3025.055604, \"namespace\": \"mlperf::logging\", \"event_type\": \"POINT_IN_TIME\", \"metadata\": {\"is_error\": false, \"is_warning\": false, \"file\": \"results.cc\", \"line_no\": 674, "
        ));
        assert!(lines[0].contains(&format!("\"pid\": {pid}, \"tid\": ")));
        assert!(lines[1].contains("\"value\": 1e+06,"));
        assert!(lines[2].contains("\"value\": [216,267],"));
        assert!(lines[3].contains("\"value\": ],"));
        assert!(lines[4].contains("\"time_ms\": 18446744073709.550616,"));
        assert!(lines[4].contains("\"is_error\": true"));
    }
}
