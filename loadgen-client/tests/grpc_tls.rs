//! TLS, mutual TLS, the bearer token and bounded retries against an in-process fake KServe server,
//! with certificates made by the test (rcgen): the gRPC SUT directly, and the binary end to end.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{as_class, digits_qsl, serve, wait_for, Collect, Fake};
use loadgen::sut::{QuerySample, ResponseSink, Sut};
use loadgen_client::grpc_sut::{self, GrpcSut, GrpcSutConfig, GrpcSutError};
use loadgen_client::profile::lookup;
use loadgen_client::security::{Security, TlsOptions};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// A certificate authority of the test.
fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `names` signed by `ca`: (certificate PEM, key PEM).
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The files of a test PKI: a CA, a server certificate for `server_names`, a client
/// certificate, and an unrelated CA.
struct Pki {
    _dir: tempfile::TempDir,
    ca_pem: String,
    server: (String, String),
    ca: PathBuf,
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new(server_names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("loadgen test CA");
        let other = new_ca("some other CA");
        let server = leaf(&ca, server_names, ExtendedKeyUsagePurpose::ServerAuth);
        let client = leaf(
            &ca,
            &["loadgen-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            other_ca: write("other-ca.pem", &other.pem()),
            client_cert: write("client.pem", &client.0),
            client_key: write("client.key", &client.1),
            ca_pem: ca.pem(),
            server,
            _dir: dir,
        }
    }

    /// The server's TLS; with `client_ca`, clients must present a certificate of the CA.
    fn server_tls(&self, client_ca: bool) -> ServerTlsConfig {
        let tls =
            ServerTlsConfig::new().identity(Identity::from_pem(&self.server.0, &self.server.1));
        if client_ca {
            tls.client_ca_root(Certificate::from_pem(&self.ca_pem))
        } else {
            tls
        }
    }
}

fn config(endpoint: String, security: Security) -> GrpcSutConfig {
    GrpcSutConfig {
        endpoints: vec![endpoint],
        connections_per_endpoint: 1,
        network_threads: 1,
        model: "digits".into(),
        max_batch: 8,
        in_flight_per_connection: 8,
        in_flight_bytes_per_endpoint: 1 << 20,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        retries: 3,
        security,
    }
}

fn tls(ca: Option<&Path>, client: Option<(&Path, &Path)>, name: Option<&str>) -> Security {
    Security {
        tls: Some(TlsOptions::load(ca, client, name.map(str::to_string)).unwrap()),
        token: None,
    }
}

/// Connects and infers two samples; the classes must come back.
fn infer_works(config: &GrpcSutConfig) -> Result<(), GrpcSutError> {
    let dir = tempfile::tempdir().unwrap();
    let qsl = digits_qsl(dir.path());
    let sut = GrpcSut::connect(config, lookup("digits-cnn").unwrap(), qsl.store())?;
    let (tx, rx) = mpsc::channel();
    let sink = ResponseSink::new(Arc::new(Collect(Mutex::new(tx))));
    let samples = vec![
        QuerySample { id: 1, index: 4 },
        QuerySample { id: 2, index: 7 },
    ];
    sut.issue_query(samples, sink);
    let got = wait_for(&rx, 2);
    assert_eq!(got[0].error, None);
    assert_eq!((as_class(&got[0].data), as_class(&got[1].data)), (4.0, 7.0));
    Ok(())
}

#[test]
fn tls_with_the_ca_works_and_the_token_goes_with_every_rpc() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let fake = Arc::new(Fake::default());
    *fake.token.lock().unwrap() = Some("tok-123".into());
    let (_server, addr) = serve(Arc::clone(&fake), Some(pki.server_tls(false)));
    let endpoint = format!("https://127.0.0.1:{}", addr.port());

