//! The systemd watchdog (`WatchdogSec=` in the unit, `WATCHDOG_USEC` in the environment): a
//! `WATCHDOG=1` ping every half period, but only after the server answered its own gRPC
//! ServerLive over the real socket within that time. A wedged server — its runtime stuck, its
//! listener gone — stops pinging, and systemd restarts it; there is no ping on a timer alone.

use std::net::SocketAddr;
use std::time::Duration;

use inference_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use inference_proto::inference::ServerLiveRequest;

/// Pings systemd every half of `period` while the server on `grpc_addr` answers.
pub async fn run(grpc_addr: SocketAddr, period: Duration) {
    let every = (period / 2).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    let endpoint = format!("http://{}", loopback(grpc_addr));
    loop {
        tick.tick().await;
        match tokio::time::timeout(every, live(&endpoint)).await {
            Ok(Ok(())) => {
                if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                    tracing::warn!(error = %err, "cannot ping the systemd watchdog");
                }
            }
            Ok(Err(reason)) => {
                tracing::error!(%reason, "watchdog: the server does not answer its own ServerLive; no ping")
            }
            Err(_) => {
                tracing::error!(timeout = ?every, "watchdog: ServerLive took too long; no ping")
            }
        }
    }
}

/// A wildcard listen address, as the address to reach it on this box.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// One ServerLive round trip.
async fn live(endpoint: &str) -> Result<(), String> {
    let mut client = GrpcInferenceServiceClient::connect(endpoint.to_string())
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let answer = client
        .server_live(ServerLiveRequest {})
        .await
        .map_err(|status| format!("ServerLive failed: {status}"))?;
    if answer.get_ref().live {
        Ok(())
    } else {
        Err("ServerLive says not live".into())
    }
}
