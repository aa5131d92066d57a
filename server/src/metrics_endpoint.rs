//! The Prometheus scrape endpoint: `GET /metrics` and nothing else. Device telemetry and process
//! metrics are read at each scrape, so a sample's timestamp is when it was true.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::api::transport::{self, Policy};
use crate::metrics;
use crate::telemetry::Telemetry;

/// How often histograms are drained and idle metrics expired between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// The content type of Prometheus' text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `/metrics` on `listener` under `policy` until the process exits.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    telemetry: Telemetry,
    policy: Policy,
) {
    let process = metrics_process::Collector::default();
    process.describe();
    tokio::spawn({
        let handle = handle.clone();
        async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        }
    });
    let scrape = move || {
        let (handle, telemetry, process) = (handle.clone(), telemetry.clone(), process.clone());
        async move {
            // sysfs reads are quick but blocking; keep them off the async workers.
            let reading = tokio::task::spawn_blocking(move || telemetry.read()).await;
            if let Ok(reading) = reading {
                metrics::record_telemetry(&reading);
            }
            process.collect();
            ([(header::CONTENT_TYPE, TEXT_FORMAT)], handle.render())
        }
    };
    let router = Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "only /metrics is served here\n").into_response()
        });
    transport::serve(listener, "metrics", router, policy, std::future::pending()).await;
}
