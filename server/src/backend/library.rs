//! Finding a native runtime library at run time, the same way for every runtime.
//!
//! Nothing is downloaded or linked at build time: the server `dlopen`s the runtime that is on the
//! box. [`RuntimeLibrary`] describes one runtime (file name, environment variable, Python wheel),
//! and [`LibrarySearch::find`] looks for it in this order:
//!
//! 1. an explicit path (from the model config or a command-line flag): a file, or a folder that holds it;
//! 2. the runtime's environment variable (`ORT_DYLIB_PATH` for ONNX Runtime);
//! 3. the standard system locations (`/usr/lib`, `/usr/local/lib`, `/usr/lib/<arch>-linux-gnu`, ...);
//! 4. a Python installation of the runtime's wheel: `$VIRTUAL_ENV/bin/python`, then `.venv/bin/python`
//!    in the current folder or any folder above it, then `python3` on `PATH`, each asked where the
//!    module lives (`onnxruntime/capi/libonnxruntime.so.<version>` for ONNX Runtime).
//!
//! An explicit path or environment variable that is set but wrong is an error at once rather than
//! a silent fall-through: the operator asked for that library. When nothing is found, the error
//! ([`LibraryNotFound`]) lists every place tried and how to fix it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to find one native runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeLibrary {
    /// Human name, e.g. `ONNX Runtime`.
    pub display_name: &'static str,
    /// Environment variable holding an explicit path, e.g. `ORT_DYLIB_PATH`.
    pub env_var: &'static str,
    /// File name stem: matches `<stem>` and `<stem>.<version>`, e.g. `libonnxruntime.so`.
    pub file_stem: &'static str,
    /// The Python wheel that ships it, when one does (searched last).
    pub wheel: Option<Wheel>,
    /// How to get it, for the "not found" message, e.g. "`pip install onnxruntime` (...)".
    pub install: &'static str,
}

/// A Python wheel that ships a runtime library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wheel {
    /// Python module whose package folder holds the library, e.g. `onnxruntime`.
    pub python_module: &'static str,
    /// Folder inside the Python package that holds the library, e.g. `capi` (`""`: the package's own).
    pub subdir: &'static str,
}

/// The runtime libraries the server's settings name, by library name (`[onnxruntime] library =`
/// in the server config, `--runtime-library onnxruntime=PATH`); each comes before its library's
/// usual search. A runtime declares the names of its libraries ([`Runtime::libraries`]).
///
/// [`Runtime::libraries`]: crate::backend::runtime::Runtime::libraries
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LibraryPaths(BTreeMap<String, PathBuf>);

impl LibraryPaths {
    /// The path named for `runtime`, if any.
    pub fn get(&self, runtime: &str) -> Option<&Path> {
        self.0.get(runtime).map(PathBuf::as_path)
    }

    /// Names `path` for `runtime` (a later call for the same runtime wins).
    pub fn insert(&mut self, runtime: &str, path: PathBuf) {
        self.0.insert(runtime.to_string(), path);
    }

    /// Every (runtime, path) pair.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_path()))
    }
}

/// Where a library was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibrarySource {
    Explicit,
    EnvVar(&'static str),
    System,
    /// Found through this Python interpreter's installation of the wheel.
    PythonWheel {
        python: String,
    },
}

impl fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LibrarySource::Explicit => f.write_str("explicit path"),
            LibrarySource::EnvVar(var) => write!(f, "${var}"),
            LibrarySource::System => f.write_str("system location"),
            LibrarySource::PythonWheel { python } => write!(f, "Python wheel via {python}"),
        }
    }
}

/// A runtime library that exists on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundLibrary {
    pub path: PathBuf,
    pub source: LibrarySource,
    /// Version when known before loading (from the wheel or the file name).
    pub version: Option<String>,
}

/// One place looked at, and why it did not give a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub place: String,
    pub outcome: String,
}

/// The runtime was not found, or a path that was asked for is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LibraryNotFound {
    pub library: RuntimeLibrary,
    pub tried: Vec<Attempt>,
}

impl fmt::Display for LibraryNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lib = &self.library;
        writeln!(
            f,
            "{} library ({}*) not found; tried:",
            lib.display_name, lib.file_stem
        )?;
        for attempt in &self.tried {
            writeln!(f, "  - {}: {}", attempt.place, attempt.outcome)?;
        }
        write!(
            f,
            "fix: {}, or set {} (or the config's library path) to the full path of {}.<version>",
            lib.install, lib.env_var, lib.file_stem
        )
    }
}

