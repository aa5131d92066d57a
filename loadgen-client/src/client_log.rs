//! The client's own detail-format log beside the official LoadGen's files (`--loadgen official`):
//! the lines the built-in LoadGen writes into its detail log for the client (the run's
//! description, device telemetry, retries, failed samples), kept apart so that the official
//! files stay exactly as the official LoadGen wrote them. [`crate::report::run::RunRecord`]
//! reads both.

use std::path::Path;
use std::time::Instant;

use loadgen::diagnostics::Site;
use loadgen::logs::detail::DetailLog;
use loadgen::observer::Observation;

/// The file's name, in the run's output folder.
pub const FILE: &str = "loadgen_client_detail.txt";

/// The open log.
pub struct ClientLog(DetailLog);

impl ClientLog {
    /// Creates (truncates) `dir/FILE`.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        DetailLog::create(&dir.join(FILE), Instant::now(), false).map(Self)
    }

    /// Writes an observer's lines.
    pub fn observations(&mut self, lines: &[Observation]) -> std::io::Result<()> {
        let site = Site::new("client_log.rs", line!());
        self.0.observations(Instant::now(), site, lines)
    }

    /// Writes an error line (`error_runtime`, as the built-in LoadGen names a run's errors).
    pub fn error(&mut self, message: &str) -> std::io::Result<()> {
        let site = Site::new("client_log.rs", line!());
        self.0
            .error(Instant::now(), site, "error_runtime", message.to_string())
    }

    /// Writes what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
