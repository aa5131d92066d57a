//! The runtimes this build serves. Adding a runtime is one module and one line here.

use super::runtime::Runtime;

/// Every runtime of this build, the default (`backend` left out of a config) first.
pub fn runtimes() -> Vec<&'static dyn Runtime> {
    #[allow(unused_mut)] // the test backend is added only in test builds
    let mut all: Vec<&'static dyn Runtime> = vec![
        &super::onnxruntime::OnnxRuntime,
        &super::openvino::OpenVino,
        &super::tflite::Tflite,
        &super::dna::Dna,
    ];
    #[cfg(feature = "test-backend")]
    all.push(&super::fake::Fake);
    all
}

/// The runtime a config's `backend = NAME` means (its name or an alias, any case).
pub fn find(name: &str) -> Result<&'static dyn Runtime, UnknownBackend> {
    let wanted = name.trim().to_ascii_lowercase();
    runtimes()
        .into_iter()
        .find(|r| r.name() == wanted || r.aliases().contains(&wanted.as_str()))
        .ok_or_else(|| UnknownBackend(name.to_string()))
}

/// The runtime used when a config names none.
pub fn default_runtime() -> &'static dyn Runtime {
    runtimes()[0]
}

/// The names of every native library the runtimes load (`[NAME] library` in the server config).
pub fn library_names() -> Vec<&'static str> {
    runtimes()
        .iter()
        .flat_map(|r| r.libraries().iter().copied())
        .collect()
}

/// The names of every runtime, for messages.
pub fn names() -> Vec<&'static str> {
    runtimes().iter().map(|r| r.name()).collect()
}

/// A backend name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend '{0}' (this build has: {known})", known = names().join(", "))]
pub struct UnknownBackend(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_find_their_runtime() {
        assert_eq!(find("onnxruntime").unwrap().name(), "onnxruntime");
        assert_eq!(find(" ORT ").unwrap().name(), "onnxruntime");
        assert_eq!(find("openvino").unwrap().name(), "openvino");
        let err = find("tensorflow").unwrap_err().to_string();
        assert!(err.contains("onnxruntime, openvino, tflite, dna"), "{err}");
        assert_eq!(default_runtime().name(), "onnxruntime");
    }

    #[test]
    fn every_runtime_has_a_unique_name_a_layout_and_a_valid_default_device() {
        let all = runtimes();
        for (i, runtime) in all.iter().enumerate() {
            assert!(!runtime.model_layouts().is_empty(), "{}", runtime.name());
            assert!(
                runtime.parse_device(runtime.default_device()).is_ok(),
                "{}",
                runtime.name()
            );
            for other in &all[..i] {
                assert_ne!(runtime.name(), other.name());
                assert!(!other.aliases().contains(&runtime.name()));
            }
        }
    }
}
