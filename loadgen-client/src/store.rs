//! The local results store: each finished run is recorded in an SQLite database (its settings,
//! the system, results, accuracy and where its files are) for `runs` to list and filter and
//! `report` to draw.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use serde_json::Value;

use crate::report::RunRecord;
use crate::system::SystemDescription;

/// The schema version this build writes (SQLite's `user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    recorded_at TEXT NOT NULL,
    test_datetime TEXT NOT NULL,
    dir TEXT NOT NULL,
    scenario TEXT NOT NULL,
    mode TEXT NOT NULL,
    model TEXT NOT NULL,
    profile TEXT NOT NULL,
    backend TEXT NOT NULL,
    device TEXT NOT NULL,
    endpoints TEXT NOT NULL,
    validity TEXT,
    throughput REAL,
    latency_ns REAL,
    accuracy REAL,
    settings TEXT NOT NULL,
    results TEXT NOT NULL,
    system TEXT NOT NULL
);
CREATE INDEX runs_by_scenario_and_model ON runs (scenario, model);";

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("results store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("results store {path}: cannot create its folder: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "results store {path} has schema version {found}, newer than this client's \
         {SCHEMA_VERSION}; use a newer loadgen-client or another --results-db"
    )]
    NewerSchema { path: PathBuf, found: i64 },
}

/// One recorded run, as `runs` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    pub id: i64,
    pub test_datetime: String,
    pub dir: PathBuf,
    pub scenario: String,
    pub mode: String,
    pub model: String,
    pub device: String,
    pub validity: Option<String>,
    pub throughput: Option<f64>,
    pub latency_ns: Option<f64>,
    pub accuracy: Option<f64>,
}

/// Which runs to list; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub scenario: Option<String>,
    pub model: Option<String>,
    pub device: Option<String>,
    /// Only VALID performance runs.
    pub valid_only: bool,
    /// Only the latest this many.
    pub last: Option<usize>,
}

/// An open results store.
pub struct ResultsStore {
    conn: Connection,
    path: PathBuf,
}