/// The places [`LibrarySearch::find`] looks at; [`LibrarySearch::standard`] gives the real ones,
/// tests build their own.
#[derive(Debug, Clone)]
pub struct LibrarySearch {
    pub library: RuntimeLibrary,
    pub explicit: Option<PathBuf>,
    /// Value of the runtime's environment variable, if set.
    pub env_value: Option<OsString>,
    pub system_dirs: Vec<PathBuf>,
    /// Python interpreters to ask, in order (labels are the commands as a person would type them).
    pub pythons: Vec<PathBuf>,
}

/// The system library folders for this machine, in search order.
pub fn system_library_dirs() -> Vec<PathBuf> {
    let triple = match std::env::consts::ARCH {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        other => other,
    };
    let mut dirs = vec![
        PathBuf::from("/usr/local/lib"),
        PathBuf::from("/usr/lib"),
        PathBuf::from(format!("/usr/lib/{triple}")),
        PathBuf::from(format!("/usr/local/lib/{triple}")),
        PathBuf::from("/usr/lib64"),
    ];
    if let Some(ld) = std::env::var_os("LD_LIBRARY_PATH") {
        for dir in std::env::split_paths(&ld) {
            if !dir.as_os_str().is_empty() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// Python interpreters to ask for a wheel: `$VIRTUAL_ENV/bin/python`, `.venv/bin/python` in the
/// current folder and each folder above it, then `python3` from `PATH`.
pub fn python_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(venv).join("bin/python"));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let candidate = dir.join(".venv/bin/python");
            if candidate.exists() && !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out.push(PathBuf::from("python3"));
    out
}

impl LibrarySearch {
    /// The real search for `library`, with an optional explicit path.
    pub fn standard(library: RuntimeLibrary, explicit: Option<&Path>) -> Self {
        LibrarySearch {
            library,
            explicit: explicit.map(Path::to_path_buf),
            env_value: std::env::var_os(library.env_var).filter(|v| !v.is_empty()),
            system_dirs: system_library_dirs(),
            pythons: python_candidates(),
        }
    }

    /// Looks in order and returns the first library found.
    pub fn find(&self) -> Result<FoundLibrary, LibraryNotFound> {
        let lib = self.library;
        let mut tried = Vec::new();
        let fail = |tried: Vec<Attempt>| LibraryNotFound {
            library: lib,
            tried,
        };

        if let Some(path) = &self.explicit {
            return match resolve_path(lib, path) {
                Ok((path, version)) => Ok(FoundLibrary {
                    path,
                    source: LibrarySource::Explicit,
                    version,
                }),
                Err(why) => {
                    tried.push(Attempt {
                        place: format!("explicit path {}", path.display()),
                        outcome: why,
                    });
                    Err(fail(tried))
                }
            };
        }
        if let Some(value) = &self.env_value {
            let path = PathBuf::from(value);
            return match resolve_path(lib, &path) {
                Ok((path, version)) => Ok(FoundLibrary {
                    path,
                    source: LibrarySource::EnvVar(lib.env_var),
                    version,
                }),
                Err(why) => {
                    tried.push(Attempt {
                        place: format!("${}={}", lib.env_var, path.display()),
                        outcome: why,
                    });
                    Err(fail(tried))
                }
            };
        }
        tried.push(Attempt {
            place: format!("${}", lib.env_var),
            outcome: "not set".into(),
        });

        for dir in &self.system_dirs {
            match find_in_dir(lib, dir) {
                Ok(Some((path, version))) => {
                    return Ok(FoundLibrary {
                        path,
                        source: LibrarySource::System,
                        version,
                    })
                }
                Ok(None) => tried.push(Attempt {
                    place: dir.display().to_string(),
                    outcome: format!("no {}*", lib.file_stem),
                }),
                Err(why) => tried.push(Attempt {
                    place: dir.display().to_string(),
                    outcome: why,
                }),
            }
        }

        let Some(wheel) = lib.wheel else {
            return Err(fail(tried));
        };
        for python in &self.pythons {
            let label = python.display().to_string();
            match ask_python(wheel, lib, python) {
                Ok(found) => return Ok(found),
                Err(why) => tried.push(Attempt {
                    place: format!("Python `{label}`"),
                    outcome: why,
                }),
            }
        }
        Err(fail(tried))
    }
}

/// An explicit path: the library file itself, or a folder that holds it.
pub fn resolve_path(lib: RuntimeLibrary, path: &Path) -> Result<(PathBuf, Option<String>), String> {
    if path.is_dir() {
        return match find_in_dir(lib, path)? {
            Some(found) => Ok(found),
            None => Err(format!("folder has no {}*", lib.file_stem)),
        };
    }
    if path.is_file() {
        let version = path
            .file_name()
            .and_then(|n| version_from_file_name(lib, &n.to_string_lossy()));
        return Ok((path.to_path_buf(), version));
    }
    Err("no such file or folder".into())
}

/// The best `<stem>*` in `dir`: the highest version, the unversioned name last.
fn find_in_dir(
    lib: RuntimeLibrary,
    dir: &Path,
) -> Result<Option<(PathBuf, Option<String>)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("folder does not exist".into())
        }
        Err(e) => return Err(format!("cannot read folder: {e}")),
    };
    let mut best: Option<(Vec<u64>, PathBuf, Option<String>)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let version = if name == lib.file_stem {
            None
        } else if let Some(v) = version_from_file_name(lib, &name) {
            Some(v)
        } else {
            continue;
        };
        let path = entry.path();
        if !path.is_file() {
            continue; // dangling symlink or folder
        }
        let key: Vec<u64> = version
            .as_deref()
            .map(|v| v.split('.').map(|p| p.parse().unwrap_or(0)).collect())
            .unwrap_or_default();
        if best.as_ref().is_none_or(|(best_key, _, _)| key > *best_key) {
            best = Some((key, path, version));
        }
    }
    Ok(best.map(|(_, path, version)| (path, version)))
}

