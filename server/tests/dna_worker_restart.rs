//! A DNA instance whose worker process is killed: the run in flight fails as the device's, with
//! the signal in the reason; the health check refuses until the back-off has passed, then starts
//! a new worker, and the instance serves again. Alone in its test binary, so the only DNA worker
//! among this process's children is the one under test.

mod common;

use std::time::{Duration, Instant};

use common::{dna_environment, f32_tensor, f32_values, load_backend_with};
use inference_server::backend::BackendError;

/// The DNA workers among this process's children, from /proc.
fn workers() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: the fields after the last ')'.
        let parent = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1));
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if parent == Some(me.as_str()) && String::from_utf8_lossy(&cmdline).contains("dna-worker") {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_killed_worker_is_reported_and_replaced_after_the_back_off() {
    let (deployments, libraries) = dna_environment();
    let mut backend = load_backend_with(
        "backend = \"dna\"\ndevice = \"cpu\"\n[dna]\ntarget = \"Interpreter\"\n",
        &deployments.join("interpreter/affine/deploy.so"),
        1,
        &libraries,
    )
    .expect("loads");
    let run = |backend: &mut Box<dyn inference_server::backend::Backend>| {
        backend.infer(vec![f32_tensor("x", &[1, 4], &[1.0, 2.0, 3.0, 4.0])])
    };
    assert_eq!(
        f32_values(&run(&mut backend).expect("runs")[0]),
        [3.0, 5.0, 7.0, 9.0]
    );
    assert!(backend.health().is_ok());

    let pids = workers();
    assert_eq!(pids.len(), 1, "one worker: {pids:?}");
    std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .expect("kill runs");
    let killed = Instant::now();
    match run(&mut backend) {
        Err(BackendError::DeviceUnavailable { reason, .. }) => {
            assert!(reason.contains("the DNA worker process died"), "{reason}");
            assert!(reason.contains("SIGKILL"), "{reason}");
        }
        other => panic!("expected DeviceUnavailable, got {other:?}"),
    }
    match backend.health() {
        Err(BackendError::DeviceUnavailable { reason, .. }) => {
            assert!(reason.contains("a new worker starts in"), "{reason}");
        }
        other => panic!("the back-off should refuse a start yet, got {other:?}"),
    }
    // The first back-off is a second.
    std::thread::sleep(
        Duration::from_secs(1).saturating_sub(killed.elapsed()) + Duration::from_millis(100),
    );
    backend.health().expect("a new worker started");
    assert_eq!(
        f32_values(&run(&mut backend).expect("serves again")[0]),
        [3.0, 5.0, 7.0, 9.0]
    );
    assert_eq!(workers().len(), 1, "the dead worker was reaped, one runs");
}
