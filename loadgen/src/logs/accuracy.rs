//! The accuracy log (`mlperf_log_accuracy.json`), written entry by entry in completion order.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Writer of the accuracy JSON: `[`, then `\n{ ... }` entries joined by `,`, then `\n]\n`.
pub struct AccuracyLog {
    out: BufWriter<File>,
    needs_comma: bool,
    entries: u64,
    finished: bool,
}

impl AccuracyLog {
    /// Creates (truncates) the file and writes the opening bracket.
    pub fn create(path: &Path) -> io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(b"[")?;
        Ok(Self {
            out,
            needs_comma: false,
            entries: 0,
            finished: false,
        })
    }

    /// Appends one sample's response bytes as upper-case hex.
    pub fn log(&mut self, seq_id: u64, qsl_idx: usize, data: &[u8]) -> io::Result<()> {
        let sep = if self.needs_comma { ",\n{ " } else { "\n{ " };
        let line = format!(
            "{sep}\"seq_id\" : {seq_id}, \"qsl_idx\" : {qsl_idx}, \"data\" : \"{}\" }}",
            hex_upper(data)
        );
        self.out.write_all(line.as_bytes())?;
        self.needs_comma = true;
        self.entries += 1;
        Ok(())
    }

    /// Number of entries written.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the closing bracket (once) and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.finished {
            self.finished = true;
            self.out.write_all(b"\n]\n")?;
        }
        self.out.flush()
    }
}

/// Bytes as two upper-case hex digits each, in memory order.
pub fn hex_upper(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_official() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let empty = dir.path().join("e.json");
        AccuracyLog::create(&empty)
            .and_then(|mut a| a.finish())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_to_string(&empty).unwrap_or_default(),
            "[\n]\n"
        );
        let path = dir.path().join("a.json");
        let mut log = AccuracyLog::create(&path).unwrap_or_else(|e| panic!("{e}"));
        log.log(0, 4867, &867.0f32.to_le_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        log.log(1, 3, &[0xab]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(log.entries(), 2);
        log.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            "[\n{ \"seq_id\" : 0, \"qsl_idx\" : 4867, \"data\" : \"00C05844\" },\n{ \"seq_id\" : 1, \"qsl_idx\" : 3, \"data\" : \"AB\" }\n]\n"
        );
    }
}
