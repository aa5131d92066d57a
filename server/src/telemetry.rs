//! Device telemetry of the box the server runs on, read from sysfs and procfs under a root
//! folder (`/` on a real box, a fake tree in tests): SoC temperatures, CPU frequency and governor,
//! the Raspberry Pi firmware's throttling flags, memory, and accelerator temperature, resets and
//! status (the Coral PCIe driver's `/sys/class/apex`). A source the box lacks is left out of the
//! reading, never filled with a made-up value.

use std::path::{Path, PathBuf};

/// One reading of every source found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub soc_temperatures: Vec<SocTemperature>,
    pub cpus: Vec<CpuFrequency>,
    /// The firmware's `get_throttled` bits (Raspberry Pi only).
    pub pi_throttled: Option<PiThrottled>,
    pub memory: Option<Memory>,
    pub accelerators: Vec<Accelerator>,
}

/// A thermal zone: `/sys/class/thermal/thermal_zone*`.
#[derive(Debug, Clone, PartialEq)]
pub struct SocTemperature {
    /// The zone's folder name, e.g. `thermal_zone0`.
    pub zone: String,
    /// What the zone measures, e.g. `cpu-thermal` or `x86_pkg_temp`.
    pub kind: String,
    pub celsius: f64,
}

/// One CPU's frequency scaling: `/sys/devices/system/cpu/cpu*/cpufreq`.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuFrequency {
    /// The CPU number.
    pub cpu: u32,
    pub current_hz: Option<f64>,
    /// The cap the governor may scale up to now (`scaling_max_freq`).
    pub max_hz: Option<f64>,
    /// The highest the hardware can run (`cpuinfo_max_freq`).
    pub hardware_max_hz: Option<f64>,
    pub governor: Option<String>,
}

/// The Raspberry Pi firmware's throttling state (`vcgencmd get_throttled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiThrottled(pub u32);

/// The conditions `get_throttled` reports, with their bit (now) — the same condition since boot
/// is that bit plus 16.
pub const PI_THROTTLE_CONDITIONS: [(&str, u32); 4] = [
    ("under_voltage", 0),
    ("arm_frequency_capped", 1),
    ("throttled", 2),
    ("soft_temperature_limit", 3),
];

impl PiThrottled {
    /// Whether `condition`'s bit is set now.
    pub fn now(self, bit: u32) -> bool {
        self.0 & (1 << bit) != 0
    }

    /// Whether `condition` happened since boot.
    pub fn since_boot(self, bit: u32) -> bool {
        self.0 & (1 << (bit + 16)) != 0
    }
}

/// `/proc/meminfo`'s totals, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    pub total_bytes: f64,
    pub available_bytes: f64,
}

/// An accelerator whose driver reports on itself: `/sys/class/apex/apex_*` (Coral PCIe/M.2).
#[derive(Debug, Clone, PartialEq)]
pub struct Accelerator {
    /// The device's name, e.g. `apex_0` (its node is `/dev/apex_0`).
    pub device: String,
    pub celsius: Option<f64>,
    /// Resets since the driver loaded.
    pub resets: Option<u64>,
    /// The driver's status is `ALIVE`.
    pub alive: Option<bool>,
}

/// Reads telemetry under a root folder.
#[derive(Debug, Clone)]
pub struct Telemetry {
    root: PathBuf,
}

