//! `grpc.health.v1.Health` wiring: the overall service (`""`) is SERVING while the server takes
//! requests, and each model (service name = model name) is SERVING while it is ready and at least
//! one of its instances is in service. Statuses are set only when they change, so Watch streams
//! see changes, not repeats.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService as ReporterService};
use tonic_health::ServingStatus;

use crate::repository::{ModelState, Repository};

/// Updates the statuses the health service reports.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
    /// The last status set per service name.
    last: Arc<Mutex<HashMap<String, bool>>>,
}

/// The tonic service answering `grpc.health.v1.Health` Check and Watch.
pub type HealthService = HealthServer<ReporterService>;

impl Health {
    /// A health reporter and its service; everything starts NOT_SERVING.
    pub async fn new() -> (Self, HealthService) {
        let reporter = HealthReporter::new();
        let service = HealthServer::new(ReporterService::from_health_reporter(reporter.clone()));
        let health = Health {
            reporter,
            last: Arc::default(),
        };
        health.set_server(false).await;
        (health, service)
    }

    /// Sets the overall (`""`) status.
    pub async fn set_server(&self, serving: bool) {
        self.set("", serving).await;
    }

    /// Copies every model's readiness from the repository; with `accepting` false (draining)
    /// every model reports NOT_SERVING.
    pub async fn sync_models(&self, repository: &Repository, accepting: bool) {
        for entry in repository.index() {
            let in_service = repository
                .get(&entry.name, "")
                .is_ok_and(|model| model.scheduler.in_service() > 0);
            let ready = accepting && entry.state == ModelState::Ready && in_service;
            self.set(&entry.name, ready).await;
        }
    }

    async fn set(&self, service: &str, serving: bool) {
        let changed = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            last.insert(service.to_string(), serving) != Some(serving)
        };
        if changed {
            self.reporter
                .set_service_status(service, serving_status(serving))
                .await;
        }
    }
}

fn serving_status(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}
