//! The command line of the real binary: `--check-repository` exit codes and messages, settings
//! precedence (flag > environment > config file), refusals of bad settings, and `devices`.

mod common;
mod service_support;

use inference_proto::inference::ServerReadyRequest;
use service_support::{free_addr, run_binary, Repo, Server};

#[test]
fn check_repository_accepts_a_good_repository() {
    let repo = Repo::new()
        .model(
            "affine",
            "affine.onnx",
            "max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 100\n",
        )
        .model(
            "declared",
            "two_io.onnx",
            "max_batch_size = 2\n[[input]]\nname = \"a\"\ndatatype = \"FP32\"\ndims = [3]\n",
        );
    let path = repo.path().display().to_string();
    let (code, stdout, stderr) = run_binary(&["--check-repository", &path], &[]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("repository OK"), "{stdout}");
}

#[test]
fn check_repository_lists_every_problem_with_file_and_field() {
    let repo = Repo::new()
        .model("good", "affine.onnx", "")
        .model(
            "typo",
            "affine.onnx",
            "max_batch_size = 4\n[dynamic_batching]\nmax_queue_delay = 5\n",
        )
        .model(
            "device",
            "affine.onnx",
            "device = \"quantum:0\"\ninstances = 0\n",
        )
        .model("versions", "affine.onnx", "versions = [1, 3]\n")
        .model("corrupt", "affine.onnx", "")
        .file("corrupt/1/model.onnx", b"not onnx")
        .model(
            "declared",
            "two_io.onnx",
            "[[input]]\nname = \"c\"\n[[output]]\nname = \"sum\"\ndatatype = \"INT8\"\n",
        )
        .file("noconfig/1/model.onnx", b"");
    let path = repo.path().display().to_string();
    let (code, stdout, stderr) = run_binary(&["--check-repository", &path], &[]);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    let expected = [
        ("typo/config.toml", "dynamic_batching.max_queue_delay"),
        ("device/config.toml", "device: unknown device 'quantum:0'"),
        ("device/config.toml", "instances: must be at least 1"),
        (
            "versions/config.toml",
            "versions: version folder(s) 3 do not exist",
        ),
        ("corrupt/1/model.onnx", "cannot load model"),
        ("declared/config.toml", "input[0].name"),
        (
            "declared/config.toml",
            "output[0].datatype: is INT8 but the model file says FP32",
        ),
        ("noconfig/config.toml", "cannot read"),
    ];
    for (file, field) in expected {
        assert!(
            stderr
                .lines()
                .any(|line| line.contains(file) && line.contains(field)),
            "no line naming {file} and '{field}' in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("model 'good'"), "{stderr}");
    assert!(stderr.contains("8 problem(s) found"), "{stderr}");

    let missing = repo.path().join("absent").display().to_string();
    let (code, _, stderr) = run_binary(&["--check-repository", &missing], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read model repository"), "{stderr}");
    let empty = Repo::new();
    let (code, _, stderr) = run_binary(
        &["--check-repository", &empty.path().display().to_string()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("no model folders"), "{stderr}");
}

#[test]
fn bad_settings_exit_with_status_2_and_say_what_to_fix() {
    let repo = Repo::new();
    let path = repo.path().display().to_string();
    let (code, _, stderr) = run_binary(&[], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--model-repository"), "{stderr}");

    let (code, _, stderr) = run_binary(
        &["--model-repository", &path, "--grpc-addr", "localhost"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("--grpc-addr"), "{stderr}");

    let (code, _, stderr) = run_binary(
        &["--model-repository", &path, "--log-level", "info,=[bad"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid --log-level"), "{stderr}");

    let config = repo.path().join("server.toml");
    std::fs::write(
        &config,
        "grpc_addr = \"127.0.0.1:1\"\nmax_mesage_size = 5\n",
    )
    .expect("write");
    let (code, _, stderr) = run_binary(&["--config", &config.display().to_string()], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("server.toml")
            && stderr.contains("max_mesage_size")
            && stderr.contains("line 2"),
        "{stderr}"
    );

    let (code, _, stderr) = run_binary(
        &["--model-repository", &path],
        &[("INFERENCE_SERVER_SHUTDOWN_GRACE", "soon")],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("--shutdown-grace"), "{stderr}");
}

#[test]
fn devices_lists_onnxruntime_cpu_with_its_version() {
    let (code, stdout, stderr) = run_binary(&["devices"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let cpu = stdout
        .lines()
        .find(|line| line.starts_with("onnxruntime") && line.contains(" cpu "))
        .unwrap_or_else(|| panic!("no onnxruntime cpu line in:\n{stdout}"));
    assert!(cpu.contains("1."), "no library version in '{cpu}'");
    assert!(stdout.lines().any(|l| l.contains("cuda:0")), "{stdout}");
    let openvino = stdout
        .lines()
        .find(|line| line.starts_with("openvino") && line.contains(" CPU "))
        .unwrap_or_else(|| panic!("no openvino CPU line in:\n{stdout}"));
    assert!(
        openvino.contains("available (version 20"),
        "no OpenVINO version in '{openvino}'"
    );
    let myriad = stdout
        .lines()
        .find(|line| line.starts_with("openvino") && line.contains("MYRIAD"))
        .unwrap_or_else(|| panic!("no MYRIAD line in:\n{stdout}"));
    assert!(myriad.contains("03e7:2485"), "{myriad}");

    let (code, stdout, _) = run_binary(
        &[
            "devices",
            "--runtime-library",
            "onnxruntime=/nonexistent/libonnxruntime.so",
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("/nonexistent/libonnxruntime.so") && stdout.contains("not found"),
        "explicit library path not reported:\n{stdout}"
    );
}

async fn is_ready(addr: std::net::SocketAddr) -> bool {
    let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
    else {
        return false;
    };
    let mut client =
        inference_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(
            channel,
        );
    client
        .server_ready(ServerReadyRequest {})
        .await
        .is_ok_and(|r| r.into_inner().ready)
}

#[tokio::test]
async fn flags_beat_environment_which_beats_the_config_file() {
    let repo = Repo::new().model("affine", "affine.onnx", "");
    let (file_addr, env_addr, flag_addr) = (free_addr(), free_addr(), free_addr());
    let config = repo.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "model_repository = \"{}\"\ngrpc_addr = \"{file_addr}\"\nmetrics_addr = \"{}\"\nhttp_addr = \"off\"\n",
            repo.path().display(),
            free_addr()
        ),
    )
    .expect("write config");
    let config = config.display().to_string();

    // Config file alone.
    let args = vec!["--config".to_string(), config.clone()];
    let server = Server::launch(&args, &[], file_addr, free_addr()).await;
    drop(server);

    // Environment beats the file.
    let env_value = env_addr.to_string();
    let env = [("INFERENCE_SERVER_GRPC_ADDR", env_value.as_str())];
    let server = Server::launch(&args, &env, env_addr, free_addr()).await;
    assert!(
        !is_ready(file_addr).await,
        "config file address used despite the environment"
    );
    drop(server);

    // The flag beats both.
    let mut with_flag = args.clone();
    with_flag.extend(["--grpc-addr".to_string(), flag_addr.to_string()]);
    let server = Server::launch(&with_flag, &env, flag_addr, free_addr()).await;
    assert!(
        !is_ready(env_addr).await,
        "environment address used despite the flag"
    );
    drop(server);
}
