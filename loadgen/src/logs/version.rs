//! Who wrote a log: the identity lines (`loadgen_*`) that open every detail log. They carry the
//! keys the official LoadGen writes, with values that name this crate and the program using it,
//! its source identity (made by `build.rs`) and the official LoadGen version it reproduces. No
//! MLCommons tool checks these values; none is the official build's.

include!(concat!(env!("OUT_DIR"), "/source_identity.rs"));

/// The official LoadGen release whose behaviour this crate reproduces.
pub const REPRODUCED_LOADGEN_VERSION: &str = "6.0.17";

/// This crate's version.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The default writer named in the logs when the program using the crate names none.
pub fn default_writer() -> String {
    format!("loadgen {CRATE_VERSION}")
}

/// `loadgen_version`: the reproduced version first, then who wrote the log, e.g.
/// `6.0.17 (reproduced by loadgen-client 0.1.0; Rust loadgen crate 0.1.0 @ 17e86ad0a1; not the official LoadGen)`.
pub fn loadgen_version(writer: &str) -> String {
    format!(
        "{REPRODUCED_LOADGEN_VERSION} (reproduced by {writer}; Rust loadgen crate {CRATE_VERSION} @ \
         {GIT_REVISION}; not the official LoadGen)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_names_the_writer_and_the_reproduced_release() {
        let text = loadgen_version("loadgen-client 9.9.9");
        assert!(
            text.starts_with("6.0.17 (reproduced by loadgen-client 9.9.9; "),
            "{text}"
        );
        assert!(
            text.contains(&format!("crate {CRATE_VERSION} @ {GIT_REVISION}")),
            "{text}"
        );
        assert!(text.ends_with("not the official LoadGen)"), "{text}");
    }

    #[test]
    fn every_source_file_of_the_crate_has_a_sha1() {
        let names: Vec<&str> = FILE_SHA1.iter().map(|(name, _)| *name).collect();
        for expected in [
            "/Cargo.toml",
            "/build.rs",
            "/src/lib.rs",
            "/src/logs/version.rs",
            "/src/mlperf.conf",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(FILE_SHA1
            .iter()
            .all(|(_, sha)| sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit())));
    }
}