    let mut security = tls(Some(&pki.ca), None, None);
    security.token = Some("tok-123".into());
    infer_works(&config(endpoint.clone(), security.clone())).unwrap();
    // The host name works as well as the address.
    infer_works(&config(
        format!("https://localhost:{}", addr.port()),
        security.clone(),
    ))
    .unwrap();
    // ModelConfig (read for quantized profiles) carries it too.
    let quantization = grpc_sut::input_quantization(
        &endpoint,
        &security,
        "digits",
        "input",
        Duration::from_secs(5),
    );
    assert_eq!(quantization.unwrap(), None, "the fake has no ModelConfig");
    let seen = fake.authorizations.lock().unwrap().clone();
    for call in [
        "server_ready",
        "model_ready",
        "model_metadata",
        "model_infer",
        "model_config",
    ] {
        assert!(
            seen.iter().any(|(c, _)| *c == call),
            "no {call} in {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .all(|(_, auth)| auth.as_deref() == Some("Bearer tok-123")),
        "{seen:?}"
    );

    // Without the token the server refuses at the first check, and the error says what to do.
    let no_token = Security {
        token: None,
        ..security.clone()
    };
    let err = infer_works(&config(endpoint.clone(), no_token.clone())).unwrap_err();
    assert!(matches!(err, GrpcSutError::Unauthenticated { .. }), "{err}");
    assert!(
        err.to_string().contains("--token or LOADGEN_TOKEN"),
        "{err}"
    );
    let err = grpc_sut::input_quantization(
        &endpoint,
        &no_token,
        "digits",
        "input",
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            GrpcSutError::Unauthenticated {
                call: "ModelConfig",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_wrong_ca_or_a_scheme_mismatch_fails_clearly() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let fake = Arc::new(Fake::default());
    let (_tls_server, tls_addr) = serve(Arc::clone(&fake), Some(pki.server_tls(false)));
    let https = format!("https://127.0.0.1:{}", tls_addr.port());

    let err =
        infer_works(&config(https.clone(), tls(Some(&pki.other_ca), None, None))).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, GrpcSutError::TlsHandshake { .. }), "{text}");
    assert!(
        text.contains(&format!("cannot open a TLS connection to {https}"))
            && text.contains("--tls-ca")
            && text.to_ascii_lowercase().contains("unknownissuer"),
        "{text}"
    );
    // The system's roots do not know the test's CA either.
    match infer_works(&config(https.clone(), Security::default())).unwrap_err() {
        GrpcSutError::TlsHandshake { .. } | GrpcSutError::Security { .. } => {}
        other => panic!("{other}"),
    }

    // Plaintext to the TLS server: not a hang, an error that points at https://.
    let http = format!("http://127.0.0.1:{}", tls_addr.port());
    let err = infer_works(&config(http.clone(), Security::default())).unwrap_err();
    assert!(
        err.to_string().contains("it needs an https:// endpoint"),
        "{err}"
    );
    // TLS options on a plaintext endpoint are refused before connecting.
    let err = infer_works(&config(http, tls(Some(&pki.ca), None, None))).unwrap_err();
    assert!(matches!(err, GrpcSutError::TlsOnPlaintext { .. }), "{err}");

    // TLS to a plaintext server.
    let (_plain_server, plain_addr) = serve(Arc::clone(&fake), None);
    let err = infer_works(&config(
        format!("https://127.0.0.1:{}", plain_addr.port()),
        tls(Some(&pki.ca), None, None),
    ))
    .unwrap_err();
    assert!(matches!(err, GrpcSutError::TlsHandshake { .. }), "{err}");
    assert!(
        fake.calls().is_empty(),
        "no RPC reached the server: {:?}",
        fake.calls()
    );
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let fake = Arc::new(Fake::default());
    let (_server, addr) = serve(Arc::clone(&fake), Some(pki.server_tls(true)));
    let endpoint = format!("https://127.0.0.1:{}", addr.port());

    let err = infer_works(&config(endpoint.clone(), tls(Some(&pki.ca), None, None))).unwrap_err();
    let text = err.to_string();
    // TLS 1.3: the client learns of the rejection at its first read, in ServerReady.
    assert!(
        (text.contains("cannot open a TLS connection") || text.contains("ServerReady failed"))
            && text.contains("--tls-cert and --tls-key"),
        "{text}"
    );
    assert!(!fake.calls().contains(&"model_infer"));
    infer_works(&config(
        endpoint,
        tls(
            Some(&pki.ca),
            Some((&pki.client_cert, &pki.client_key)),
            None,
        ),
    ))
    .unwrap();
}

#[test]
fn tls_server_name_overrides_the_host_checked() {
    let pki = Pki::new(&["inference.test"]);
    let (_server, addr) = serve(Arc::new(Fake::default()), Some(pki.server_tls(false)));
    let endpoint = format!("https://127.0.0.1:{}", addr.port());
    let err = infer_works(&config(endpoint.clone(), tls(Some(&pki.ca), None, None))).unwrap_err();
    assert!(matches!(err, GrpcSutError::TlsHandshake { .. }), "{err}");
    assert!(err.to_string().contains("--tls-server-name"), "{err}");
    infer_works(&config(
        endpoint,
        tls(Some(&pki.ca), None, Some("inference.test")),
    ))
    .unwrap();
}

fn run_cli(args: &[&str], cwd: &Path, token: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen-client"));
    command
        .args(args)
        .current_dir(cwd)
        .env("LOADGEN_RESULTS_DB", "off")
        .env_remove("LOADGEN_TOKEN");
    if let Some(token) = token {
        command.env("LOADGEN_TOKEN", token);
    }
    command.output().expect("the binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A short SingleStream run of the digits profile on synthetic data.
fn short_run<'a>(endpoint: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "--profile",
        "digits-cnn",
        "--model",
        "digits",
        "--dataset",
        "synthetic",
        "--count",
        "10",
        "--endpoint",
        endpoint,
        "--server-metrics",
        "off",
        "--scenario",
        "SingleStream",
        "--time",
        "0.1",
        "--output-dir",
        out,
    ]
}

#[test]
fn the_client_runs_over_tls_with_the_token_from_the_environment() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let fake = Arc::new(Fake::default());
    *fake.token.lock().unwrap() = Some("env-token".into());
    let (_server, addr) = serve(Arc::clone(&fake), Some(pki.server_tls(true)));
    let endpoint = format!("https://127.0.0.1:{}", addr.port());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = short_run(&endpoint, out.to_str().unwrap());
    let files = [
        pki.ca.to_str().unwrap(),
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    ];
    args.extend([
        "--tls-ca",
        files[0],
        "--tls-cert",
        files[1],
        "--tls-key",
        files[2],
    ]);
    let run = run_cli(&args, dir.path(), Some("env-token"));
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let summary = std::fs::read_to_string(out.join("mlperf_log_summary.txt")).unwrap();
    assert!(
        summary.contains("\nretries: 0 (RESOURCE_EXHAUSTED)\n"),
        "{summary}"
    );
    assert!(
        summary.contains("\nNo errors encountered during test.\n"),
        "{summary}"
    );
    let detail = std::fs::read_to_string(out.join("mlperf_log_detail.txt")).unwrap();
    assert!(
        detail.contains(r#""key": "client_retries", "value": {"max_retries_per_request":3,"requests_refused_after_retries":0,"resource_exhausted_retries":0}"#),
        "{detail}"
    );
    let seen = fake.authorizations.lock().unwrap().clone();
    assert!(seen.iter().filter(|(c, _)| *c == "model_infer").count() >= 100);
    assert!(
        seen.iter()
            .all(|(_, auth)| auth.as_deref() == Some("Bearer env-token")),
        "{:?}",
        &seen[..3]
    );

    // A wrong token: refused before timing starts, exit 1, with the hint.
    let run = run_cli(&args, dir.path(), Some("wrong"));
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(
        text(&run).contains("--token or LOADGEN_TOKEN"),
        "{}",
        text(&run)
    );
}

#[test]
fn tls_options_are_checked_before_anything_runs() {
    let pki = Pki::new(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--endpoint", "http://127.0.0.1:1", "--tls-ca", ca],
            "--tls-ca needs https:// endpoints, and --endpoint http://127.0.0.1:1 is not one",
        ),
        (
            vec!["--endpoint", "127.0.0.1:1", "--tls-server-name", "x"],
            "--tls-server-name needs https:// endpoints",
        ),
        (
            vec![
                "--endpoint",
                "https://127.0.0.1:1",
                "--tls-ca",
                "/nonexistent/ca.pem",
            ],
            "cannot read --tls-ca /nonexistent/ca.pem",
        ),
        (
            vec!["--endpoint", "https://127.0.0.1:1", "--tls-cert", ca],
            "--tls-key",
        ),
        (
            vec!["--endpoint", "https://127.0.0.1:1", "--token", "two words"],
            "--token: a bearer token must be visible ASCII",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = short_run("x", out);
        args.truncate(8); // profile, model, dataset, count
        args.extend(extra.iter().copied());
        let run = run_cli(&args, dir.path(), None);
        let text = text(&run);
        assert_eq!(run.status.code(), Some(2), "{extra:?}: {text}");
        assert!(text.contains(expected), "{extra:?}: {text}");
    }
    // An https:// endpoint without --tls-ca where the system has no roots either.
    let mut args = short_run("https://127.0.0.1:1", out);
    args.truncate(10);
    let run = Command::new(env!("CARGO_BIN_EXE_loadgen-client"))
        .args(&args)
        .current_dir(dir.path())
        .env("LOADGEN_RESULTS_DB", "off")
        .env("SSL_CERT_FILE", dir.path().join("no-such-bundle.pem"))
        .env("SSL_CERT_DIR", dir.path().join("no-such-dir"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(
        text(&run).contains("no CA certificates to check the server's certificate with")
            && text(&run).contains("pass --tls-ca FILE"),
        "{}",
        text(&run)
    );
    assert!(!dir.path().join("output").exists(), "nothing ran");
}

#[test]
fn retries_are_bounded_counted_and_the_run_is_invalid() {
    let fake = Arc::new(Fake::default());
    fake.refuse.store(usize::MAX / 2, Ordering::SeqCst);
    let (_server, addr) = serve(Arc::clone(&fake), None);
    let endpoint = format!("http://127.0.0.1:{}", addr.port());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = short_run(&endpoint, out.to_str().unwrap());
    args.extend(["--retries", "2"]);
    let run = run_cli(&args, dir.path(), None);
    let all = text(&run);
    assert_eq!(run.status.code(), Some(3), "{all}");
    assert!(all.contains("the result is INVALID"), "{all}");
    let summary = std::fs::read_to_string(out.join("mlperf_log_summary.txt")).unwrap();
    let failed = fake.batches.lock().unwrap().len() / 3;
    assert!(failed >= 100, "SingleStream ran its 100 queries: {failed}");
    for part in [
        "\nResult is : INVALID\n".to_string(),
        format!("  All samples succeeded : NO ({failed} of {failed} failed)\n"),
        format!(" * {failed} samples failed: ModelInfer failed: "),
        "queue is full (refused after 2 retries)\n".to_string(),
        format!("\nretries: {} (RESOURCE_EXHAUSTED)\n", 2 * failed),
        format!("Requests refused after the last retry : {failed}\n"),
        "Retry policy : up to 2 per request (--retries), back-off 5 ms doubling to 200 ms\n"
            .to_string(),
    ] {
        assert!(
            summary.contains(&part),
            "summary lacks {part:?}:\n{summary}"
        );
    }
    let detail = std::fs::read_to_string(out.join("mlperf_log_detail.txt")).unwrap();
    let line = detail
        .lines()
        .find(|l| l.contains(r#""key": "client_retries""#))
        .expect("a client_retries line");
    let entry: serde_json::Value = serde_json::from_str(&line[8..]).unwrap();
    assert_eq!(entry["value"]["resource_exhausted_retries"], 2 * failed);
    assert_eq!(entry["metadata"]["is_warning"], true);
    assert!(detail.contains(r#""key": "result_validity", "value": "INVALID""#));
}

/// Serves one fixed /metrics page over TLS (HTTP/1.1, a connection per request) until dropped.
fn tls_metrics_server(pki: &Pki, page: &'static str) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};

    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.server.0.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(connection) = rustls::ServerConnection::new(Arc::clone(&config)) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = tls.write_all(answer.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    addr
}

#[test]
fn https_metrics_are_scraped_with_the_same_ca() {
    use loadgen::observer::RunObserver;
    use loadgen_client::telemetry::{Monitor, ScrapeAccess, Verdict};

    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let page = "# TYPE inference_soc_temperature_celsius gauge\n\
                inference_soc_temperature_celsius{zone=\"thermal_zone0\",type=\"cpu-thermal\"} 48.5\n";
    let addr = tls_metrics_server(&pki, page);
    let url = format!("https://127.0.0.1:{}/metrics", addr.port());
    let scrape = |ca: &Path| {
        let options = TlsOptions::load(Some(ca), None, None).unwrap();
        let access = ScrapeAccess {
            tls: Some(options.ureq_config().unwrap()),
            token: None,
        };
        let monitor = Monitor::new(std::slice::from_ref(&url), Duration::from_secs(60), access);
        let started = monitor.started();
        monitor.finished();
        (started[0].json.clone(), monitor.verdict())
    };
    let (line, verdict) = scrape(&pki.ca);
    assert!(line.contains("48.5"), "{line}");
    assert_eq!(verdict, Verdict::Clean);
    let (line, verdict) = scrape(&pki.other_ca);
    assert!(
        line.contains("error") && line.to_ascii_lowercase().contains("unknownissuer"),
        "{line}"
    );
    assert!(matches!(verdict, Verdict::Unchecked(_)), "{verdict:?}");
}