impl ResultsStore {
    /// Opens (creating when needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        // Two clients finishing at once wait for each other instead of failing.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sqlite)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(sqlite)?;
        match version {
            0 => conn
                .execute_batch(&format!(
                    "BEGIN; {SCHEMA}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(sqlite)?,
            SCHEMA_VERSION => {}
            found => {
                return Err(StoreError::NewerSchema {
                    path: path.to_path_buf(),
                    found,
                })
            }
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn sqlite(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Records `run`, measured from a client on `system`; returns its id.
    pub fn record(&self, run: &RunRecord, system: &SystemDescription) -> Result<i64, StoreError> {
        let info = run.info.clone().unwrap_or_default();
        let object = |prefix: &str| {
            let map: serde_json::Map<String, Value> = run
                .values
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Value::Object(map).to_string()
        };
        self.conn
            .execute(
                "INSERT INTO runs (recorded_at, test_datetime, dir, scenario, mode, model, \
                 profile, backend, device, endpoints, validity, throughput, latency_ns, \
                 accuracy, settings, results, system) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                 ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                params![
                    chrono::Utc::now().to_rfc3339(),
                    run.date(),
                    run.dir.display().to_string(),
                    run.scenario(),
                    run.mode(),
                    info.model,
                    info.profile,
                    info.served.backend,
                    info.served.device,
                    info.endpoints.join(" "),
                    run.validity(),
                    run.throughput(),
                    run.latency().map(|l| l.0),
                    run.accuracy.as_ref().map(|a| a.percent),
                    object("effective_"),
                    object("result_"),
                    serde_json::to_string(system).unwrap_or_default(),
                ],
            )
            .map_err(self.sqlite())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The runs `filter` selects, oldest first.
    pub fn list(&self, filter: &RunFilter) -> Result<Vec<StoredRun>, StoreError> {
        let mut sql = String::from(
            "SELECT id, test_datetime, dir, scenario, mode, model, device, validity, \
             throughput, latency_ns, accuracy FROM runs WHERE 1 = 1",
        );
        let mut args: Vec<String> = Vec::new();
        for (column, value) in [
            ("scenario", &filter.scenario),
            ("model", &filter.model),
            ("device", &filter.device),
        ] {
            if let Some(v) = value {
                args.push(v.clone());
                sql += &format!(" AND {column} = ?{}", args.len());
            }
        }
        if filter.valid_only {
            sql += " AND validity = 'VALID'";
        }
        sql += " ORDER BY id DESC";
        if let Some(n) = filter.last {
            sql += &format!(" LIMIT {n}");
        }
        let mut statement = self.conn.prepare(&sql).map_err(self.sqlite())?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(args.iter()), |row| {
                Ok(StoredRun {
                    id: row.get(0)?,
                    test_datetime: row.get(1)?,
                    dir: PathBuf::from(row.get::<_, String>(2)?),
                    scenario: row.get(3)?,
                    mode: row.get(4)?,
                    model: row.get(5)?,
                    device: row.get(6)?,
                    validity: row.get(7)?,
                    throughput: row.get(8)?,
                    latency_ns: row.get(9)?,
                    accuracy: row.get(10)?,
                })
            })
            .map_err(self.sqlite())?;
        let mut runs = rows.collect::<Result<Vec<_>, _>>().map_err(self.sqlite())?;
        runs.reverse();
        Ok(runs)
    }
}

/// Where the store is when neither `--results-db` nor `LOADGEN_RESULTS_DB` says:
/// `$XDG_DATA_HOME/loadgen-client/results.sqlite`, else under `~/.local/share`.
pub fn default_path() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".local/share"))
        })?;
    Some(data.join("loadgen-client").join("results.sqlite"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(store: &ResultsStore, dir: &Path, scenario: &str, validity: &str, qps: f64) -> i64 {
        let line = |key: &str, value: String| {
            format!(
                ":::MLLOG {{\"key\": \"{key}\", \"value\": {value}, \"time_ms\": 1.0, \
                 \"namespace\": \"mlperf::logging\", \"event_type\": \"POINT_IN_TIME\", \
                 \"metadata\": {{\"is_error\": false, \"is_warning\": false, \"file\": \"x\", \
                 \"line_no\": 1, \"pid\": 1, \"tid\": 1}}}}\n"
            )
        };
        std::fs::create_dir_all(dir).unwrap();
        let text = [
            line("effective_scenario", format!("\"{scenario}\"")),
            line("effective_test_mode", "\"PerformanceOnly\"".into()),
            line("result_validity", format!("\"{validity}\"")),
            line("result_completed_samples_per_sec", qps.to_string()),
            line(
                "client_run",
                "{\"model\": \"digits-cnn\", \"served\": {\"device\": \"cpu\"}}".into(),
            ),
        ]
        .concat();
        std::fs::write(dir.join("mlperf_log_detail.txt"), text).unwrap();
        let run = RunRecord::read(dir).unwrap();
        store
            .record(&run, &SystemDescription::of_this_machine())
            .unwrap()
    }

    #[test]
    fn runs_are_recorded_listed_and_filtered_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/results.sqlite");
        let store = ResultsStore::open(&path).unwrap();
        let a = record(&store, &dir.path().join("a"), "Server", "VALID", 100.0);
        let b = record(&store, &dir.path().join("b"), "Server", "INVALID", 200.0);
        let c = record(&store, &dir.path().join("c"), "Offline", "VALID", 300.0);
        drop(store);
        let store = ResultsStore::open(&path).unwrap();
        let ids =
            |f: RunFilter| -> Vec<i64> { store.list(&f).unwrap().iter().map(|r| r.id).collect() };
        assert_eq!(ids(RunFilter::default()), vec![a, b, c]);
        let server = RunFilter {
            scenario: Some("Server".into()),
            ..RunFilter::default()
        };
        assert_eq!(ids(server.clone()), vec![a, b]);
        assert_eq!(
            ids(RunFilter {
                valid_only: true,
                ..server
            }),
            vec![a]
        );
        assert_eq!(
            ids(RunFilter {
                last: Some(2),
                ..RunFilter::default()
            }),
            vec![b, c]
        );
        let listed = store.list(&RunFilter::default()).unwrap();
        assert_eq!(
            (
                listed[0].model.as_str(),
                listed[0].device.as_str(),
                listed[0].throughput
            ),
            ("digits-cnn", "cpu", Some(100.0))
        );
        assert_eq!(listed[2].dir, dir.path().join("c"));
    }

    #[test]
    fn a_store_from_a_newer_client_or_not_sqlite_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let newer = dir.path().join("newer.sqlite");
        Connection::open(&newer)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99;")
            .unwrap();
        let err = ResultsStore::open(&newer).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
        let junk = dir.path().join("junk.sqlite");
        std::fs::write(
            &junk,
            "this is not a database, just text that is long enough",
        )
        .unwrap();
        let err = ResultsStore::open(&junk).err().unwrap().to_string();
        assert!(err.contains("junk.sqlite"), "{err}");
    }
}
