//! The official log files: detail log, summary, accuracy JSON and trace.

pub mod accuracy;
pub mod detail;
pub mod format;
pub mod report;
pub mod summary;
pub mod trace;
pub mod version;
