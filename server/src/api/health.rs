//! `grpc.health.v1.Health` wiring: the overall service (`""`) is SERVING while the server takes
//! requests, and each model (service name = model name) is SERVING while it is ready.

use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService as ReporterService};
use tonic_health::ServingStatus;

use crate::repository::{ModelState, Repository};

/// Updates the statuses the health service reports.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
}

/// The tonic service answering `grpc.health.v1.Health` Check and Watch.
pub type HealthService = HealthServer<ReporterService>;

impl Health {
    /// A health reporter and its service; everything starts NOT_SERVING.
    pub async fn new() -> (Self, HealthService) {
        let reporter = HealthReporter::new();
        let service = HealthServer::new(ReporterService::from_health_reporter(reporter.clone()));
        let health = Health { reporter };
        health.set_server(false).await;
        (health, service)
    }

    /// Sets the overall (`""`) status.
    pub async fn set_server(&self, serving: bool) {
        self.reporter
            .set_service_status("", serving_status(serving))
            .await;
    }

    /// Copies every model's readiness from the repository; with `accepting` false (draining)
    /// every model reports NOT_SERVING.
    pub async fn sync_models(&self, repository: &Repository, accepting: bool) {
        for entry in repository.index() {
            let ready = accepting && entry.state == ModelState::Ready;
            self.reporter
                .set_service_status(&entry.name, serving_status(ready))
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
