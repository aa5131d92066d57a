//! Helpers for the service tests: generated ONNX models, throw-away model repositories, and the
//! real `inference-server` binary started on loopback ports with a gRPC client to it.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use inference_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use inference_proto::inference::ServerReadyRequest;
use tonic::transport::Channel;

/// The workspace root (the server crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent")
        .to_path_buf()
}

/// The Python with numpy and onnx: the workspace's `.venv`, else `python3`.
pub fn python() -> PathBuf {
    let venv = workspace_root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Folder with every generated test model (`affine.onnx`, `identity_types.onnx`, `two_io.onnx`,
/// `unbatched.onnx`, ...), made once per test binary.
pub fn models_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("service-models-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        for script in ["make_test_models.py", "make_service_test_models.py"] {
            let output = Command::new(python())
                .arg(workspace_root().join("scripts").join(script))
                .arg(dir.path())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
            assert!(
                output.status.success(),
                "{script} failed (needs numpy and onnx: pip install -r scripts/requirements.txt):\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        dir
    })
    .path()
}

/// A model repository in a temporary folder.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Self {
        Repo {
            dir: tempfile::Builder::new()
                .prefix("repo-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Adds `name` version 1 from the generated model `onnx`, with `config` as its config.toml.
    pub fn model(self, name: &str, onnx: &str, config: &str) -> Self {
        self.version(name, 1, onnx)
            .file(&format!("{name}/config.toml"), config.as_bytes())
    }

    /// Adds version `version` of `name` from the generated model `onnx`.
    pub fn version(self, name: &str, version: u64, onnx: &str) -> Self {
        let dir = self.path().join(name).join(version.to_string());
        std::fs::create_dir_all(&dir).expect("create version folder");
        std::fs::copy(models_dir().join(onnx), dir.join("model.onnx")).expect("copy model");
        self
    }

    /// Writes any file under the repository.
    pub fn file(self, relative: &str, contents: &[u8]) -> Self {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("create folder");
        std::fs::write(path, contents).expect("write file");
        self
    }
}

/// A loopback port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Path of the server binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_inference-server")
}

/// A running `inference-server` process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the binary on free loopback ports serving `repo`, and waits until it is ready.
    pub async fn start(repo: &Path, extra_args: &[&str]) -> Self {
        Self::start_with(repo, extra_args, &[]).await
    }

    /// Like [`Server::start`], with extra environment variables.
    pub async fn start_with(repo: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let grpc_addr = free_addr();
        let metrics_addr = free_addr();
        let mut args = vec![
            "--model-repository".to_string(),
            repo.display().to_string(),
            "--grpc-addr".to_string(),
            grpc_addr.to_string(),
            "--metrics-addr".to_string(),
            metrics_addr.to_string(),
        ];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        Self::launch(&args, env, grpc_addr, metrics_addr).await
    }

    /// Starts the binary with exactly `args` (JSON logs added) and waits until it is ready on
    /// `grpc_addr`.
    pub async fn launch(
        args: &[String],
        env: &[(&str, &str)],
        grpc_addr: SocketAddr,
        metrics_addr: SocketAddr,
    ) -> Self {
        let mut child = Command::new(binary())
            .args(args)
            .arg("--log-format=json")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start inference-server");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut server = Server {
            child,
            grpc_addr,
            metrics_addr,
            log,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited early with {status}:\n{}", self.log());
            }
            if let Ok(mut client) = self.try_client().await {
                if let Ok(ready) = client.server_ready(ServerReadyRequest {}).await {
                    if ready.into_inner().ready {
                        return;
                    }
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "server not ready after 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_client(
        &self,
    ) -> Result<GrpcInferenceServiceClient<Channel>, tonic::transport::Error> {
        let channel = self.channel().await?;
        Ok(GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    /// A channel to the gRPC port.
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("valid uri")
            .connect()
            .await
    }

    /// A KServe client connected to the server.
    pub async fn client(&self) -> GrpcInferenceServiceClient<Channel> {
        self.try_client().await.expect("connect to server")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `signal` (e.g. `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "server still running after {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET `/metrics` as text.
    pub async fn metrics(&self) -> String {
        http_get(self.metrics_addr, "/metrics").await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.to_string()
}

/// Runs the binary to completion with `args`; returns (exit code, stdout, stderr).
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run inference-server");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// FP32 values as raw little-endian bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Raw little-endian bytes as FP32 values.
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
