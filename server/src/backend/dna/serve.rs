//! The DNA worker process (`inference-server dna-worker`, started by [`super::worker`]): reads
//! requests from stdin and answers on what was stdout. Standard output is moved to standard
//! error first, so that nothing the vendor libraries print can corrupt the protocol.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::FromRawFd;
use std::path::Path;

use super::graph::{self, GraphSignature};
use super::protocol::{read_frame, write_frame, FailureKind, Request, Response};
use super::tvm::{Deployment, TvmLibrary};

/// Runs the worker until its stdin closes; returns the process exit status.
pub fn run() -> u8 {
    // SAFETY: dup and dup2 on the process's own standard descriptors, before any other thread
    // uses them.
    let protocol_fd = unsafe { libc::dup(libc::STDOUT_FILENO) };
    if protocol_fd < 0 || unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        eprintln!(
            "dna-worker: cannot set up its output: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    // SAFETY: `protocol_fd` is a descriptor this process just opened and owns.
    let mut out = BufWriter::new(unsafe { File::from_raw_fd(protocol_fd) });
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut worker = Worker::default();
    loop {
        let (request, blobs): (Request, Vec<Vec<u8>>) = match read_frame(&mut input) {
            Ok(Some(frame)) => frame,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("dna-worker: {e}");
                return 1;
            }
        };
        let (response, outputs) = worker.handle(request, blobs);
        let refs: Vec<&[u8]> = outputs.iter().map(Vec::as_slice).collect();
        if let Err(e) = write_frame(&mut out, &response, &refs) {
            eprintln!("dna-worker: cannot answer: {e}");
            return 1;
        }
    }
}

/// What the worker holds: its one deployment (the server starts a worker per deployment, and a
/// new one after a failed load), with the library it was loaded with kept for the process's life.
#[derive(Default)]
struct Worker {
    deployment: Option<(Deployment<'static>, GraphSignature)>,
}

fn failed(kind: FailureKind, message: String) -> (Response, Vec<Vec<u8>>) {
    (Response::Failed { kind, message }, Vec::new())
}

impl Worker {
    fn handle(&mut self, request: Request, blobs: Vec<Vec<u8>>) -> (Response, Vec<Vec<u8>>) {
        match request {
            Request::Load {
                dir,
                library,
                device_code,
            } => self.load(Path::new(&dir), Path::new(&library), device_code),
            Request::Infer => self.infer(&blobs),
        }
    }

    fn load(&mut self, dir: &Path, library: &Path, device_code: i64) -> (Response, Vec<Vec<u8>>) {
        let tvm: &'static TvmLibrary = match TvmLibrary::open(library) {
            Ok(tvm) => Box::leak(Box::new(tvm)),
            Err(e) => return failed(FailureKind::Library, e),
        };
        let (json, params) = match graph::read_files(dir) {
            Ok(files) => files,
            Err(e) => return failed(FailureKind::Model, e),
        };
        let signature = match graph::parse(&json, &params, &[]) {
            Ok(signature) => signature,
            Err(e) => return failed(FailureKind::Model, e),
        };
        match Deployment::load(tvm, dir, &json, &params, device_code) {
            Ok(deployment) => {
                self.deployment = Some((deployment, signature));
                (Response::Loaded, Vec::new())
            }
            Err((true, e)) => failed(FailureKind::Device, e),
            Err((false, e)) => failed(FailureKind::Model, e),
        }
    }

    /// Runs on the inputs in graph order (the server checked their types and shapes).
    fn infer(&mut self, blobs: &[Vec<u8>]) -> (Response, Vec<Vec<u8>>) {
        let Some((deployment, signature)) = &self.deployment else {
            return failed(FailureKind::Internal, "no deployment is loaded".into());
        };
        if blobs.len() != signature.inputs.len() {
            return failed(
                FailureKind::Internal,
                format!(
                    "{} inputs for a {}-input graph",
                    blobs.len(),
                    signature.inputs.len()
                ),
            );
        }
        let bound: Vec<_> = signature
            .inputs
            .iter()
            .zip(blobs)
            .map(|(spec, blob)| (spec, blob.as_slice()))
            .collect();
        match deployment.infer(&bound, &signature.outputs) {
            Ok(outputs) => (
                Response::Outputs {
                    runtime_metrics: deployment.runtime_metrics(),
                },
                outputs,
            ),
            Err(e) => failed(FailureKind::Internal, e),
        }
    }
}
