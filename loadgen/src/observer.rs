//! Records about the system under test taken around a test, for its logs: the runner asks an
//! observer for detail-log lines as the first pass starts and after the last one ends (also when
//! the test fails), and for a section it appends after the official summary. The lines use keys
//! of the observer's own and the section follows the official text, so the MLCommons parsers,
//! which read known keys and lines, skip both.

/// One detail-log line from an observer.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The line's key; pick one no official line uses (e.g. with a prefix of your own).
    pub key: String,
    /// The value, already rendered as JSON.
    pub json: String,
    /// Logged as a warning (`is_warning: true`, counted in the summary's footer).
    pub warning: bool,
}

/// Something that reports on the system under test around a test.
pub trait RunObserver: Send + Sync + std::fmt::Debug {
    /// Lines for the detail log as the test starts.
    fn started(&self) -> Vec<Observation>;
    /// Lines for the detail log as the test ends, whether or not it succeeded.
    fn finished(&self) -> Vec<Observation>;
    /// Text appended to the summary, after the official content; called after [`finished`].
    ///
    /// [`finished`]: RunObserver::finished
    fn summary(&self) -> Option<String>;
}
