//! Device telemetry of the boxes under test, read from each server's Prometheus endpoint
//! (`inference-server` exports SoC and accelerator temperature, CPU frequency and governor, the
//! Raspberry Pi's throttling flags, memory and accelerator resets) at the start and end of a run
//! and sampled during it. It goes into the detail log as `telemetry_*` lines and into a section
//! after the summary, which the MLCommons parsers skip, and a run during which a device throttled
//! or reset is marked there, so a benchmark on a hot Pi cannot pass silently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loadgen::observer::{Observation, RunObserver};
use prometheus_parse::{Scrape, Value};
use serde_json::json;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why telemetry could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TelemetryError {
    #[error("cannot scrape {url}: {reason}")]
    Scrape { url: String, reason: String },
    #[error("{url} does not serve Prometheus text: {reason}")]
    Format { url: String, reason: String },
}

/// The telemetry in one scrape; a source the box lacks is absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Thermal zones, by `zone (type)`, °C.
    pub soc_celsius: BTreeMap<String, f64>,
    /// Accelerators' own sensors, by device, °C.
    pub accelerator_celsius: BTreeMap<String, f64>,
    /// Current CPU frequency by CPU, Hz.
    pub cpu_hz: BTreeMap<u32, f64>,
    /// The frequency each CPU may scale up to now, Hz (lowered when capped).
    pub cpu_max_hz: BTreeMap<u32, f64>,
    pub governors: BTreeMap<u32, String>,
    /// Raspberry Pi throttling conditions set now; `None` off a Pi.
    pub pi_now: Option<BTreeSet<String>>,
    /// Raspberry Pi throttling conditions seen since boot.
    pub pi_since_boot: Option<BTreeSet<String>>,
    /// Accelerator resets since their drivers loaded, by device.
    pub accelerator_resets: BTreeMap<String, f64>,
    /// Whether each accelerator's driver says it is alive.
    pub accelerator_alive: BTreeMap<String, bool>,
    pub memory_available_bytes: Option<f64>,
    /// Backend runs that failed on a device, over every model.
    pub device_errors: f64,
}

impl Snapshot {
    /// Reads the telemetry out of a `/metrics` page.
    pub fn parse(text: &str) -> std::io::Result<Self> {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?;
        let mut s = Snapshot::default();
        for sample in &scrape.samples {
            let value = match sample.value {
                Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => v,
                _ => continue,
            };
            let label = |name: &str| sample.labels.get(name).unwrap_or_default().to_string();
            let cpu = || label("cpu").parse::<u32>().ok();
            match sample.metric.as_str() {
                "inference_soc_temperature_celsius" => {
                    let name = format!("{} ({})", label("zone"), label("type"));
                    s.soc_celsius.insert(name, value);
                }
                "inference_accelerator_temperature_celsius" => {
                    s.accelerator_celsius.insert(label("device"), value);
                }
                "inference_cpu_frequency_hertz" => {
                    if let Some(cpu) = cpu() {
                        s.cpu_hz.insert(cpu, value);
                    }
                }
                "inference_cpu_frequency_max_hertz" => {
                    if let Some(cpu) = cpu() {
                        s.cpu_max_hz.insert(cpu, value);
                    }
                }
                "inference_cpu_governor" if value == 1.0 => {
                    if let Some(cpu) = cpu() {
                        s.governors.insert(cpu, label("governor"));
                    }
                }
                "inference_pi_throttled" => {
                    let set = match label("when").as_str() {
                        "now" => &mut s.pi_now,
                        "since_boot" => &mut s.pi_since_boot,
                        _ => continue,
                    };
                    let set = set.get_or_insert_with(BTreeSet::new);
                    if value == 1.0 {
                        set.insert(label("condition"));
                    }
                }
                "inference_accelerator_resets_total" => {
                    s.accelerator_resets.insert(label("device"), value);
                }
                "inference_accelerator_alive" => {
                    s.accelerator_alive.insert(label("device"), value == 1.0);
                }
                "inference_memory_available_bytes" => s.memory_available_bytes = Some(value),
                "inference_backend_errors_total" if label("kind") == "device" => {
                    s.device_errors += value;
                }
                _ => {}
            }
        }
        Ok(s)
    }

