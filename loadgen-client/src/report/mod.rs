//! `loadgen-client report`: one self-contained HTML page about runs read back from their output
//! folders, with a comparison and the Pareto frontier when there are several.

pub mod charts;
pub mod html;
pub mod pareto;
pub mod run;

use std::path::{Path, PathBuf};

pub use run::RunRecord;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}: {source} (is it a run's output folder?)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}")]
    Parse {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("drawing a chart: {0}")]
    Chart(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads the runs in `dirs` and writes their report to `out`.
pub fn write_report(dirs: &[PathBuf], out: &Path) -> Result<Vec<RunRecord>, ReportError> {
    let runs = dirs
        .iter()
        .map(|d| RunRecord::read(d))
        .collect::<Result<Vec<_>, _>>()?;
    let generated = chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    let page = html::render(&runs, &generated)?;
    std::fs::write(out, page).map_err(|source| ReportError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(runs)
}
