//! A live progress line for interactive runs: completed samples, QPS, latency percentiles and
//! errors. It wraps the SUT and observes issues and completions; completions are forwarded
//! before anything is recorded, so LoadGen's timestamps are not delayed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use loadgen::sut::{CompletionHandler, QuerySample, ResponseSink, SampleResponse, Sut};

#[derive(Debug)]
struct Stats {
    issued_at: HashMap<u64, Instant>,
    /// `None` only if the histogram could not be created; latencies are then not shown.
    latency_us: Option<Histogram<u64>>,
    completed: u64,
    errors: u64,
    first_issue: Option<Instant>,
    last_error: Option<String>,
}

impl Stats {
    fn new() -> Self {
        Self {
            issued_at: HashMap::new(),
            // 1 µs .. 1 h at 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).ok(),
            completed: 0,
            errors: 0,
            first_issue: None,
            last_error: None,
        }
    }
}

/// Wraps a [`Sut`] and draws a progress line from what passes through it.
pub struct ProgressSut {
    inner: Arc<dyn Sut>,
    stats: Arc<Mutex<Stats>>,
    bar: ProgressBar,
    ticker: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

struct Observer {
    inner: ResponseSink,
    stats: Arc<Mutex<Stats>>,
}

impl CompletionHandler for Observer {
    fn complete(&self, completed_at: Instant, responses: Vec<SampleResponse>) {
        let seen: Vec<(u64, Option<String>)> =
            responses.iter().map(|r| (r.id, r.error.clone())).collect();
        self.inner.complete(responses);
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        for (id, error) in seen {
            stats.completed += 1;
            if let Some(issued) = stats.issued_at.remove(&id) {
                let us = completed_at.saturating_duration_since(issued).as_micros();
                let us = u64::try_from(us).unwrap_or(u64::MAX).max(1);
                if let Some(h) = stats.latency_us.as_mut() {
                    h.saturating_record(us);
                }
            }
            if error.is_some() {
                stats.errors += 1;
                stats.last_error = error;
            }
        }
    }
}

impl ProgressSut {
    /// Wraps `inner`; the line is drawn on stderr only when stdout is a terminal.
    pub fn new(inner: Arc<dyn Sut>) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let stats = Arc::new(Mutex::new(Stats::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let (bar, stats, stop) = (bar.clone(), Arc::clone(&stats), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let line = summary(&stats.lock().unwrap_or_else(|e| e.into_inner()));
                        bar.set_message(line);
                        bar.tick();
                        std::thread::sleep(Duration::from_millis(250));
                    }
                })
                .ok()
        };
        Self {
            inner,
            stats,
            bar,
            ticker,
            stop,
        }
    }

    /// Stops drawing and returns the final line.
    pub fn finish(mut self) -> String {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        let line = summary(&self.stats.lock().unwrap_or_else(|e| e.into_inner()));
        self.bar.finish_and_clear();
        line
    }
}

fn summary(stats: &Stats) -> String {
    let elapsed = stats.first_issue.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let qps = if elapsed > 0.0 {
        stats.completed as f64 / elapsed
    } else {
        0.0
    };
    let ms = |q: f64| {
        stats
            .latency_us
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    let mut line = format!(
        "{} samples, {qps:.1}/s, latency p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms, errors {}",
        stats.completed,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        stats.errors
    );
    if let Some(error) = &stats.last_error {
        line.push_str(&format!(" (last: {error})"));
    }
    line
}

impl Sut for ProgressSut {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn issue_query(&self, samples: Vec<QuerySample>, sink: ResponseSink) {
        let now = Instant::now();
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.first_issue.get_or_insert(now);
            for s in &samples {
                stats.issued_at.insert(s.id, now);
            }
        }
        let observer = Observer {
            inner: sink,
            stats: Arc::clone(&self.stats),
        };
        self.inner
            .issue_query(samples, ResponseSink::new(Arc::new(observer)));
    }

    fn flush_queries(&self) {
        self.inner.flush_queries();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Sut for Echo {
        fn name(&self) -> String {
            "echo".into()
        }
        fn issue_query(&self, samples: Vec<QuerySample>, sink: ResponseSink) {
            sink.complete(
                samples
                    .iter()
                    .map(|s| SampleResponse {
                        id: s.id,
                        error: (s.index == 1).then(|| "boom".to_string()),
                        ..SampleResponse::default()
                    })
                    .collect(),
            );
        }
    }

    struct Count(Mutex<Vec<u64>>);
    impl CompletionHandler for Count {
        fn complete(&self, _at: Instant, responses: Vec<SampleResponse>) {
            let mut ids = self.0.lock().unwrap();
            ids.extend(responses.iter().map(|r| r.id));
        }
    }

    #[test]
    fn forwards_everything_and_counts_errors() {
        let sut = ProgressSut::new(Arc::new(Echo));
        let seen = Arc::new(Count(Mutex::new(Vec::new())));
        let sink = ResponseSink::new(Arc::clone(&seen) as Arc<dyn CompletionHandler>);
        let samples = vec![
            QuerySample { id: 10, index: 0 },
            QuerySample { id: 11, index: 1 },
        ];
        sut.issue_query(samples, sink);
        assert_eq!(*seen.0.lock().unwrap(), vec![10, 11]);
        assert_eq!(sut.name(), "echo");
        let line = sut.finish();
        assert!(
            line.starts_with("2 samples") && line.contains("errors 1 (last: boom)"),
            "{line}"
        );
    }
}
