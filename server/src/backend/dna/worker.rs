//! The server's side of a DNA worker process: starting it (under the configured loader and
//! library path), asking it, and telling why it died. One worker per model instance, so a
//! vendor abort or crash takes down that instance's process only.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::protocol::{read_frame, write_frame, FailureKind, Request, Response};
use crate::backend::BackendError;

/// Lines of the worker's standard error kept for the reason it died.
const STDERR_TAIL: usize = 12;

/// How to start a worker for one deployment.
#[derive(Debug)]
pub struct WorkerCommand {
    /// The inference-server binary that runs `dna-worker`.
    pub program: PathBuf,
    /// A dynamic loader to start it with (`ld-linux-x86-64.so.2`), for a private C++ runtime.
    pub loader: Option<PathBuf>,
    /// Folders searched for shared libraries first (the loader's `--library-path`, else
    /// `LD_LIBRARY_PATH`).
    pub library_path: Vec<PathBuf>,
}

/// The deployment a worker loads.
#[derive(Debug)]
pub struct WorkerLoad {
    pub dir: PathBuf,
    pub library: PathBuf,
    pub device_code: i64,
}

/// A running worker with its deployment loaded.
pub struct Worker {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// The thread reading standard error: done once the worker's last line is in the tail.
    stderr_reader: std::thread::JoinHandle<()>,
}

/// The worker is gone: what its exit status and last lines say.
#[derive(Debug)]
pub struct Died(pub String);

impl Worker {
    /// Starts a worker and loads the deployment; the errors are the load's.
    pub fn start(
        command: &WorkerCommand,
        load: &WorkerLoad,
        device: &str,
    ) -> Result<Self, BackendError> {
        let mut cmd = match &command.loader {
            Some(loader) => {
                let mut cmd = Command::new(loader);
                if !command.library_path.is_empty() {
                    cmd.arg("--library-path").arg(join(&command.library_path));
                }
                cmd.arg(&command.program);
                cmd
            }
            None => {
                let mut cmd = Command::new(&command.program);
                if !command.library_path.is_empty() {
                    cmd.env("LD_LIBRARY_PATH", join(&command.library_path));
                }
                cmd
            }
        };
        cmd.arg("dna-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            BackendError::LibraryUnavailable(format!(
                "cannot start the DNA worker ({}): {e}",
                describe(&cmd)
            ))
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(BackendError::Internal("the DNA worker has no pipes".into()));
        };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        let stderr_reader = std::thread::Builder::new()
            .name("dna-worker-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    tracing::warn!(target: "dna_worker", "{line}");
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            })
            .map_err(|e| BackendError::Internal(format!("cannot start a thread: {e}")))?;
        let mut worker = Worker {
            child,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::new(stdout),
            stderr_tail,
            stderr_reader,
        };
        let request = Request::Load {
            dir: load.dir.display().to_string(),
            library: load.library.display().to_string(),
            device_code: load.device_code,
        };
        let died = |Died(reason)| BackendError::DeviceUnavailable {
            device: device.to_string(),
            reason: format!("the DNA worker died while loading the deployment: {reason}"),
        };
        match worker.call(&request, &[]).map_err(died)? {
            (Response::Loaded, _) => Ok(worker),
            (Response::Failed { kind, message }, _) => Err(match kind {
                FailureKind::Library => BackendError::LibraryUnavailable(message),
                FailureKind::Model => BackendError::InvalidModel {
                    path: load.dir.display().to_string(),
                    reason: message,
                },
                FailureKind::Device => BackendError::DeviceUnavailable {
                    device: device.to_string(),
                    reason: message,
                },
                FailureKind::Internal => BackendError::Internal(message),
            }),
            (other, _) => Err(BackendError::Internal(format!(
                "the DNA worker answered {other:?} to a load"
            ))),
        }
    }

    /// Sends one request and reads its answer; `Died` when the worker is gone.
    pub fn call(
        &mut self,
        request: &Request,
        blobs: &[&[u8]],
    ) -> Result<(Response, Vec<Vec<u8>>), Died> {
        let sent = write_frame(&mut self.stdin, request, blobs);
        let answer = match sent {
            Ok(()) => read_frame(&mut self.stdout),
            Err(e) => Err(e),
        };
        match answer {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(self.death("it closed its output")),
            Err(e) => Err(self.death(&e.to_string())),
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Why the worker is gone: its exit status (after up to a second) and its last lines.
    fn death(&mut self, what: &str) -> Died {
        let deadline = Instant::now() + Duration::from_secs(1);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        // The stderr thread reads to the end of the dead worker's output; wait for it a little
        // (anything the worker started could still hold the pipe open).
        let deadline = Instant::now() + Duration::from_millis(500);
        while !self.stderr_reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        // glog's CHECK failure prints the reason, then a banner and the stack.
        let last = tail.iter().rev().map(|l| l.trim()).find(|l| {
            !l.is_empty() && !l.starts_with('@') && !l.contains("*** Check failure stack trace")
        });
        Died(format!(
            "{}{}{}",
            status.map_or_else(|| "it is gone".to_string(), describe_status),
            if what.is_empty() {
                String::new()
            } else {
                format!(" ({what})")
            },
            last.map(|l| format!("; its last words: {l}"))
                .unwrap_or_default()
        ))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn join(paths: &[PathBuf]) -> std::ffi::OsString {
    std::env::join_paths(paths).unwrap_or_default()
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `killed by SIGABRT`, `exited with status 1`.
fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("it exited with status {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                libc::SIGABRT => "SIGABRT (an abort in the vendor library)",
                libc::SIGSEGV => "SIGSEGV (a crash in the vendor library)",
                libc::SIGKILL => "SIGKILL",
                libc::SIGTERM => "SIGTERM",
                libc::SIGBUS => "SIGBUS",
                libc::SIGILL => "SIGILL",
                _ => "a signal",
            };
            format!("it was killed by signal {signal}: {name}")
        }
        _ => "it ended".to_string(),
    }
}
