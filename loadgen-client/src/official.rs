//! `--loadgen official`: the official MLPerf LoadGen (mlcommons-loadgen 6.0.17's C++ sources,
//! built with `official/shim.cc` into `libmlperf_loadgen_official.so` by
//! `scripts/build_official_loadgen.sh`), loaded at run time and driving the same [`Sut`] and
//! [`Qsl`] as the built-in LoadGen. The official code parses the conf files, schedules the
//! queries and writes the `mlperf_log_*` files itself; this module only passes the callbacks.
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Instant;

use loadgen::sut::CompletionHandler;
use loadgen::{
    Overrides, Qsl, QuerySample, ResponseSink, SampleResponse, Sut, TestMode, TestScenario,
};

/// The library's file name.
pub const LIBRARY_NAME: &str = "libmlperf_loadgen_official.so";
/// The environment variable naming the library (`--official-library`'s).
pub const LIBRARY_ENV: &str = "LOADGEN_OFFICIAL_LIBRARY";
/// The LoadGen release the shim is built from and this client's settings follow.
pub const EXPECTED_VERSION: &str = "6.0.17";

/// Why the official LoadGen could not run a test.
#[derive(Debug, thiserror::Error)]
pub enum OfficialError {
    #[error(
        "the official LoadGen is not built (no {searched}): run scripts/build_official_loadgen.sh \
         (g++ and the mlcommons-loadgen {EXPECTED_VERSION} sdist from PyPI), or name the library \
         with --official-library or {LIBRARY_ENV}"
    )]
    NotBuilt { searched: String },
    #[error("cannot load the official LoadGen library {path}: {error}")]
    Load {
        path: PathBuf,
        error: libloading::Error,
    },
    #[error(
        "{path} is not loadgen-client's official LoadGen library (no {symbol}): rebuild it with \
         scripts/build_official_loadgen.sh"
    )]
    NotTheShim { path: PathBuf, symbol: &'static str },
    #[error(
        "{path} is LoadGen {found}, and loadgen-client follows {EXPECTED_VERSION}: rebuild it with \
         scripts/build_official_loadgen.sh"
    )]
    Version { path: PathBuf, found: String },
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    #[error("cannot create the output folder {path}: {error}")]
    OutputDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the official LoadGen failed: {0}")]
    Failed(String),
}

/// `struct LgoSample` (shim.cc): mlperf::QuerySample's layout.
#[repr(C)]
struct RawSample {
    id: u64,
    index: u64,
}

/// `struct LgoResponse` (shim.cc).
#[repr(C)]
struct RawResponse {
    id: u64,
    data: *const u8,
    size: u64,
}

/// `struct LgoCallbacks` (shim.cc).
#[repr(C)]
struct Callbacks {
    context: usize,
    issue_query: extern "C" fn(usize, *const RawSample, usize),
    flush_queries: extern "C" fn(usize),
    load_samples: extern "C" fn(usize, *const u64, usize),
    unload_samples: extern "C" fn(usize, *const u64, usize),
}

/// `struct LgoTest` (shim.cc).
#[repr(C)]
struct RawTest {
    scenario: i32,
    model: *const c_char,
    user_conf: *const c_char,
    audit_config: *const c_char,
    outdir: *const c_char,
    enable_trace: u8,
    sut_name: *const c_char,
    qsl_name: *const c_char,
    total_sample_count: u64,
    performance_sample_count: u64,
    has_mode: u8,
    mode: i32,
    has_target_qps: u8,
    target_qps: f64,
    has_target_latency_ns: u8,
    target_latency_ns: u64,
    has_min_duration_ms: u8,
    min_duration_ms: u64,
    has_samples_per_query: u8,
    samples_per_query: u64,
    has_performance_sample_count_override: u8,
    performance_sample_count_override: u64,
}

type VersionFn = unsafe extern "C" fn() -> *const c_char;
type StartTestFn =
    unsafe extern "C" fn(*const RawTest, *const Callbacks, *mut c_char, usize) -> i32;
type CompleteFn = unsafe extern "C" fn(*const RawResponse, usize);

