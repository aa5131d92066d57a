//! What the client knows about a run beyond the LoadGen's settings: the profile, model, dataset,
//! servers, and the runtime and device that served the model. Logged as the detail log's
//! `client_run` line (a key no official line uses, so the MLCommons parsers skip it) and read
//! back by `report` and the results store.

use loadgen::observer::{Observation, RunObserver};
use serde::{Deserialize, Serialize};

use crate::grpc_sut::ServedModel;

/// The detail-log key of the line.
pub const KEY: &str = "client_run";

/// The client's description of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    /// The program and version that ran it.
    pub client: String,
    pub profile: String,
    /// The served model's name.
    pub model: String,
    /// The MLPerf benchmark name the conf files were read for.
    pub mlperf_model: String,
    pub dataset: String,
    pub endpoints: Vec<String>,
    pub served: ServedModel,
    /// The text of the run's `--user-conf` (empty without one).
    pub user_conf: String,
    /// The command line that ran it.
    pub command: Vec<String>,
}

impl RunInfo {
    /// "model on device (backend)", or as much of it as is known.
    pub fn label(&self) -> String {
        let mut label = self.model.clone();
        if !self.served.device.is_empty() {
            label += &format!(" on {}", self.served.device);
        }
        if !self.served.backend.is_empty() {
            label += &format!(" ({})", self.served.backend);
        }
        label
    }
}

impl RunObserver for RunInfo {
    fn started(&self) -> Vec<Observation> {
        vec![Observation {
            key: KEY.to_string(),
            json: serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string()),
            warning: false,
        }]
    }

    fn finished(&self) -> Vec<Observation> {
        Vec::new()
    }

    fn summary(&self) -> Option<String> {
        None
    }
}