impl Telemetry {
    /// Telemetry read under `root` (`/` on a real box).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Telemetry { root: root.into() }
    }

    /// Reads every source there is now.
    pub fn read(&self) -> Reading {
        Reading {
            soc_temperatures: self.soc_temperatures(),
            cpus: self.cpus(),
            pi_throttled: self.pi_throttled(),
            memory: self.memory(),
            accelerators: self.accelerators(),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn soc_temperatures(&self) -> Vec<SocTemperature> {
        entries(&self.path("sys/class/thermal"), "thermal_zone")
            .into_iter()
            .filter_map(|(zone, dir)| {
                Some(SocTemperature {
                    celsius: read_number(&dir.join("temp"))? / 1000.0,
                    kind: read_text(&dir.join("type")).unwrap_or_else(|| zone.clone()),
                    zone,
                })
            })
            .collect()
    }

    fn cpus(&self) -> Vec<CpuFrequency> {
        let mut cpus: Vec<CpuFrequency> = entries(&self.path("sys/devices/system/cpu"), "cpu")
            .into_iter()
            .filter_map(|(name, dir)| {
                let cpu = name.strip_prefix("cpu")?.parse().ok()?;
                let freq = dir.join("cpufreq");
                let khz = |file: &str| read_number(&freq.join(file)).map(|k| k * 1000.0);
                let reading = CpuFrequency {
                    cpu,
                    current_hz: khz("scaling_cur_freq"),
                    max_hz: khz("scaling_max_freq"),
                    hardware_max_hz: khz("cpuinfo_max_freq"),
                    governor: read_text(&freq.join("scaling_governor")),
                };
                let any = reading.current_hz.is_some()
                    || reading.max_hz.is_some()
                    || reading.governor.is_some();
                any.then_some(reading)
            })
            .collect();
        cpus.sort_by_key(|c| c.cpu);
        cpus
    }

    fn pi_throttled(&self) -> Option<PiThrottled> {
        let text = read_text(&self.path("sys/devices/platform/soc/soc:firmware/get_throttled"))?;
        let digits = text.trim_start_matches("0x");
        u32::from_str_radix(digits, 16).ok().map(PiThrottled)
    }

    fn memory(&self) -> Option<Memory> {
        let text = std::fs::read_to_string(self.path("proc/meminfo")).ok()?;
        let field = |key: &str| {
            text.lines().find_map(|line| {
                let rest = line.strip_prefix(key)?.strip_prefix(':')?;
                let kib: f64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
                Some(kib * 1024.0)
            })
        };
        Some(Memory {
            total_bytes: field("MemTotal")?,
            available_bytes: field("MemAvailable")?,
        })
    }

    fn accelerators(&self) -> Vec<Accelerator> {
        entries(&self.path("sys/class/apex"), "apex_")
            .into_iter()
            .map(|(device, dir)| Accelerator {
                celsius: read_number(&dir.join("temp")).map(|m| m / 1000.0),
                resets: read_number(&dir.join("reset_count")).map(|n| n as u64),
                alive: read_text(&dir.join("status")).map(|s| s == "ALIVE"),
                device,
            })
            .collect()
    }
}

/// The entries of `dir` whose names start with `prefix`, sorted by name.
fn entries(dir: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = read
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.starts_with(prefix).then(|| (name, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// A sysfs file's text, trimmed; `None` when absent, unreadable or empty.
fn read_text(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A sysfs file holding one number.
fn read_number(path: &Path) -> Option<f64> {
    read_text(path)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, relative: &str, text: &str) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn an_empty_root_has_no_sources_and_none_are_made_up() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Telemetry::new(dir.path()).read(), Reading::default());
    }

    #[test]
    fn reads_a_raspberry_pi_with_a_coral_pcie() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/class/thermal/thermal_zone0/temp", "61254\n");
        write(
            root,
            "sys/class/thermal/thermal_zone0/type",
            "cpu-thermal\n",
        );
        write(root, "sys/class/thermal/cooling_device0/type", "fan\n");
        write(
            root,
            "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq",
            "600000\n",
        );
        write(
            root,
            "sys/devices/system/cpu/cpu1/cpufreq/scaling_max_freq",
            "1500000\n",
        );
        write(
            root,
            "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
            "ondemand\n",
        );
        write(
            root,
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
            "1500000\n",
        );
        std::fs::create_dir_all(root.join("sys/devices/system/cpu/cpufreq")).unwrap();
        write(
            root,
            "sys/devices/platform/soc/soc:firmware/get_throttled",
            "0x50005\n",
        );
        write(
            root,
            "proc/meminfo",
            "MemTotal:  3884096 kB\nMemFree: 1 kB\nMemAvailable: 1000 kB\n",
        );
        write(root, "sys/class/apex/apex_0/temp", "44500\n");
        write(root, "sys/class/apex/apex_0/reset_count", "2\n");
        write(root, "sys/class/apex/apex_0/status", "DEAD\n");

        let reading = Telemetry::new(root).read();
        assert_eq!(
            reading.soc_temperatures,
            [SocTemperature {
                zone: "thermal_zone0".into(),
                kind: "cpu-thermal".into(),
                celsius: 61.254
            }]
        );
        assert_eq!(reading.cpus.len(), 2, "{:?}", reading.cpus);
        assert_eq!(reading.cpus[0].cpu, 0);
        assert_eq!(reading.cpus[0].current_hz, Some(1.5e9));
        assert_eq!(reading.cpus[0].governor, None);
        assert_eq!(reading.cpus[1].max_hz, Some(1.5e9));
        assert_eq!(reading.cpus[1].governor.as_deref(), Some("ondemand"));
        let throttled = reading.pi_throttled.expect("get_throttled");
        assert!(throttled.now(0) && !throttled.now(1) && throttled.now(2) && !throttled.now(3));
        assert!(throttled.since_boot(0) && throttled.since_boot(2) && !throttled.since_boot(1));
        assert_eq!(
            reading.memory,
            Some(Memory {
                total_bytes: 3884096.0 * 1024.0,
                available_bytes: 1000.0 * 1024.0
            })
        );
        assert_eq!(
            reading.accelerators,
            [Accelerator {
                device: "apex_0".into(),
                celsius: Some(44.5),
                resets: Some(2),
                alive: Some(false)
            }]
        );
    }

    #[test]
    fn garbage_in_a_source_leaves_that_source_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/class/thermal/thermal_zone0/temp", "hot\n");
        write(
            root,
            "sys/devices/platform/soc/soc:firmware/get_throttled",
            "zz\n",
        );
        write(root, "proc/meminfo", "MemTotal: lots\n");
        assert_eq!(Telemetry::new(root).read(), Reading::default());
    }
}
