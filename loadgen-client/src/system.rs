//! A description of the machine the client runs on, read from /proc and /etc/os-release: what
//! a results store row and a submission's system description need (CPU, memory, OS). When the
//! endpoints are on loopback this is the server's machine too.

use serde::{Deserialize, Serialize};

/// The machine, as far as Linux tells it; fields it does not tell are empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemDescription {
    pub host_name: String,
    pub operating_system: String,
    pub kernel: String,
    pub architecture: String,
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub memory_bytes: u64,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The value of the first `key : value` line of /proc/cpuinfo or /proc/meminfo with `key`.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

impl SystemDescription {
    /// This machine.
    pub fn of_this_machine() -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let os_release = read("/etc/os-release");
        let os = os_release
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        // x86 names the CPU in "model name"; arm64 boards in "Model" (the board) or not at all.
        let cpu = field(&cpuinfo, "model name")
            .or_else(|| field(&cpuinfo, "Model"))
            .or_else(|| field(&cpuinfo, "CPU part").map(|_| "arm64"))
            .unwrap_or_default()
            .to_string();
        let memory_kib: u64 = field(&meminfo, "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Self {
            host_name: read("/proc/sys/kernel/hostname").trim().to_string(),
            operating_system: os,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            architecture: std::env::consts::ARCH.to_string(),
            cpu_model: cpu,
            logical_cpus: std::thread::available_parallelism().map_or(0, usize::from),
            memory_bytes: memory_kib * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_described() {
        let s = SystemDescription::of_this_machine();
        assert!(s.logical_cpus >= 1);
        assert!(s.memory_bytes > 1 << 20, "{s:?}");
        assert!(!s.kernel.is_empty() && !s.architecture.is_empty(), "{s:?}");
    }

    #[test]
    fn proc_fields_are_found_by_key() {
        let text = "processor\t: 0\nmodel name\t: Cortex\nMemTotal:  1024 kB\n";
        assert_eq!(field(text, "model name"), Some("Cortex"));
        assert_eq!(field(text, "MemTotal"), Some("1024 kB"));
        assert_eq!(field(text, "missing"), None);
    }
}
