//! Runs the crate's example (`examples/single_stream.rs`) as a test: a valid SingleStream result
//! and the three official log files.

#[allow(dead_code)]
#[path = "../examples/single_stream.rs"]
mod single_stream;

#[test]
fn the_single_stream_example_runs_valid_and_writes_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = single_stream::run(dir.path()).expect("the example runs");
    assert_eq!(outcome.valid(), Some(true), "{}", outcome.summary_text);
    assert_eq!(outcome.failed_samples, 0);
    for path in [
        &outcome.paths.summary,
        &outcome.paths.detail,
        &outcome.paths.accuracy,
    ] {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} is empty or missing", path.display());
    }
    assert!(
        outcome.summary_text.contains("Scenario : SingleStream"),
        "{}",
        outcome.summary_text
    );
    assert!(
        outcome.summary_text.contains("Result is : VALID"),
        "{}",
        outcome.summary_text
    );
}
