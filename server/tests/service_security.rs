//! Who may talk to the server, through the real binary with certificates made here: TLS on the
//! gRPC, HTTP and metrics listeners, the certificate reloaded on SIGHUP, client certificates
//! (mTLS), bearer tokens (health checks open, everything else closed, tokens reloaded), model
//! control on a reachable address refused without credentials and taken with client certificates,
//! and a connection stuck before its TLS handshake not holding up a stop.

mod common;
mod service_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use inference_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use inference_proto::inference::{
    RepositoryModelLoadRequest, ServerLiveRequest, ServerReadyRequest,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use service_support::{run_binary, Repo, Server};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A CA, and leaf certificates it signs.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Authority {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `names`, for a server or a client.
    fn leaf(&self, names: &[&str], server: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// Writes a server certificate for `names` signed by `authority` and its key into `dir`, and
/// the CA of client certificates when given; returns the server options that use them.
fn tls_options(
    dir: &Path,
    authority: &Authority,
    names: &[&str],
    client_ca: Option<&Authority>,
) -> Vec<String> {
    let (cert, key) = authority.leaf(names, true);
    let path = |name: &str, text: &str| write(dir, name, text).display().to_string();
    let mut options = vec![
        "--tls-cert".to_string(),
        path("server.pem", &cert),
        "--tls-key".to_string(),
        path("server.key", &key),
    ];
    if let Some(ca) = client_ca {
        options.extend([
            "--tls-client-ca".to_string(),
            path("client-ca.pem", &ca.pem),
        ]);
    }
    options
}

/// `options` as the `&str`s `Server::start` takes.
fn strs(options: &[String]) -> Vec<&str> {
    options.iter().map(String::as_str).collect()
}

fn repo() -> Repo {
    Repo::new().model("affine", "affine.onnx", "max_batch_size = 8\n")
}

/// A channel to the gRPC port over TLS trusting `ca`, with a client certificate when given.
async fn tls_channel(
    server: &Server,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{}", server.grpc_addr))
        .expect("endpoint")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn tls_client(
    server: &Server,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<GrpcInferenceServiceClient<Channel>, tonic::transport::Error> {
    Ok(GrpcInferenceServiceClient::new(
        tls_channel(server, ca, identity).await?,
    ))
}

/// `curl` GET with extra `options` (`--cacert`, `--cert`, `-H` …): (HTTP status, body).
fn curl(url: &str, options: &[&str]) -> (String, String) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(options)
        .arg(url)
        .output()
        .expect("curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

#[tokio::test]
async fn tls_on_every_listener_with_the_certificate_reloaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Authority::new("first CA");
    let tls = tls_options(dir.path(), &first, &["localhost", "127.0.0.1"], None);
    let (cert_path, key_path) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let first_ca = write(dir.path(), "first-ca.pem", &first.pem);
    let repo = repo();
    let server = Server::start(repo.path(), &strs(&tls)).await;

    let mut client = tls_client(&server, &first.pem, None)
        .await
        .expect("TLS with the CA");
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .expect("live")
            .into_inner()
            .live
    );
    let plain = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc_addr)).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut c) => c.server_live(ServerLiveRequest {}).await.is_err(),
    };
    assert!(refused, "plaintext is not served on a TLS listener");
    let first_ca = first_ca.to_str().expect("UTF-8 path");
    let (code, body) = curl(
        &format!(
            "https://localhost:{}/v2/health/ready",
            server.http_addr.expect("http").port()
        ),
        &["--cacert", first_ca],
    );
    assert_eq!(code, "200", "{body}");
    let (code, body) = curl(
        &format!("https://localhost:{}/metrics", server.metrics_addr.port()),
        &["--cacert", first_ca],
    );
    assert_eq!(code, "200");
    assert!(body.contains("inference_connections_total"), "{body}");

