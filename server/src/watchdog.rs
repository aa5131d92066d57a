//! The systemd watchdog (`WatchdogSec=` in the unit, `WATCHDOG_USEC` in the environment): a
//! `WATCHDOG=1` ping every half period, but only after the server answered its own gRPC
//! liveness check over the real socket (through TLS when it serves TLS) within that time. A
//! wedged server — its runtime stuck, its listener gone — stops pinging, and systemd restarts
//! it; there is no ping on a timer alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use inference_server::api::access::Access;
use inference_server::api::health::LIVE_SERVICE;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Pings systemd every half of `period` while the server on `grpc_addr` answers.
pub async fn run(grpc_addr: SocketAddr, period: Duration, access: Arc<Access>) {
    let every = (period / 2).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    let target = loopback(grpc_addr);
    loop {
        tick.tick().await;
        match tokio::time::timeout(every, live(target, &access)).await {
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

/// A channel to `target`, through TLS trusting the server's own certificate when it serves TLS.
async fn connect(target: SocketAddr, access: &Access) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{target}"))?;
    let Some(tls) = access.own_connector() else {
        return endpoint.connect().await;
    };
    let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
    endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let (tls, name) = (tls.clone(), name.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(target).await?;
                let stream = tls.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

/// One liveness check round trip (the health service, open even where tokens are required).
async fn live(target: SocketAddr, access: &Access) -> Result<(), String> {
    let channel = connect(target, access)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: LIVE_SERVICE.into(),
        })
        .await
        .map_err(|status| format!("health check failed: {status}"))?;
    if answer.get_ref().status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err("the liveness check says not serving".into())
    }
}
