//! The Chrome trace (`mlperf_log_trace.json`): per-sample async begin/end events and the Server
//! latency counters. Like the original, the file is a trace-viewer document, not strict JSON.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One completed sample, as traced.
#[derive(Debug, Clone, Copy)]
pub struct SampleTrace {
    pub sample_seq: u64,
    pub query_seq: u64,
    pub sample_idx: usize,
    pub scheduled: Instant,
    pub issued: Instant,
    pub completed: Instant,
}

/// Writer of the trace file.
pub struct TraceLog {
    out: BufWriter<File>,
    origin: Instant,
    origin_epoch_us: f64,
    pid: u32,
    finished: bool,
}

impl TraceLog {
    /// Creates (truncates) the file and writes the header; event times count from `origin`.
    pub fn create(path: &Path, origin: Instant) -> io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(b"{\"traceEvents\":[\n")?;
        let origin_epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as f64 / 1000.0)
            .unwrap_or(0.0);
        Ok(Self {
            out,
            origin,
            origin_epoch_us,
            pid: std::process::id(),
            finished: false,
        })
    }

    fn micros(&self, t: Instant) -> String {
        let ns = if t >= self.origin {
            t.duration_since(self.origin).as_nanos() as f64
        } else {
            -(self.origin.duration_since(t).as_nanos() as f64)
        };
        format!("{:.3}", ns / 1000.0)
    }

    /// The `Sample` begin/end pair of one completed sample.
    pub fn sample(&mut self, s: &SampleTrace) -> io::Result<()> {
        let delta = |t: Instant| signed_ns(s.scheduled, t);
        let line = format!(
            "{{\"name\":\"Sample\",\"cat\":\"default\",\"ph\":\"b\",\"pid\":{pid},\"id\":{id},\"ts\":{ts},\"args\":{{\"sample_seq\":{id},\"query_seq\":{q},\"sample_idx\":{idx},\"issue_start_ns\":{is},\"complete_ns\":{c}}}}},\n{{\"name\":\"Sample\",\"cat\":\"default\",\"ph\":\"e\", \"pid\":{pid},\"id\":{id},\"ts\":{te}}},\n",
            pid = self.pid,
            id = s.sample_seq,
            ts = self.micros(s.scheduled),
            q = s.query_seq,
            idx = s.sample_idx,
            is = delta(s.issued),
            c = delta(s.completed),
            te = self.micros(s.completed),
        );
        self.out.write_all(line.as_bytes())
    }

    /// The Server `Latency` counter of one completed sample.
    pub fn server_latency(&mut self, s: &SampleTrace) -> io::Result<()> {
        let line = format!(
            "{{\"name\":\"Latency\",\"ph\": \"C\",\"pid\":{},\"ts\":{},\"args\":{{ \"issue_delay\":{},\"issue_to_done\":{}}}}},\n",
            self.pid,
            self.micros(s.scheduled),
            signed_ns(s.scheduled, s.issued),
            signed_ns(s.issued, s.completed),
        );
        self.out.write_all(line.as_bytes())
    }

    /// Writes the closing event and footer (once), then flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return self.out.flush();
        }
        self.finished = true;
        let footer = format!(
            "{{\"name\":\"LastTrace\"}}\n],\n\"displayTimeUnit\":\"ns\",\n\"otherData\":{{\n\"ts\":{:.3},\n\"version\":\"MLPerf LoadGen v1.0\"\n}}\n}}\n",
            self.origin_epoch_us
        );
        self.out.write_all(footer.as_bytes())?;
        self.out.flush()
    }
}

/// `to − from` in ns, negative when `to` is earlier.
pub fn signed_ns(from: Instant, to: Instant) -> i64 {
    if to >= from {
        to.duration_since(from).as_nanos() as i64
    } else {
        -(from.duration_since(to).as_nanos() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sample_events_and_footer() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.json");
        let origin = Instant::now();
        let mut t = TraceLog::create(&path, origin).unwrap_or_else(|e| panic!("{e}"));
        let s = SampleTrace {
            sample_seq: 0,
            query_seq: 0,
            sample_idx: 784,
            scheduled: origin + Duration::from_nanos(19_166_353),
            issued: origin + Duration::from_nanos(19_166_353),
            completed: origin + Duration::from_nanos(19_166_353 + 1_365_126),
        };
        t.sample(&s).unwrap_or_else(|e| panic!("{e}"));
        t.finish().unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.starts_with(
            "{\"traceEvents\":[\n{\"name\":\"Sample\",\"cat\":\"default\",\"ph\":\"b\""
        ));
        assert!(text.contains("\"ts\":19166.353,\"args\":{\"sample_seq\":0,\"query_seq\":0,\"sample_idx\":784,\"issue_start_ns\":0,\"complete_ns\":1365126}},"));
        assert!(text.contains(
            "{\"name\":\"LastTrace\"}\n],\n\"displayTimeUnit\":\"ns\",\n\"otherData\":{\n\"ts\":"
        ));
        assert!(text.ends_with("\"version\":\"MLPerf LoadGen v1.0\"\n}\n}\n"));
    }
}