    /// Whether the page held any device telemetry at all.
    pub fn is_empty(&self) -> bool {
        let empty = Snapshot {
            device_errors: self.device_errors,
            ..Snapshot::default()
        };
        *self == empty
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "soc_temperature_celsius": self.soc_celsius,
            "accelerator_temperature_celsius": self.accelerator_celsius,
            "cpu_frequency_hz": self.cpu_hz,
            "cpu_frequency_max_hz": self.cpu_max_hz,
            "cpu_governor": self.governors,
            "pi_throttled_now": self.pi_now,
            "pi_throttled_since_boot": self.pi_since_boot,
            "accelerator_resets": self.accelerator_resets,
            "accelerator_alive": self.accelerator_alive,
            "memory_available_bytes": self.memory_available_bytes,
            "device_errors": self.device_errors,
        })
    }
}

/// Something that happened to a device during the run and makes its result suspect.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// The CPU or SoC ran slower than it could: why.
    Throttled(String),
    /// An accelerator reset or died: which, and how.
    DeviceReset(String),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Throttled(why) => write!(f, "throttled: {why}"),
            Event::DeviceReset(what) => write!(f, "device reset: {what}"),
        }
    }
}

/// What one source showed over a run.
#[derive(Debug, Clone, Default)]
struct Track {
    start: Option<Snapshot>,
    last: Option<Snapshot>,
    samples: usize,
    max_soc_celsius: BTreeMap<String, f64>,
    max_accelerator_celsius: BTreeMap<String, f64>,
    min_cpu_hz: Option<f64>,
    min_memory_available: Option<f64>,
    events: BTreeSet<Event>,
    /// The latest scrape failure, if the latest scrape failed.
    error: Option<TelemetryError>,
}

impl Track {
    /// Takes one scrape into account.
    fn add(&mut self, now: Snapshot) {
        self.samples += 1;
        let keep_max = |into: &mut BTreeMap<String, f64>, from: &BTreeMap<String, f64>| {
            for (name, &c) in from {
                let max = into.entry(name.clone()).or_insert(c);
                *max = max.max(c);
            }
        };
        keep_max(&mut self.max_soc_celsius, &now.soc_celsius);
        keep_max(&mut self.max_accelerator_celsius, &now.accelerator_celsius);
        if let Some(low) = now.cpu_hz.values().copied().reduce(f64::min) {
            self.min_cpu_hz = Some(self.min_cpu_hz.map_or(low, |m| m.min(low)));
        }
        if let Some(free) = now.memory_available_bytes {
            self.min_memory_available =
                Some(self.min_memory_available.map_or(free, |m| m.min(free)));
        }
        let start = self.start.get_or_insert_with(|| now.clone());
        for condition in now.pi_now.iter().flatten() {
            self.events.insert(Event::Throttled(format!(
                "Raspberry Pi firmware reports {condition}"
            )));
        }
        let before = start.pi_since_boot.clone().unwrap_or_default();
        for condition in now
            .pi_since_boot
            .iter()
            .flatten()
            .filter(|c| !before.contains(*c))
        {
            self.events.insert(Event::Throttled(format!(
                "Raspberry Pi firmware recorded {condition}"
            )));
        }
        for (cpu, &cap) in &now.cpu_max_hz {
            if start.cpu_max_hz.get(cpu).is_some_and(|&was| cap < was) {
                self.events.insert(Event::Throttled(format!(
                    "cpu{cpu} capped below its starting limit"
                )));
            }
        }
        for (device, &resets) in &now.accelerator_resets {
            if start
                .accelerator_resets
                .get(device)
                .is_some_and(|&was| resets > was)
            {
                self.events
                    .insert(Event::DeviceReset(format!("{device} reset")));
            }
        }
        for (device, alive) in &now.accelerator_alive {
            if !alive {
                self.events
                    .insert(Event::DeviceReset(format!("{device} not alive")));
            }
        }
        self.error = None;
        self.last = Some(now);
    }
}

/// One server's metrics endpoint and what it showed.
#[derive(Debug)]
struct Source {
    url: String,
    agent: ureq::Agent,
    token: Option<String>,
    track: Mutex<Track>,
}

