//! The DNA worker process (`inference-server dna-worker`, started by [`super::worker`]): reads
//! requests from stdin and answers on what was stdout. Standard output is moved to standard
//! error first, so that nothing the vendor libraries print can corrupt the protocol.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::FromRawFd;
use std::path::Path;

use super::graph::{self, GraphSignature};
use super::protocol::{read_frame, write_frame, FailureKind, Request, Response, TensorHeader};
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

/// What the worker holds: the library (for the process's life) and one deployment.
#[derive(Default)]
struct Worker {
    library: Option<&'static TvmLibrary>,
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
            Request::Infer { inputs } => self.infer(&inputs, &blobs),
        }
    }

    fn load(&mut self, dir: &Path, library: &Path, device_code: i64) -> (Response, Vec<Vec<u8>>) {
        if self.deployment.is_some() {
            return failed(
                FailureKind::Internal,
                "a deployment is already loaded".into(),
            );
        }
        let tvm = match self.library {
            Some(tvm) => tvm,
            None => match TvmLibrary::open(library) {
                // The library stays loaded for the process's life.
                Ok(tvm) => *self.library.insert(Box::leak(Box::new(tvm))),
                Err(e) => return failed(FailureKind::Library, e),
            },
        };
        let signature = match graph::read(dir, &[]) {
            Ok(signature) => signature,
            Err(e) => return failed(FailureKind::Model, e),
        };
        match Deployment::load(tvm, dir, device_code) {
            Ok(deployment) => {
                let offloaded = deployment.offloaded;
                self.deployment = Some((deployment, signature));
                (Response::Loaded { offloaded }, Vec::new())
            }
            Err((true, e)) => failed(FailureKind::Device, e),
            Err((false, e)) => failed(FailureKind::Model, e),
        }
    }

    fn infer(&mut self, inputs: &[TensorHeader], blobs: &[Vec<u8>]) -> (Response, Vec<Vec<u8>>) {
        let Some((deployment, signature)) = &self.deployment else {
            return failed(FailureKind::Internal, "no deployment is loaded".into());
        };
        if inputs.len() != blobs.len() {
            return failed(FailureKind::Internal, "inputs and blobs disagree".into());
        }
        let mut bound = Vec::new();
        for spec in &signature.inputs {
            let Some(i) = inputs.iter().position(|t| t.name == spec.name) else {
                return failed(FailureKind::Input, format!("no input '{}'", spec.name));
            };
            if inputs[i].dtype != spec.dtype || inputs[i].shape != spec.dims {
                return failed(
                    FailureKind::Input,
                    format!(
                        "input '{}' must be {} {:?}, got {} {:?}",
                        spec.name, spec.dtype, spec.dims, inputs[i].dtype, inputs[i].shape
                    ),
                );
            }
            bound.push((spec, blobs[i].as_slice()));
        }
        match deployment.infer(&bound, &signature.outputs) {
            Ok(outputs) => {
                let headers = signature
                    .outputs
                    .iter()
                    .map(|o| TensorHeader {
                        name: o.name.clone(),
                        dtype: o.dtype.clone(),
                        shape: o.dims.clone(),
                    })
                    .collect();
                (
                    Response::Outputs {
                        outputs: headers,
                        runtime_metrics: deployment.runtime_metrics(),
                    },
                    outputs,
                )
            }
            Err(e) => failed(FailureKind::Internal, e),
        }
    }
}
