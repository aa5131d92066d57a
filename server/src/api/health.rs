//! `grpc.health.v1.Health`, as the gRPC health checking protocol specifies it: the overall
//! service (`""`) is SERVING while the server is ready (it takes requests and every required model
//! can serve: ServerReady), [`LIVE_SERVICE`] while it takes requests (for liveness probes), and
//! each model (service name = model name) is SERVING while it is ready and at least one of its
//! instances is in service. Check on an unknown service is NOT_FOUND; Watch on one answers
//! SERVICE_UNKNOWN and stays open, reporting the service once it appears. A Watch stream sends a
//! status only when it changes.
//!
//! Memory stays bounded whatever names clients watch: statuses are kept only for the services the
//! server registers, and every stream waits on one shared change counter.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::clip;
use crate::repository::{ModelState, Repository};

/// The health service name that is SERVING while the server takes requests, whatever its models
/// do: the KServe service's own name, for liveness probes.
pub const LIVE_SERVICE: &str = "inference.GRPCInferenceService";

/// Statuses by service name, and a counter bumped on every change.
#[derive(Debug)]
struct Statuses {
    services: RwLock<HashMap<String, ServingStatus>>,
    changes: watch::Sender<u64>,
}

impl Statuses {
    fn get(&self, service: &str) -> Option<ServingStatus> {
        self.services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .copied()
    }
}

/// Updates the statuses the health service reports; cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    statuses: Arc<Statuses>,
}

/// The tonic service answering `grpc.health.v1.Health`.
pub type HealthService = HealthServer<HealthEndpoint>;

/// The `grpc.health.v1.Health` implementation over [`Health`]'s statuses.
#[derive(Debug, Clone)]
pub struct HealthEndpoint {
    statuses: Arc<Statuses>,
}

impl Health {
    /// A health reporter and its service; the server starts NOT_SERVING.
    pub async fn new() -> (Self, HealthService) {
        let statuses = Arc::new(Statuses {
            services: RwLock::new(HashMap::new()),
            changes: watch::Sender::new(0),
        });
        let health = Health {
            statuses: Arc::clone(&statuses),
        };
        health.set_server(false).await;
        (health, HealthServer::new(HealthEndpoint { statuses }))
    }

    /// Sets whether the server takes requests ([`LIVE_SERVICE`]; `""` too when it does not).
    pub async fn set_server(&self, accepting: bool) {
        self.set(LIVE_SERVICE, accepting);
        if !accepting {
            self.set("", false);
        }
    }

    /// Copies every model's readiness from the repository, and the server's (`""`: accepting and
    /// every required model serving); with `accepting` false (draining) all report NOT_SERVING.
    pub async fn sync_models(&self, repository: &Repository, accepting: bool) {
        for entry in repository.index() {
            let in_service = repository
                .get(&entry.name, "")
                .is_ok_and(|model| model.scheduler.in_service() > 0);
            let ready = accepting && entry.state == ModelState::Ready && in_service;
            self.set(&entry.name, ready);
        }
        self.set("", accepting && repository.unready_required().is_empty());
    }

    fn set(&self, service: &str, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let changed = self
            .statuses
            .services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_string(), status)
            != Some(status);
        if changed {
            self.statuses
                .changes
                .send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl HealthApi for HealthEndpoint {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        match self.statuses.get(service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!(
                "unknown service '{}': ask for \"\" (the server) or a model name",
                clip(service)
            ))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let statuses = Arc::clone(&self.statuses);
        let changes = statuses.changes.subscribe();
        let stream = futures::stream::unfold(
            (statuses, changes, service, None::<ServingStatus>),
            |(statuses, mut changes, service, last)| async move {
                loop {
                    let now = statuses
                        .get(&service)
                        .unwrap_or(ServingStatus::ServiceUnknown);
                    if last != Some(now) {
                        return Some((Ok(response(now)), (statuses, changes, service, Some(now))));
                    }
                    // Ends the stream when the server drops its reporter (shutdown).
                    changes.changed().await.ok()?;
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