/// `libonnxruntime.so.1.32.0` → `1.32.0`.
pub fn version_from_file_name(lib: RuntimeLibrary, name: &str) -> Option<String> {
    let rest = name.strip_prefix(lib.file_stem)?.strip_prefix('.')?;
    (!rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .then(|| rest.to_string())
}

/// Asks `python` where its installation of the wheel keeps the library.
fn ask_python(wheel: Wheel, lib: RuntimeLibrary, python: &Path) -> Result<FoundLibrary, String> {
    if python.components().count() > 1 && !python.exists() {
        return Err("no such interpreter".into());
    }
    let script = format!(
        "import os, {m}; print(os.path.dirname({m}.__file__)); print(getattr({m}, '__version__', ''))",
        m = wheel.python_module
    );
    let output = Command::new(python)
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .map_err(|e| format!("cannot run: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed");
        return Err(format!(
            "cannot import {}: {}",
            wheel.python_module,
            last.trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    let package_dir = PathBuf::from(lines.next().unwrap_or("").trim());
    let wheel_version = lines
        .next()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let dir = package_dir.join(wheel.subdir);
    // Prefer the exact `<stem>.<wheel version>`, else whatever versioned file the folder has.
    if let Some(version) = &wheel_version {
        let exact = dir.join(format!("{}.{version}", lib.file_stem));
        if exact.is_file() {
            return Ok(FoundLibrary {
                path: exact,
                source: LibrarySource::PythonWheel {
                    python: python.display().to_string(),
                },
                version: Some(version.clone()),
            });
        }
    }
    match find_in_dir(lib, &dir) {
        Ok(Some((path, version))) => Ok(FoundLibrary {
            path,
            source: LibrarySource::PythonWheel {
                python: python.display().to_string(),
            },
            version: version.or(wheel_version),
        }),
        Ok(None) => Err(format!("{} has no {}*", dir.display(), lib.file_stem)),
        Err(why) => Err(format!("{}: {why}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONNXRUNTIME: RuntimeLibrary = crate::backend::onnxruntime::environment::ONNXRUNTIME;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not really a library").unwrap();
    }

    fn empty_search(explicit: Option<PathBuf>) -> LibrarySearch {
        LibrarySearch {
            library: ONNXRUNTIME,
            explicit,
            env_value: None,
            system_dirs: vec![],
            pythons: vec![],
        }
    }

    #[test]
    fn version_parsing_from_file_names() {
        assert_eq!(
            version_from_file_name(ONNXRUNTIME, "libonnxruntime.so.1.32.0").as_deref(),
            Some("1.32.0")
        );
        assert_eq!(
            version_from_file_name(ONNXRUNTIME, "libonnxruntime.so"),
            None
        );
        assert_eq!(
            version_from_file_name(ONNXRUNTIME, "libonnxruntime_providers_shared.so"),
            None
        );
        assert_eq!(
            version_from_file_name(ONNXRUNTIME, "libonnxruntime.so.1.x"),
            None
        );
    }

    #[test]
    fn explicit_file_and_folder_are_used_and_a_wrong_one_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let lib = tmp.path().join("lib/libonnxruntime.so.1.20.1");
        touch(&lib);
        touch(&tmp.path().join("lib/libonnxruntime.so.1.9.0"));
        touch(&tmp.path().join("lib/libonnxruntime_providers_shared.so"));

        let found = empty_search(Some(lib.clone())).find().unwrap();
        assert_eq!(
            (found.path, found.source, found.version.as_deref()),
            (lib.clone(), LibrarySource::Explicit, Some("1.20.1"))
        );

        // A folder: the highest version wins (1.20.1 > 1.9.0 numerically).
        let found = empty_search(Some(tmp.path().join("lib"))).find().unwrap();
        assert_eq!(found.path, lib);

        let mut search = empty_search(Some(tmp.path().join("missing.so")));
        search.system_dirs = vec![tmp.path().join("lib")]; // would be found, but explicit wins
        let err = search.find().unwrap_err();
        assert_eq!(err.tried.len(), 1);
        let text = err.to_string();
        assert!(
            text.contains("missing.so") && text.contains("no such file"),
            "{text}"
        );
        assert!(
            text.contains("pip install onnxruntime") && text.contains("ORT_DYLIB_PATH"),
            "{text}"
        );
    }

    #[test]
    fn env_var_comes_before_system_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let env_lib = tmp.path().join("env/libonnxruntime.so");
        touch(&env_lib);
        touch(&tmp.path().join("sys/libonnxruntime.so.1.30.0"));
        let mut search = empty_search(None);
        search.env_value = Some(env_lib.clone().into_os_string());
        search.system_dirs = vec![tmp.path().join("sys")];
        let found = search.find().unwrap();
        assert_eq!(
            (found.path, found.source),
            (env_lib, LibrarySource::EnvVar("ORT_DYLIB_PATH"))
        );

        search.env_value = None;
        let found = search.find().unwrap();
        assert_eq!(found.source, LibrarySource::System);
        assert_eq!(found.version.as_deref(), Some("1.30.0"));
    }

    #[test]
    fn nothing_found_lists_every_place_tried() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("empty")).unwrap();
        let mut search = empty_search(None);
        search.system_dirs = vec![tmp.path().join("empty"), tmp.path().join("absent")];
        search.pythons = vec![
            tmp.path().join("venv/bin/python"),
            PathBuf::from("no-such-python-interpreter-xyz"),
        ];
        let err = search.find().unwrap_err();
        let text = err.to_string();
        assert_eq!(err.tried.len(), 5, "{text}");
        assert!(text.contains("$ORT_DYLIB_PATH: not set"), "{text}");
        assert!(text.contains("empty: no libonnxruntime.so*"), "{text}");
        assert!(text.contains("absent: folder does not exist"), "{text}");
        assert!(
            text.contains("venv/bin/python`: no such interpreter"),
            "{text}"
        );
        assert!(
            text.contains("no-such-python-interpreter-xyz`: cannot run"),
            "{text}"
        );
        assert!(text.contains("fix: `pip install onnxruntime`"), "{text}");
    }

    #[test]
    fn python_wheel_layout_is_found() {
        // A fake interpreter (a shell script) that answers like Python would.
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().join("site-packages/onnxruntime");
        touch(&pkg.join("capi/libonnxruntime.so.1.32.0"));
        touch(&pkg.join("capi/libonnxruntime_providers_shared.so"));
        let python = tmp.path().join("bin/python");
        std::fs::create_dir_all(python.parent().unwrap()).unwrap();
        std::fs::write(
            &python,
            format!("#!/bin/sh\necho '{}'\necho 1.32.0\n", pkg.display()),
        )
        .unwrap();
        let mut perms = std::fs::metadata(&python).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&python, perms).unwrap();

        let mut search = empty_search(None);
        search.pythons = vec![python.clone()];
        // A freshly written script can be briefly "text file busy" when another test thread forks.
        let mut found = search.find();
        for _ in 0..20 {
            match &found {
                Err(e) if e.to_string().contains("busy") => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    found = search.find();
                }
                _ => break,
            }
        }
        let found = found.unwrap();
        assert_eq!(found.path, pkg.join("capi/libonnxruntime.so.1.32.0"));
        assert_eq!(found.version.as_deref(), Some("1.32.0"));
        assert_eq!(
            found.source,
            LibrarySource::PythonWheel {
                python: python.display().to_string()
            }
        );
    }
}