/// One test for the official LoadGen.
#[derive(Debug, Clone)]
pub struct OfficialTest {
    pub scenario: TestScenario,
    /// The benchmark name conf lines are looked up with (`resnet50`, ...).
    pub model: String,
    /// user.conf; without it only the embedded mlperf.conf applies.
    pub user_conf: Option<PathBuf>,
    /// Compliance overrides, read when the file exists (the official `audit.config`).
    pub audit_config: PathBuf,
    pub outdir: PathBuf,
    pub enable_trace: bool,
    /// The command line's values, assigned after the conf files (as the built-in LoadGen does).
    pub overrides: Overrides,
}

/// What the client saw of an official test (the results are in its log files).
#[derive(Debug, Clone)]
pub struct OfficialRun {
    /// Samples the SUT completed with an error (they are completed with no data).
    pub failed_samples: u64,
    pub first_failure: Option<String>,
}

/// The loaded library.
pub struct OfficialLoadgen {
    path: PathBuf,
    start_test: StartTestFn,
    complete: CompleteFn,
    // Keeps the functions above mapped.
    _library: libloading::Library,
}

/// Only one official test may run in a process at a time: the LoadGen's logger is global.
static RUNNING: Mutex<()> = Mutex::new(());

impl OfficialLoadgen {
    /// The library to load: `explicit` (`--official-library`, `$LOADGEN_OFFICIAL_LIBRARY`),
    /// else where the build script puts it beside this program's build
    /// (`target/official-loadgen/` next to `target/debug/`), else beside the program.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, OfficialError> {
        if let Some(path) = explicit {
            return Ok(path.to_path_buf());
        }
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let mut candidates = Vec::new();
        // target/debug/ and target/debug/deps/ (tests) both sit under target/.
        for dir in exe_dir.ancestors().skip(1).take(2) {
            candidates.push(dir.join("official-loadgen").join(LIBRARY_NAME));
        }
        candidates.push(exe_dir.join(LIBRARY_NAME));
        candidates
            .iter()
            .find(|path| path.is_file())
            .cloned()
            .ok_or_else(|| OfficialError::NotBuilt {
                searched: candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Loads the library at `path` and checks that it is the shim of LoadGen 6.0.17.
    pub fn load(path: &Path) -> Result<Self, OfficialError> {
        if !path.is_file() {
            return Err(OfficialError::NotBuilt {
                searched: path.display().to_string(),
            });
        }
        let load_error = |error| OfficialError::Load {
            path: path.to_path_buf(),
            error,
        };
        // SAFETY: the library is the official LoadGen's C++ code with no load-time side effects
        // beyond its static initialisers.
        let library = unsafe { libloading::Library::new(path) }.map_err(load_error)?;
        let symbol = |name: &'static str| OfficialError::NotTheShim {
            path: path.to_path_buf(),
            symbol: name,
        };
        // SAFETY: the types are those of shim.cc's declarations.
        let (version, start_test, complete) = unsafe {
            (
                *library
                    .get::<VersionFn>(b"lgo_version\0")
                    .map_err(|_| symbol("lgo_version"))?,
                *library
                    .get::<StartTestFn>(b"lgo_start_test\0")
                    .map_err(|_| symbol("lgo_start_test"))?,
                *library
                    .get::<CompleteFn>(b"lgo_complete\0")
                    .map_err(|_| symbol("lgo_complete"))?,
            )
        };
        // SAFETY: lgo_version returns a static NUL-terminated string.
        let version = unsafe { CStr::from_ptr(version()) }
            .to_string_lossy()
            .into_owned();
        if version != EXPECTED_VERSION {
            return Err(OfficialError::Version {
                path: path.to_path_buf(),
                found: version,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            start_test,
            complete,
            _library: library,
        })
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The LoadGen release (`6.0.17`).
    pub fn version(&self) -> &str {
        // `load` refuses any other.
        EXPECTED_VERSION
    }

    /// Runs one test (official `StartTest`) against `sut` and `qsl`; returns when every issued
    /// sample completed and the log files are written. Once `stop` is set, queries are answered
    /// at once with an error, so the test ends as soon as its schedule lets it (the official
    /// LoadGen cannot end a test early and still write its logs).
    pub fn start_test(
        &self,
        sut: Arc<dyn Sut>,
        qsl: Arc<dyn Qsl>,
        test: &OfficialTest,
        stop: Arc<AtomicBool>,
    ) -> Result<OfficialRun, OfficialError> {
        let text = |value: &str, what| {
            CString::new(value.as_bytes()).map_err(|_| OfficialError::Nul { what })
        };
        let path_text = |path: &Path, what| text(&path.to_string_lossy(), what);
        std::fs::create_dir_all(&test.outdir).map_err(|error| OfficialError::OutputDir {
            path: test.outdir.clone(),
            error,
        })?;
        let model = text(&test.model, "the MLPerf model name")?;
        let user_conf = test
            .user_conf
            .as_deref()
            .map(|p| path_text(p, "the user.conf path"))
            .transpose()?;
        let audit_config = path_text(&test.audit_config, "the audit.config path")?;
        let outdir = path_text(&test.outdir, "the output folder")?;
        let sut_name = text(&sut.name(), "the SUT name")?;
        let qsl_name = text(&qsl.name(), "the QSL name")?;
        let o = &test.overrides;
        let raw = RawTest {
            scenario: scenario_number(test.scenario),
            model: model.as_ptr(),
            user_conf: user_conf.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            audit_config: audit_config.as_ptr(),
            outdir: outdir.as_ptr(),
            enable_trace: u8::from(test.enable_trace),
            sut_name: sut_name.as_ptr(),
            qsl_name: qsl_name.as_ptr(),
            total_sample_count: qsl.total_sample_count() as u64,
            performance_sample_count: qsl.performance_sample_count() as u64,
            has_mode: u8::from(o.mode.is_some()),
            mode: o.mode.map_or(0, mode_number),
            has_target_qps: u8::from(o.target_qps.is_some()),
            target_qps: o.target_qps.unwrap_or_default(),
            has_target_latency_ns: u8::from(o.target_latency.is_some()),
            target_latency_ns: o
                .target_latency
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            has_min_duration_ms: u8::from(o.min_duration.is_some()),
            min_duration_ms: o
                .min_duration
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            has_samples_per_query: u8::from(o.samples_per_query.is_some()),
            samples_per_query: o.samples_per_query.unwrap_or_default(),
            has_performance_sample_count_override: u8::from(o.performance_sample_count.is_some()),
            performance_sample_count_override: o.performance_sample_count.unwrap_or_default(),
        };
        let completer = Arc::new(Completer {
            complete: self.complete,
            failed: AtomicU64::new(0),
            first_failure: Mutex::new(None),
        });
        let bridge = Bridge {
            sut,
            qsl,
            sink: ResponseSink::new(completer.clone()),
            stop,
            stop_noticed: Once::new(),
        };
        let callbacks = Callbacks {
            context: &bridge as *const Bridge as usize,
            issue_query: issue_query_trampoline,
            flush_queries: flush_queries_trampoline,
            load_samples: load_samples_trampoline,
            unload_samples: unload_samples_trampoline,
        };
        let mut error = vec![0u8; 1024];
        let _one_at_a_time = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: every pointer in `raw` and `callbacks` outlives the call: StartTest returns
        // only after every issued sample completed, so no callback runs after it.
        let status =
            unsafe { (self.start_test)(&raw, &callbacks, error.as_mut_ptr().cast(), error.len()) };
        if status != 0 {
            let message = CStr::from_bytes_until_nul(&error)
                .map(|m| m.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(OfficialError::Failed(message));
        }
        let first_failure = completer
            .first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(OfficialRun {
            failed_samples: completer.failed.load(Ordering::SeqCst),
            first_failure,
        })
    }
}

/// mlperf::TestScenario's value.
fn scenario_number(scenario: TestScenario) -> i32 {
    match scenario {
        TestScenario::SingleStream => 0,
        TestScenario::MultiStream => 1,
        TestScenario::Server => 2,
        TestScenario::Offline => 3,
    }
}

/// mlperf::TestMode's value.
fn mode_number(mode: TestMode) -> i32 {
    match mode {
        TestMode::SubmissionRun => 0,
        TestMode::AccuracyOnly => 1,
        TestMode::PerformanceOnly => 2,
        TestMode::FindPeakPerformance => 3,
    }
}

/// What the callbacks reach through their context.
struct Bridge {
    sut: Arc<dyn Sut>,
    qsl: Arc<dyn Qsl>,
    sink: ResponseSink,
    stop: Arc<AtomicBool>,
    stop_noticed: Once,
}

/// Hands the SUT's completions to the official `QuerySamplesComplete`.
struct Completer {
    complete: CompleteFn,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl CompletionHandler for Completer {
    /// The official LoadGen reads its own clock as the call enters; `_completed_at` is not used.
    fn complete(&self, _completed_at: Instant, responses: Vec<SampleResponse>) {
        for error in responses.iter().filter_map(|r| r.error.as_ref()) {
            if self.failed.fetch_add(1, Ordering::SeqCst) == 0 {
                *self.first_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.clone());
            }
        }
        let raw: Vec<RawResponse> = responses
            .iter()
            .map(|r| RawResponse {
                id: r.id,
                data: r.data.as_ptr(),
                size: r.data.len() as u64,
            })
            .collect();
        // SAFETY: the ids are the LoadGen's own, each completed once; the data is copied before
        // the call returns.
        unsafe { (self.complete)(raw.as_ptr(), raw.len()) };
    }
}

/// The slice behind a callback's pointer and count.
///
/// # Safety
/// `pointer` must point to `count` values that live for the callback.
unsafe fn values<'a, T>(pointer: *const T, count: usize) -> &'a [T] {
    if count == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(pointer, count)
    }
}

/// The bridge behind a callback's context.
///
/// # Safety
/// `context` must be the address of the `Bridge` of the test that is running.
unsafe fn bridge<'a>(context: usize) -> &'a Bridge {
    &*(context as *const Bridge)
}

extern "C" fn issue_query_trampoline(context: usize, samples: *const RawSample, count: usize) {
    // SAFETY: the shim passes the context it was given and the query's `count` samples.
    let (bridge, samples) = unsafe { (bridge(context), values(samples, count)) };
    let samples: Vec<QuerySample> = samples
        .iter()
        .map(|s| QuerySample {
            id: s.id,
            index: s.index as usize,
        })
        .collect();
    if bridge.stop.load(Ordering::SeqCst) {
        bridge.stop_noticed.call_once(|| {
            eprintln!(
                "stopping: the official LoadGen cannot end a test early, so the queries left are \
                 answered at once as failures and it ends as soon as its schedule allows, with \
                 complete logs (a second Ctrl-C exits now, without them)"
            )
        });
        let failed = samples
            .iter()
            .map(|s| SampleResponse {
                id: s.id,
                error: Some("interrupted: not sent".to_string()),
                ..SampleResponse::default()
            })
            .collect();
        bridge.sink.complete(failed);
        return;
    }
    bridge.sut.issue_query(samples, bridge.sink.clone());
}

extern "C" fn flush_queries_trampoline(context: usize) {
    // SAFETY: as in issue_query_trampoline.
    unsafe { bridge(context) }.sut.flush_queries();
}

extern "C" fn load_samples_trampoline(context: usize, indices: *const u64, count: usize) {
    // SAFETY: as in issue_query_trampoline.
    let (bridge, indices) = unsafe { (bridge(context), values(indices, count)) };
    let indices: Vec<usize> = indices.iter().map(|&i| i as usize).collect();
    // The official QSL contract has no error: samples that did not load fail when issued
    // (the SUT reports them), so the run still ends with its logs.
    if let Err(e) = bridge.qsl.load_samples_to_ram(&indices) {
        eprintln!("error: {e}; the queries that use these samples will fail");
    }
}

extern "C" fn unload_samples_trampoline(context: usize, indices: *const u64, count: usize) {
    // SAFETY: as in issue_query_trampoline.
    let (bridge, indices) = unsafe { (bridge(context), values(indices, count)) };
    let indices: Vec<usize> = indices.iter().map(|&i| i as usize).collect();
    bridge.qsl.unload_samples_from_ram(&indices);
}