    // A new certificate from another CA, reloaded without a restart.
    let second = Authority::new("second CA");
    let (cert, key) = second.leaf(&["localhost"], true);
    std::fs::write(&cert_path, cert).expect("new cert");
    std::fs::write(&key_path, key).expect("new key");
    server.signal("HUP");
    let mut reloaded = false;
    for _ in 0..50 {
        if let Ok(mut c) = tls_client(&server, &second.pem, None).await {
            if c.server_live(ServerLiveRequest {}).await.is_ok() {
                reloaded = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reloaded,
        "the new certificate is not served:\n{}",
        server.log()
    );
    assert!(
        tls_client(&server, &first.pem, None).await.is_err() || {
            let mut c = tls_client(&server, &first.pem, None).await.expect("client");
            c.server_live(ServerLiveRequest {}).await.is_err()
        }
    );
}

#[tokio::test]
async fn client_certificates_are_required_with_a_client_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let servers = Authority::new("server CA");
    let clients = Authority::new("client CA");
    let strangers = Authority::new("someone else");
    let tls = tls_options(dir.path(), &servers, &["localhost"], Some(&clients));
    let repo = repo();
    let server = Server::start(repo.path(), &strs(&tls)).await;
    let live = |client: Result<GrpcInferenceServiceClient<Channel>, _>| async move {
        match client {
            Ok(mut c) => c.server_live(ServerLiveRequest {}).await.is_ok(),
            Err(_) => false,
        }
    };
    let anonymous = tls_client(&server, &servers.pem, None)
        .await
        .expect("TLS without a certificate");
    let status = anonymous
        .clone()
        .server_live(ServerLiveRequest {})
        .await
        .expect_err("no client certificate");
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    assert!(status.message().contains("client certificate"), "{status}");
    let mut health =
        HealthClient::new(tls_channel(&server, &servers.pem, None).await.expect("TLS"));
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health checks need no client certificate");
    let (stranger_cert, stranger_key) = strangers.leaf(&["intruder"], false);
    assert!(
        !live(tls_client(&server, &servers.pem, Some((&stranger_cert, &stranger_key))).await).await,
        "a certificate from another CA"
    );
    let (client_cert, client_key) = clients.leaf(&["loadgen"], false);
    assert!(live(tls_client(&server, &servers.pem, Some((&client_cert, &client_key))).await).await);
    let servers_ca = write(dir.path(), "servers-ca.pem", &servers.pem);
    let metrics = format!("https://localhost:{}/metrics", server.metrics_addr.port());
    let servers_ca = servers_ca.to_str().expect("UTF-8 path");
    let (code, page) = curl(&metrics, &["--cacert", servers_ca]);
    assert_eq!(code, "401", "{page}");
    assert!(page.contains("client certificate"), "{page}");
    let client_pem = write(dir.path(), "client.pem", &client_cert);
    let client_key = write(dir.path(), "client.key", &client_key);
    let (code, page) = curl(
        &metrics,
        &[
            "--cacert",
            servers_ca,
            "--cert",
            client_pem.to_str().expect("UTF-8 path"),
            "--key",
            client_key.to_str().expect("UTF-8 path"),
        ],
    );
    assert_eq!(code, "200", "{page}");
    assert!(
        page.contains("outcome=\"tls_failed\""),
        "the stranger is counted: {page}"
    );
}

#[tokio::test]
async fn the_watchdog_reaches_its_own_tls_listener_that_wants_certificates_and_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = Authority::new("box CA");
    let mut options = tls_options(
        dir.path(),
        &authority,
        &["edge-box.example"],
        Some(&authority),
    );
    let tokens = write(dir.path(), "tokens", "watchdog-test-token-0123\n");
    options.extend([
        "--auth-token-file".to_string(),
        tokens.display().to_string(),
    ]);
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("notify socket");
    let socket_text = socket_path.display().to_string();
    let repo = repo();
    let _server = Server::start_with(
        repo.path(),
        &strs(&options),
        &[
            ("NOTIFY_SOCKET", socket_text.as_str()),
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .await;
    let seen = service_support::read_until(&socket, "never", Duration::from_secs(2));
    let pings = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        pings >= 3,
        "about every 200 ms, got {pings}: {seen:?}\n{}",
        _server.log()
    );
}

#[tokio::test]
async fn bearer_tokens_guard_everything_but_health() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = write(dir.path(), "tokens", "# ops\nfirst-token-0123456789\n");
    let repo = repo();
    let server = Server::start(
        repo.path(),
        &["--auth-token-file", tokens.to_str().unwrap()],
    )
    .await;
    let mut client = server.client().await;
    let status = client
        .server_ready(ServerReadyRequest {})
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    let mut health = HealthClient::new(server.channel().await.expect("channel"));
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health stays open");