impl Source {
    fn scrape(&self) {
        let result = fetch(&self.agent, &self.url, self.token.as_deref());
        let mut track = self.track.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(snapshot) => track.add(snapshot),
            Err(err) => track.error = Some(err),
        }
    }

    fn track(&self) -> Track {
        self.track.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The HTTP client of the scrapes; `https://` URLs are checked with `tls` (the monitor always
/// passes one for them: `--tls-ca` or the system's roots).
fn agent(tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder().timeout_global(Some(SCRAPE_TIMEOUT));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().new_agent()
}

/// Scrapes one `/metrics` page, with a bearer `token` when given.
fn fetch(agent: &ureq::Agent, url: &str, token: Option<&str>) -> Result<Snapshot, TelemetryError> {
    let scrape_error = |reason: String| TelemetryError::Scrape {
        url: url.to_string(),
        reason,
    };
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let text = request
        .call()
        .map_err(|e| scrape_error(e.to_string()))?
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .map_err(|e| scrape_error(e.to_string()))?;
    Snapshot::parse(&text).map_err(|e| TelemetryError::Format {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

/// How the run looked from the devices' side.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Telemetry was read and nothing happened.
    Clean,
    /// A device throttled or reset.
    Marked(Vec<Event>),
    /// No telemetry could be read (no server exports any, or none answered).
    Unchecked(String),
}

/// Watches the servers' telemetry around a run; hand it to the runner as its observer.
#[derive(Debug)]
pub struct Monitor {
    sources: Vec<Arc<Source>>,
    interval: Duration,
    stop: Arc<AtomicBool>,
    sampler: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How the scrapes reach `/metrics`: the TLS settings of `https://` URLs (the CA and client
/// certificate of the gRPC endpoints; without a CA, the system's roots) and the bearer token the
/// servers want.
#[derive(Debug, Clone, Default)]
pub struct ScrapeAccess {
    pub tls: Option<ureq::tls::TlsConfig>,
    pub token: Option<String>,
}

impl Monitor {
    /// A monitor of these `/metrics` URLs, reached with `access`, sampling every `interval`
    /// during the run.
    pub fn new(urls: &[String], interval: Duration, access: ScrapeAccess) -> Self {
        Monitor {
            sources: urls
                .iter()
                .map(|url| {
                    Arc::new(Source {
                        url: url.clone(),
                        agent: agent(access.tls.clone()),
                        token: access.token.clone(),
                        track: Mutex::new(Track::default()),
                    })
                })
                .collect(),
            interval,
            stop: Arc::new(AtomicBool::new(false)),
            sampler: Mutex::new(None),
        }
    }

    /// The verdict over every source, once the run has finished.
    pub fn verdict(&self) -> Verdict {
        let tracks: Vec<(String, Track)> = self
            .sources
            .iter()
            .map(|s| (s.url.clone(), s.track()))
            .collect();
        let mut events = Vec::new();
        let mut checked = false;
        let mut why_not = Vec::new();
        for (url, track) in &tracks {
            match (&track.start, &track.error) {
                (Some(start), _) if !start.is_empty() => checked = true,
                (Some(_), _) => why_not.push(format!("{url} exports no device telemetry")),
                (None, Some(err)) => why_not.push(err.to_string()),
                (None, None) => why_not.push(format!("{url} was never scraped")),
            }
            events.extend(track.events.iter().map(|e| {
                if tracks.len() > 1 {
                    match e {
                        Event::Throttled(w) => Event::Throttled(format!("{w} ({url})")),
                        Event::DeviceReset(w) => Event::DeviceReset(format!("{w} ({url})")),
                    }
                } else {
                    e.clone()
                }
            }));
        }
        if !events.is_empty() {
            Verdict::Marked(events)
        } else if checked {
            Verdict::Clean
        } else {
            Verdict::Unchecked(why_not.join("; "))
        }
    }

    fn stop_sampler(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self
            .sampler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = thread.join();
        }
    }
}

impl RunObserver for Monitor {
    fn started(&self) -> Vec<Observation> {
        for source in &self.sources {
            source.scrape();
        }
        let (sources, stop, interval) =
            (self.sources.clone(), Arc::clone(&self.stop), self.interval);
        let sampler = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || {
                let step = Duration::from_millis(50).min(interval);
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited >= interval {
                        waited = Duration::ZERO;
                        for source in &sources {
                            source.scrape();
                        }
                    }
                }
            })
            .ok();
        *self.sampler.lock().unwrap_or_else(|p| p.into_inner()) = sampler;
        self.sources
            .iter()
            .map(|source| {
                let track = source.track();
                let value = match (&track.start, &track.error) {
                    (Some(s), _) => json!({"url": source.url, "telemetry": s.to_json()}),
                    (None, Some(err)) => json!({"url": source.url, "error": err.to_string()}),
                    (None, None) => json!({"url": source.url, "error": "not scraped"}),
                };
                Observation {
                    key: "telemetry_start".into(),
                    json: value.to_string(),
                    warning: false,
                }
            })
            .collect()
    }

    fn finished(&self) -> Vec<Observation> {
        self.stop_sampler();
        let mut lines = Vec::new();
        for source in &self.sources {
            source.scrape();
            let track = source.track();
            let value = json!({
                "url": source.url,
                "samples": track.samples,
                "telemetry": track.last.as_ref().map(Snapshot::to_json),
                "max_soc_temperature_celsius": track.max_soc_celsius,
                "max_accelerator_temperature_celsius": track.max_accelerator_celsius,
                "min_cpu_frequency_hz": track.min_cpu_hz,
                "min_memory_available_bytes": track.min_memory_available,
                "error": track.error.as_ref().map(ToString::to_string),
            });
            lines.push(Observation {
                key: "telemetry_end".into(),
                json: value.to_string(),
                warning: false,
            });
        }
        if let Verdict::Marked(events) = self.verdict() {
            for event in events {
                lines.push(Observation {
                    key: "telemetry_run_marked".into(),
                    json: json!(event.to_string()).to_string(),
                    warning: true,
                });
            }
        }
        lines
    }

    fn summary(&self) -> Option<String> {
        let mut text = String::new();
        text.push_str("================================================\n");
        text.push_str("Device telemetry (loadgen-client; not LoadGen output)\n");
        text.push_str("================================================\n");
        let verdict = match self.verdict() {
            Verdict::Clean => "OK (no throttling or device reset seen)".to_string(),
            Verdict::Marked(events) => {
                let what: Vec<String> = events.iter().map(ToString::to_string).collect();
                format!("MARKED: {}", what.join("; "))
            }
            Verdict::Unchecked(why) => format!("UNCHECKED ({why})"),
        };
        text.push_str(&format!("Run during device trouble : {verdict}\n"));
        for source in &self.sources {
            let track = source.track();
            text.push_str(&format!(
                "Source : {} ({} samples)\n",
                source.url, track.samples
            ));
            let (Some(start), Some(end)) = (&track.start, &track.last) else {
                continue;
            };
            for (name, max) in &track.max_soc_celsius {
                text.push_str(&format!(
                    "SoC temperature {name} : start {}, max {max:.1} C, end {}\n",
                    celsius(start.soc_celsius.get(name)),
                    celsius(end.soc_celsius.get(name)),
                ));
            }
            for (name, max) in &track.max_accelerator_celsius {
                text.push_str(&format!(
                    "Accelerator temperature {name} : start {}, max {max:.1} C, end {}\n",
                    celsius(start.accelerator_celsius.get(name)),
                    celsius(end.accelerator_celsius.get(name)),
                ));
            }
            if let Some(min) = track.min_cpu_hz {
                let lowest = |s: &Snapshot| s.cpu_hz.values().copied().reduce(f64::min);
                text.push_str(&format!(
                    "CPU frequency (lowest CPU) : start {}, min {:.0} MHz, end {}\n",
                    megahertz(lowest(start)),
                    min / 1e6,
                    megahertz(lowest(end)),
                ));
            }
            let governors: BTreeSet<&String> = end.governors.values().collect();
            if !governors.is_empty() {
                let names: Vec<&str> = governors.iter().map(|g| g.as_str()).collect();
                text.push_str(&format!("CPU governor : {}\n", names.join(", ")));
            }
            for (device, resets) in &end.accelerator_resets {
                let before = start
                    .accelerator_resets
                    .get(device)
                    .copied()
                    .unwrap_or(*resets);
                text.push_str(&format!(
                    "Accelerator resets {device} : {} during the run\n",
                    resets - before
                ));
            }
            if let Some(min) = track.min_memory_available {
                text.push_str(&format!(
                    "Memory available (min) : {:.0} MiB\n",
                    min / (1 << 20) as f64
                ));
            }
            text.push_str(&format!(
                "Device errors : {} during the run\n",
                end.device_errors - start.device_errors
            ));
        }
        Some(text)
    }
}

fn celsius(value: Option<&f64>) -> String {
    value.map_or("-".into(), |c| format!("{c:.1} C"))
}

fn megahertz(value: Option<f64>) -> String {
    value.map_or("-".into(), |hz| format!("{:.0} MHz", hz / 1e6))
}

/// The metrics URL of the server at a gRPC endpoint: the same scheme and host, the next port
/// (8001 → 8002, the layout of Triton and of `inference-server`'s defaults; a server with TLS
/// serves it on every listener).
pub fn default_metrics_url(endpoint: &str) -> Option<String> {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("http", endpoint));
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else {
        "http"
    };
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(format!(
        "{scheme}://{host}:{}/metrics",
        port.checked_add(1)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# TYPE inference_soc_temperature_celsius gauge
inference_soc_temperature_celsius{zone=\"thermal_zone0\",type=\"cpu-thermal\"} 52.5
# TYPE inference_cpu_frequency_hertz gauge
inference_cpu_frequency_hertz{cpu=\"0\"} 1500000000
inference_cpu_frequency_hertz{cpu=\"1\"} 600000000
# TYPE inference_cpu_frequency_max_hertz gauge
inference_cpu_frequency_max_hertz{cpu=\"0\"} 1500000000
# TYPE inference_cpu_governor gauge
inference_cpu_governor{cpu=\"0\",governor=\"ondemand\"} 1
inference_cpu_governor{cpu=\"0\",governor=\"performance\"} 0
# TYPE inference_pi_throttled gauge
inference_pi_throttled{condition=\"throttled\",when=\"now\"} 0
inference_pi_throttled{condition=\"under_voltage\",when=\"since_boot\"} 1
# TYPE inference_accelerator_resets_total counter
inference_accelerator_resets_total{device=\"apex_0\"} 0
# TYPE inference_accelerator_alive gauge
inference_accelerator_alive{device=\"apex_0\"} 1
# TYPE inference_backend_errors_total counter
inference_backend_errors_total{model=\"m\",backend=\"b\",device=\"d\",kind=\"device\"} 2
inference_backend_errors_total{model=\"m\",backend=\"b\",device=\"d\",kind=\"internal\"} 5
";

    #[test]
    fn a_metrics_page_gives_its_telemetry() {
        let s = Snapshot::parse(PAGE).unwrap();
        assert_eq!(s.soc_celsius["thermal_zone0 (cpu-thermal)"], 52.5);
        assert_eq!(s.cpu_hz.len(), 2);
        assert_eq!(s.governors[&0], "ondemand");
        assert_eq!(s.pi_now, Some(BTreeSet::new()));
        assert_eq!(
            s.pi_since_boot,
            Some(BTreeSet::from(["under_voltage".to_string()]))
        );
        assert_eq!(s.device_errors, 2.0);
        assert!(!s.is_empty());
        assert!(Snapshot::parse("up 1\n").unwrap().is_empty());
    }

    #[test]
    fn throttling_capping_and_resets_during_the_run_mark_it() {
        let start = Snapshot::parse(PAGE).unwrap();
        let mut track = Track::default();
        track.add(start.clone());
        track.add(start.clone());
        assert!(
            track.events.is_empty(),
            "a steady box is clean, whatever happened before the run"
        );

        let mut hot = start.clone();
        hot.pi_now = Some(BTreeSet::from(["throttled".to_string()]));
        hot.soc_celsius
            .insert("thermal_zone0 (cpu-thermal)".into(), 84.0);
        hot.cpu_max_hz.insert(0, 1.0e9);
        hot.accelerator_resets.insert("apex_0".into(), 1.0);
        track.add(hot);
        track.add(start);
        let events: Vec<String> = track.events.iter().map(ToString::to_string).collect();
        assert_eq!(
            events,
            [
                "throttled: Raspberry Pi firmware reports throttled",
                "throttled: cpu0 capped below its starting limit",
                "device reset: apex_0 reset",
            ]
        );
        assert_eq!(track.max_soc_celsius["thermal_zone0 (cpu-thermal)"], 84.0);
        assert_eq!(track.min_cpu_hz, Some(6.0e8));
    }

    #[test]
    fn the_metrics_url_follows_the_grpc_endpoint() {
        assert_eq!(
            default_metrics_url("http://127.0.0.1:8001").as_deref(),
            Some("http://127.0.0.1:8002/metrics")
        );
        assert_eq!(
            default_metrics_url("http://[::1]:9001/").as_deref(),
            Some("http://[::1]:9002/metrics")
        );
        assert_eq!(default_metrics_url("http://pi.local"), None);
        assert_eq!(
            default_metrics_url("https://pi.local:8001").as_deref(),
            Some("https://pi.local:8002/metrics")
        );
    }

    #[test]
    fn an_unreachable_server_leaves_the_run_unchecked() {
        let monitor = Monitor::new(
            &["http://127.0.0.1:9/metrics".into()],
            Duration::from_secs(1),
            ScrapeAccess::default(),
        );
        let lines = monitor.started();
        assert!(lines[0].json.contains("error"), "{lines:?}");
        monitor.finished();
        assert!(
            matches!(monitor.verdict(), Verdict::Unchecked(why) if why.contains("127.0.0.1:9"))
        );
        assert!(monitor.summary().unwrap().contains("UNCHECKED"));
    }
}
