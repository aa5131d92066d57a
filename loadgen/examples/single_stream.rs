//! A SingleStream test against an in-process SUT: the smallest complete use of the library.
//!
//! `cargo run -p loadgen --example single_stream -- OUT_DIR` writes the three MLPerf log files
//! into OUT_DIR (default `output/single_stream`) and prints the summary.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use loadgen::null_sut::MemoryQsl;
use loadgen::{
    start_test, LoadgenError, LogSettings, Overrides, QuerySample, ResponseSink, RunOptions,
    SampleResponse, SettingsSources, Sut, TestOutcome, TestScenario,
};

/// How long the pretend model takes per query.
const MODEL_TIME: Duration = Duration::from_micros(200);

/// A pretend model that answers each sample with the square of its index (little-endian f32)
/// after [`MODEL_TIME`], from a thread of its own: `issue_query` must not block.
struct SquareSut;

impl Sut for SquareSut {
    fn name(&self) -> String {
        "square SUT (in-process)".to_string()
    }

    fn issue_query(&self, samples: Vec<QuerySample>, sink: ResponseSink) {
        std::thread::spawn(move || {
            std::thread::sleep(MODEL_TIME);
            let responses = samples
                .iter()
                .map(|s| SampleResponse {
                    id: s.id,
                    data: ((s.index * s.index) as f32).to_le_bytes().to_vec(),
                    ..SampleResponse::default()
                })
                .collect();
            sink.complete(responses);
        });
    }
}

/// Runs a 1-second SingleStream test with resnet50's rules and writes the logs into `out_dir`.
pub fn run(out_dir: &Path) -> Result<TestOutcome, Box<dyn std::error::Error>> {
    let mut sources = SettingsSources::new(TestScenario::SingleStream, "resnet50");
    sources.overrides = Overrides {
        min_duration: Some(Duration::from_secs(1)),
        ..Overrides::default()
    };
    let mut resolved = sources.resolve()?;
    // What user.conf would say for this system: queries are generated for this latency.
    resolved.settings.single_stream_expected_latency_ns = MODEL_TIME.as_nanos() as f64;
    let log = LogSettings {
        outdir: out_dir.to_path_buf(),
        ..LogSettings::default()
    };
    let options = RunOptions {
        pre_test_diagnostics: resolved.diagnostics,
        ..RunOptions::default()
    };
    let qsl = Arc::new(MemoryQsl::new("1024 in-memory samples", 1024, 1024));
    let outcome: Result<TestOutcome, LoadgenError> =
        start_test(Arc::new(SquareSut), qsl, &resolved.settings, &log, &options);
    Ok(outcome?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "output/single_stream".into());
    let outcome = run(Path::new(&out))?;
    print!("{}", outcome.summary_text);
    println!(
        "logs: {}",
        outcome
            .paths
            .detail
            .parent()
            .unwrap_or(Path::new("."))
            .display()
    );
    Ok(())
}