    let with = |token: &'static str| {
        move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
            Ok(request)
        }
    };
    let channel = server.channel().await.expect("channel");
    let mut authorized = GrpcInferenceServiceClient::with_interceptor(
        channel.clone(),
        with("first-token-0123456789"),
    );
    assert!(
        authorized
            .server_ready(ServerReadyRequest {})
            .await
            .expect("token")
            .into_inner()
            .ready
    );
    let mut wrong = GrpcInferenceServiceClient::with_interceptor(
        channel.clone(),
        with("wrong-token-0123456789"),
    );
    assert_eq!(
        wrong
            .server_ready(ServerReadyRequest {})
            .await
            .expect_err("wrong")
            .code(),
        Code::Unauthenticated
    );

    let http = server.http_addr.expect("http");
    let metrics = server.metrics_addr;
    let get = |addr: std::net::SocketAddr, path: &str, token: Option<&str>| {
        let header = token.map(|t| format!("authorization: Bearer {t}"));
        let options: Vec<&str> = header.iter().flat_map(|h| ["-H", h.as_str()]).collect();
        curl(&format!("http://{addr}{path}"), &options)
    };
    let get_status = |addr, path, token| get(addr, path, token).0;
    assert_eq!(get_status(http, "/v2/health/ready", None), "200");
    assert_eq!(get_status(http, "/v2/models/affine", None), "401");
    assert_eq!(
        get_status(http, "/v2/models/affine", Some("first-token-0123456789")),
        "200"
    );
    assert_eq!(get_status(metrics, "/metrics", None), "401");
    assert_eq!(
        get_status(metrics, "/metrics", Some("first-token-0123456789")),
        "200"
    );

    // Rotated on SIGHUP.
    std::fs::write(&tokens, "second-token-0123456789\n").expect("rotate");
    server.signal("HUP");
    let mut rotated = false;
    for _ in 0..50 {
        if get_status(http, "/v2/models/affine", Some("second-token-0123456789")) == "200" {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "{}", server.log());
    assert_eq!(
        get_status(http, "/v2/models/affine", Some("first-token-0123456789")),
        "401"
    );
    let (_, page) = get(metrics, "/metrics", Some("second-token-0123456789"));
    assert!(
        page.contains("inference_requests_unauthenticated_total"),
        "{page}"
    );
}

#[test]
fn model_control_on_a_reachable_address_needs_credentials() {
    let repo = repo();
    let port = service_support::free_addr().port();
    let (code, _, stderr) = run_binary(
        &[
            "--model-repository",
            repo.path().to_str().unwrap(),
            "--grpc-addr",
            &format!("0.0.0.0:{port}"),
            "--http-addr",
            "off",
            "--allow-model-control",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("needs credentials: pass --auth-token-file or --tls-client-ca"),
        "{stderr}"
    );
    let (code, _, stderr) = run_binary(
        &[
            "--model-repository",
            repo.path().to_str().unwrap(),
            "--tls-cert",
            "/nonexistent.pem",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("needs both --tls-cert and --tls-key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_client_stuck_before_its_tls_handshake_does_not_hold_up_a_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = Authority::new("test CA");
    let tls = tls_options(dir.path(), &authority, &["localhost", "127.0.0.1"], None);
    let repo = repo();
    let mut server = Server::start(repo.path(), &strs(&tls)).await;
    // Connected, but it never sends its ClientHello (the handshake timeout is 10 s).
    let _silent = tokio::net::TcpStream::connect(server.grpc_addr)
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = std::time::Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(8)).await;
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        stopping.elapsed()
    );
    // Not cut off after the flush timeout: the half-open connection closed with the listener.
    let log = server.log();
    assert!(!log.contains("connections still open"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn model_control_on_a_reachable_address_takes_client_certificates_as_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let servers = Authority::new("server CA");
    let clients = Authority::new("client CA");
    let tls = tls_options(dir.path(), &servers, &["localhost"], Some(&clients));
    let repo = repo();
    let (grpc_addr, metrics_addr) = (service_support::free_addr(), service_support::free_addr());
    let reachable = format!("0.0.0.0:{}", service_support::free_addr().port());
    let args: Vec<String> = [
        "--model-repository",
        repo.path().to_str().unwrap(),
        "--grpc-addr",
        &grpc_addr.to_string(),
        "--metrics-addr",
        &metrics_addr.to_string(),
        "--http-addr",
        &reachable,
        "--allow-model-control",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain(tls)
    .collect();
    // Starts: every call but the health checks needs a certificate the client CA signed.
    let server = Server::launch(&args, &[], grpc_addr, metrics_addr).await;
    let request = || RepositoryModelLoadRequest {
        model_name: "affine".into(),
        ..Default::default()
    };
    let anonymous = tls_client(&server, &servers.pem, None).await.expect("TLS");
    let status = anonymous
        .clone()
        .repository_model_load(request())
        .await
        .expect_err("no client certificate");
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    let (client_cert, client_key) = clients.leaf(&["operator"], false);
    let mut operator = tls_client(&server, &servers.pem, Some((&client_cert, &client_key)))
        .await
        .expect("TLS with a client certificate");
    operator
        .repository_model_load(request())
        .await
        .expect("model control with a client certificate");
}
