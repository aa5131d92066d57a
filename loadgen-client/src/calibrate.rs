//! `loadgen-client calibrate`: short probe runs measure the system, and the settings that let the
//! next full run be VALID on the first try are written as an ordinary user.conf.
//!
//! LoadGen pre-generates its schedule from the expected latency (SingleStream, MultiStream) or
//! the expected QPS (Offline). When these do not fit the system, a full run ends INVALID ("Ran
//! out of generated queries", or Offline's one query finishing before min_duration), so they are
//! measured. Server's target QPS is the highest one whose latency percentile meets the bound: a
//! bracketing and bisection search over probe runs, as FindPeakPerformance does, then lowered by
//! the safety margin and checked by one more probe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loadgen::early_stopping::{self, MinPassingQueriesFinder};
use loadgen::results::PerformanceSummary;
use loadgen::runner::{self, LoadgenError, RunOptions};
use loadgen::settings::{LogSettings, TestMode, TestScenario, TestSettings};
use loadgen::sut::{Qsl, Sut};

/// Expected latency of a SingleStream probe: far below any real system, so the probe's schedule
/// never runs out before its duration (2 × 5 s / 50 µs = 200 000 queries).
const PROBE_SINGLE_STREAM_LATENCY_NS: f64 = 50_000.0;
/// The same for a MultiStream probe, whose queries carry several samples.
const PROBE_MULTI_STREAM_LATENCY_NS: f64 = 400_000.0;
/// Samples in the first Offline probe's query, before the throughput is known.
const FIRST_OFFLINE_PROBE_SAMPLES: u64 = 64;
/// Offline probes stop once one lasts this fraction of the probe time (the throughput has
/// settled), or after this many.
const SETTLED_OFFLINE_FRACTION: f64 = 0.5;
const MAX_OFFLINE_PROBES: usize = 4;
/// Queries of a Server probe at the least, so the latency percentile rests on enough samples.
const MIN_SERVER_PROBE_QUERIES: u64 = 100;
/// Bounds of the Server search: doublings above the estimate, halvings below it, bisections.
const MAX_DOUBLINGS: usize = 10;
const MAX_HALVINGS: usize = 12;
const MAX_BISECTIONS: usize = 10;
/// Times the chosen Server QPS is lowered by the margin again when its check probe fails.
const MAX_CHECK_RETRIES: usize = 3;

/// How calibration probes the system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationPlan {
    /// Length of one probe run.
    pub probe_time: Duration,
    /// Fraction given away for safety: Server's QPS is lowered by it and Offline's expected QPS
    /// raised by it (0.1 = 10 %).
    pub margin: f64,
    /// The Server search stops when its bounds are within this ratio (0.05 = 5 %).
    pub tolerance: f64,
}

/// One calibrated setting and why it was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrated {
    pub scenario: TestScenario,
    /// The user.conf key: `target_latency` (milliseconds) or `target_qps`.
    pub key: &'static str,
    pub value: f64,
    /// What was measured and why this value, one sentence each.
    pub reasons: Vec<String>,
}

impl Calibrated {
    /// The user.conf line for the MLPerf model `model`.
    pub fn line(&self, model: &str) -> String {
        format!(
            "{model}.{}.{} = {}",
            self.scenario.as_str(),
            self.key,
            self.value
        )
    }
}

/// Why calibration could not choose a value.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Probe(E),
    #[error("the {scenario} probe ({label}) reported no performance result")]
    NoResult {
        scenario: &'static str,
        label: String,
    },
    #[error(
        "{scenario} probe {label}: {failure}; calibration needs every sample answered (is the \
         server up and serving the model?)"
    )]
    FailedSamples {
        scenario: &'static str,
        label: String,
        failure: String,
    },
    #[error(
        "no Server QPS down to {lowest:.3} meets the latency bound of {bound_ms} ms at the \
         {percentile}th percentile (last probe: {latency_ms:.3} ms{failure}); raise the bound \
         (--max-latency) or serve a faster model"
    )]
    NoQpsMeetsTheBound {
        lowest: f64,
        bound_ms: f64,
        percentile: f64,
        latency_ms: f64,
        failure: String,
    },
}

/// Runs one performance pass of the LoadGen with the given settings.
pub trait ProbeRunner {
    type Error: std::error::Error + 'static;
    /// Runs `settings` (one scenario, PerformanceOnly), logging under a folder named `label`;
    /// returns the performance summary, if the run produced one.
    fn run(
        &mut self,
        settings: &TestSettings,
        label: &str,
    ) -> Result<Option<PerformanceSummary>, Self::Error>;
}

/// Probes run by this crate's LoadGen on a SUT per scenario, logging to `dir/<label>/`.
pub struct LoadgenProbes<F> {
    make_sut: F,
    suts: Vec<(TestScenario, Arc<dyn Sut>)>,
    qsl: Arc<dyn Qsl>,
    dir: std::path::PathBuf,
    writer: String,
    stop: Arc<AtomicBool>,
}

impl<F, E> LoadgenProbes<F>
where
    F: FnMut(TestScenario) -> Result<Arc<dyn Sut>, E>,
{
    /// Probes over `qsl`; `make_sut` gives the SUT of a scenario (made once, on its first
    /// probe). `stop` ends a probe early and fails the calibration as interrupted.
    pub fn new(
        make_sut: F,
        qsl: Arc<dyn Qsl>,
        dir: std::path::PathBuf,
        writer: String,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            make_sut,
            suts: Vec::new(),
            qsl,
            dir,
            writer,
            stop,
        }
    }

    fn sut(&mut self, scenario: TestScenario) -> Result<Arc<dyn Sut>, E> {
        if let Some((_, sut)) = self.suts.iter().find(|(s, _)| *s == scenario) {
            return Ok(Arc::clone(sut));
        }
        let sut = (self.make_sut)(scenario)?;
        self.suts.push((scenario, Arc::clone(&sut)));
        Ok(sut)
    }
}

impl<F, E> ProbeRunner for LoadgenProbes<F>
where
    F: FnMut(TestScenario) -> Result<Arc<dyn Sut>, E>,
    E: std::error::Error + From<LoadgenError> + 'static,
{
    type Error = E;

    fn run(
        &mut self,
        settings: &TestSettings,
        label: &str,
    ) -> Result<Option<PerformanceSummary>, E> {
        let sut = self.sut(settings.scenario)?;
        let log = LogSettings {
            outdir: self.dir.join(label),
            ..LogSettings::default()
        };
        let options = RunOptions {
            writer: self.writer.clone(),
            stop: Arc::clone(&self.stop),
            ..RunOptions::default()
        };
        let outcome = runner::start_test(sut, Arc::clone(&self.qsl), settings, &log, &options)?;
        if self.stop.load(Ordering::SeqCst) {
            return Err(LoadgenError::Interrupted.into());
        }
        Ok(outcome.performance)
    }
}

/// Calibrates scenarios one after another; Server's search starts from the rate of one query at
/// a time, from a SingleStream probe (SingleStream's own, when it was calibrated first).
pub struct Calibrator<R> {
    runner: R,
    plan: CalibrationPlan,
    /// Queries per second of one query at a time (1 / SingleStream's median latency).
    sequential_rate: Option<f64>,
    probes: usize,
    early_stopping: MinPassingQueriesFinder,
}

/// What one Server probe showed.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerProbe {
    pub qps: f64,
    /// Latency at the target percentile, ns.
    pub latency_ns: i64,
    /// The fraction of queries over the bound.
    pub overlatency_share: f64,
    /// The percentile met the bound, a full run with the same share over the bound would pass
    /// early stopping, and every sample was answered.
    pub met: bool,
    /// The failed samples, if any.
    pub failure: Option<String>,
}

impl<R: ProbeRunner> Calibrator<R> {
    pub fn new(runner: R, plan: CalibrationPlan) -> Self {
        Self {
            runner,
            plan,
            sequential_rate: None,
            probes: 0,
            early_stopping: MinPassingQueriesFinder::new(),
        }
    }

    /// Measures `base.scenario` and chooses its setting; `base` is the full run's settings.
    pub fn calibrate(
        &mut self,
        base: &TestSettings,
    ) -> Result<Calibrated, CalibrationError<R::Error>> {
        match base.scenario {
            TestScenario::SingleStream | TestScenario::MultiStream => self.latency(base),
            TestScenario::Offline => self.offline(base),
            TestScenario::Server => self.server(base),
        }
    }

    /// Runs a probe; returns its label and summary.
    fn probe(
        &mut self,
        settings: &TestSettings,
        what: &str,
    ) -> Result<(String, PerformanceSummary), CalibrationError<R::Error>> {
        self.probes += 1;
        let label = format!(
            "probe-{:02}-{}-{what}",
            self.probes,
            settings.scenario.as_str()
        );
        let summary = self
            .runner
            .run(settings, &label)
            .map_err(CalibrationError::Probe)?;
        match summary {
            Some(summary) => Ok((label, summary)),
            None => Err(CalibrationError::NoResult {
                scenario: settings.scenario.as_str(),
                label,
            }),
        }
    }

    /// A probe that must answer every sample.
    fn clean_probe(
        &mut self,
        settings: &TestSettings,
        what: &str,
    ) -> Result<PerformanceSummary, CalibrationError<R::Error>> {
        let (label, summary) = self.probe(settings, what)?;
        match summary.failure_text() {
            None => Ok(summary),
            Some(failure) => Err(CalibrationError::FailedSamples {
                scenario: settings.scenario.as_str(),
                label,
                failure,
            }),
        }
    }

    /// A SingleStream or MultiStream probe (as `base.scenario` says); a SingleStream one also
    /// gives the rate of one query at a time.
    fn latency_probe(
        &mut self,
        base: &TestSettings,
    ) -> Result<(TestSettings, PerformanceSummary), CalibrationError<R::Error>> {
        let mut probe = shortened(base, self.plan.probe_time);
        probe.min_query_count = 1;
        probe.single_stream_expected_latency_ns = PROBE_SINGLE_STREAM_LATENCY_NS;
        probe.multi_stream_expected_latency_ns = PROBE_MULTI_STREAM_LATENCY_NS;
        let s = self.clean_probe(&probe, "latency")?;
        let median = s.samples.percentiles[0];
        if probe.scenario == TestScenario::SingleStream && median > 0 {
            self.sequential_rate = Some(1e9 / median as f64);
        }
        Ok((probe, s))
    }

    fn latency(&mut self, base: &TestSettings) -> Result<Calibrated, CalibrationError<R::Error>> {
        let (probe, s) = self.latency_probe(base)?;
        // MultiStream's latency is a query's: its last sample done.
        let (latency, percentile) = if base.scenario == TestScenario::SingleStream {
            (&s.samples, "90th percentile".to_string())
        } else {
            let spq = probe.multi_stream_samples_per_query;
            (
                &s.queries,
                format!("99th percentile ({spq} samples per query)"),
            )
        };
        let mean_ms = latency.mean as f64 / 1e6;
        let median_ms = latency.percentiles[0] as f64 / 1e6;
        let margin = self.plan.margin;
        Ok(Calibrated {
            scenario: base.scenario,
            key: "target_latency",
            value: round_down_to(median_ms * (1.0 - margin), 3).max(0.001),
            reasons: vec![
                format!(
                    "{} probe of {:.1} s: {} queries, latency median {median_ms:.3} ms, mean \
                     {mean_ms:.3} ms, {percentile} {:.3} ms.",
                    base.scenario.as_str(),
                    self.plan.probe_time.as_secs_f64(),
                    s.query_count,
                    latency.target as f64 / 1e6,
                ),
                format!(
                    "Expected latency = the median less the {:.0} % margin (the median, since a \
                     few slow queries pull the mean up): LoadGen generates queries for twice \
                     min_duration at this rate, so the run stays VALID unless the system gets \
                     {:.1}× faster.",
                    margin * 100.0,
                    2.0 / (1.0 - margin)
                ),
            ],
        })
    }

    /// Offline probes until one lasts long enough for its throughput to have settled.
    fn measure_offline(
        &mut self,
        base: &TestSettings,
    ) -> Result<(f64, Vec<String>), CalibrationError<R::Error>> {
        let mut probe = shortened(base, self.plan.probe_time);
        // The first query has a fixed size: min_query_count is Offline's minimum sample count.
        probe.min_query_count = FIRST_OFFLINE_PROBE_SAMPLES;
        probe.offline_expected_qps = 0.0;
        let mut notes = Vec::new();
        let mut fastest: f64 = 0.0;
        for _ in 0..MAX_OFFLINE_PROBES {
            let s = self.clean_probe(&probe, "throughput")?;
            let throughput = loadgen::logs::summary::samples_per_second(&s);
            fastest = fastest.max(throughput);
            notes.push(format!(
                "Offline probe: {} samples in {:.2} s, {throughput:.1} samples/s.",
                s.sample_count, s.result.max_latency
            ));
            if s.result.max_latency >= SETTLED_OFFLINE_FRACTION * self.plan.probe_time.as_secs_f64()
            {
                break;
            }
            // Sized from the last throughput, the next query lasts about the probe time.
            probe.min_query_count = 1;
            probe.offline_expected_qps = throughput;
        }
        Ok((fastest, notes))
    }

    fn offline(&mut self, base: &TestSettings) -> Result<Calibrated, CalibrationError<R::Error>> {
        let (throughput, mut reasons) = self.measure_offline(base)?;
        let qps = round_up_to(throughput * (1.0 + self.plan.margin), 1);
        reasons.push(format!(
            "Expected QPS = the fastest probe's throughput plus the {:.0} % margin (too high only \
             makes the run longer, too low makes it INVALID): LoadGen sizes the one query \
             for 1.1 × min_duration at this QPS, so it lasts min_duration unless the system gets \
             {:.2}× faster.",
            self.plan.margin * 100.0,
            1.1 * (1.0 + self.plan.margin)
        ));
        Ok(Calibrated {
            scenario: TestScenario::Offline,
            key: "target_qps",
            value: qps,
            reasons,
        })
    }

    fn server(&mut self, base: &TestSettings) -> Result<Calibrated, CalibrationError<R::Error>> {
        let mut reasons = Vec::new();
        // One query at a time is a rate any server sustains, unless its latency alone misses
        // the bound; the search doubles up from it, so an overloaded probe is at most twice
        // too fast and its backlog drains quickly.
        let estimate = match self.sequential_rate {
            Some(rate) => rate,
            None => {
                let single = TestSettings {
                    scenario: TestScenario::SingleStream,
                    ..base.clone()
                };
                let (_, s) = self.latency_probe(&single)?;
                reasons.push(format!(
                    "SingleStream probe: median latency {:.3} ms.",
                    s.samples.percentiles[0] as f64 / 1e6
                ));
                self.sequential_rate.unwrap_or(1.0)
            }
        };
        let margin = self.plan.margin;
        let search = find_peak_qps(estimate.max(1.0), self.plan.tolerance, |qps| {
            self.server_probe(base, qps)
        })?;
        let mut probes = search.probes;
        let no_qps = |probes: &[ServerProbe], lowest: f64| {
            let last = probes.last();
            CalibrationError::NoQpsMeetsTheBound {
                lowest,
                bound_ms: base.server_target_latency_ns as f64 / 1e6,
                percentile: base.server_target_latency_percentile * 100.0,
                latency_ms: last.map_or(0.0, |p| p.latency_ns as f64 / 1e6),
                failure: last
                    .and_then(|p| p.failure.as_ref())
                    .map(|f| format!("; {f}"))
                    .unwrap_or_default(),
            }
        };
        let Some(peak) = search.peak else {
            let lowest = probes.last().map_or(0.0, |p| p.qps);
            return Err(no_qps(&probes, lowest));
        };
        // A probe at the chosen QPS must meet the bound too; each miss lowers it by the margin.
        let mut chosen = round_down_to(peak * (1.0 - margin), 1);
        for attempt in 0.. {
            let check = self.server_probe(base, chosen)?;
            probes.push(check.clone());
            if check.met {
                break;
            }
            if attempt + 1 == MAX_CHECK_RETRIES {
                return Err(no_qps(&probes, chosen));
            }
            chosen = round_down_to(chosen * (1.0 - margin), 1);
        }
        let listed: Vec<String> = probes.iter().map(ServerProbe::to_string).collect();
        reasons.push(format!(
            "Server probes of {:.1} s from {estimate:.1} QPS (one query at a time, from \
             SingleStream's median latency): {}.",
            self.plan.probe_time.as_secs_f64(),
            listed.join(", ")
        ));
        reasons.push(format!(
            "Target QPS = the highest that met the {} ms bound at the {}th percentile ({peak:.1}) \
             less the {:.0} % margin, confirmed by the last probe. A probe meets the bound when \
             its percentile is within it and a full run (min_query_count and min_duration) with \
             its share of queries over the bound would pass early stopping.",
            base.server_target_latency_ns as f64 / 1e6,
            base.server_target_latency_percentile * 100.0,
            margin * 100.0
        ));
        Ok(Calibrated {
            scenario: TestScenario::Server,
            key: "target_qps",
            value: chosen,
            reasons,
        })
    }

    fn server_probe(
        &mut self,
        base: &TestSettings,
        qps: f64,
    ) -> Result<ServerProbe, CalibrationError<R::Error>> {
        let mut probe = shortened(base, self.plan.probe_time);
        probe.server_target_qps = qps;
        probe.min_query_count = MIN_SERVER_PROBE_QUERIES;
        let (_, s) = self.probe(&probe, &format!("{qps:.1}qps"))?;
        let overlatency_share = s.overlatency_query_count as f64 / s.query_count.max(1) as f64;
        // The full run at this QPS, with the probe's share of queries over the bound.
        let full_queries =
            base.min_query_count
                .max((qps * base.min_duration_ms as f64 / 1e3).ceil() as u64) as i64;
        let full_overlatency = (overlatency_share * full_queries as f64).ceil() as i64;
        let passes_early_stopping = early_stopping::server_run_passes(
            &mut self.early_stopping,
            full_queries,
            full_overlatency,
            base.server_target_latency_percentile,
        );
        Ok(ServerProbe {
            qps,
            latency_ns: s.samples.target,
            overlatency_share,
            met: s.perf_constraints_met && passes_early_stopping && s.no_failed_samples(),
            failure: s.failure_text(),
        })
    }
}

impl std::fmt::Display for ServerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.met { "met" } else { "missed" };
        write!(
            f,
            "{:.1} QPS {verdict} ({:.2} ms, {:.2} % over)",
            self.qps,
            self.latency_ns as f64 / 1e6,
            self.overlatency_share * 100.0
        )?;
        match &self.failure {
            Some(failure) => write!(f, " [{failure}]"),
            None => Ok(()),
        }
    }
}

/// The full run's settings shortened to a performance probe of `time`.
fn shortened(base: &TestSettings, time: Duration) -> TestSettings {
    TestSettings {
        mode: TestMode::PerformanceOnly,
        min_duration_ms: time.as_millis() as u64,
        max_duration_ms: 0,
        max_query_count: 0,
        ..base.clone()
    }
}

/// The outcome of [`find_peak_qps`].
#[derive(Debug, Clone, PartialEq)]
pub struct PeakSearch {
    /// The highest QPS that met the bound; `None` when none did.
    pub peak: Option<f64>,
    pub probes: Vec<ServerProbe>,
}

/// Searches the highest QPS that `probe` finds meeting the bound: from `estimate`, doubling up
/// or halving down until the peak is bracketed, then bisecting until the bounds are within
/// `tolerance` of each other.
pub fn find_peak_qps<E>(
    estimate: f64,
    tolerance: f64,
    mut probe: impl FnMut(f64) -> Result<ServerProbe, E>,
) -> Result<PeakSearch, E> {
    let mut probes = Vec::new();
    let mut run = |qps: f64, probes: &mut Vec<ServerProbe>| -> Result<bool, E> {
        let p = probe(qps)?;
        let met = p.met;
        probes.push(p);
        Ok(met)
    };
    let (mut low, mut high) = if run(estimate, &mut probes)? {
        let mut low = estimate;
        let mut high = None;
        for _ in 0..MAX_DOUBLINGS {
            if run(low * 2.0, &mut probes)? {
                low *= 2.0;
            } else {
                high = Some(low * 2.0);
                break;
            }
        }
        let Some(high) = high else {
            return Ok(PeakSearch {
                peak: Some(low),
                probes,
            });
        };
        (low, high)
    } else {
        let mut high = estimate;
        let mut low = None;
        for _ in 0..MAX_HALVINGS {
            if run(high / 2.0, &mut probes)? {
                low = Some(high / 2.0);
                break;
            }
            high /= 2.0;
        }
        let Some(low) = low else {
            return Ok(PeakSearch { peak: None, probes });
        };
        (low, high)
    };
    for _ in 0..MAX_BISECTIONS {
        if high <= low * (1.0 + tolerance) {
            break;
        }
        let mid = (low + high) / 2.0;
        if run(mid, &mut probes)? {
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok(PeakSearch {
        peak: Some(low),
        probes,
    })
}

fn round_up_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).ceil() / scale
}

fn round_down_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).floor() / scale
}

/// Prefix of the comment lines written above a calibrated line.
const COMMENT: &str = "# calibrate:";

/// The user.conf text: `base` without its lines for the calibrated keys of `model` (and the
/// calibration comments above them), then each calibrated line under comments that say why.
pub fn merge_user_conf(base: &str, model: &str, header: &str, calibrated: &[Calibrated]) -> String {
    let replaced: Vec<String> = calibrated
        .iter()
        .map(|c| format!("{model}.{}.{}", c.scenario.as_str(), c.key))
        .collect();
    let mut out = String::new();
    let mut comments = Vec::new();
    for line in base.lines() {
        if line.starts_with(COMMENT) {
            comments.push(line);
            continue;
        }
        let key = line.split('=').next().unwrap_or_default().trim();
        if !replaced.iter().any(|r| r == key) {
            for c in comments.drain(..) {
                out.push_str(c);
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
        }
        comments.clear();
    }
    for c in comments {
        out.push_str(c);
        out.push('\n');
    }
    for c in calibrated {
        out.push_str(&format!("{COMMENT} {header}\n"));
        for reason in &c.reasons {
            out.push_str(&format!("{COMMENT}   {reason}\n"));
        }
        out.push_str(&c.line(model));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(peak: f64) -> impl FnMut(f64) -> Result<ServerProbe, std::convert::Infallible> {
        move |qps| {
            Ok(ServerProbe {
                qps,
                latency_ns: if qps <= peak { 1_000_000 } else { 50_000_000 },
                overlatency_share: 0.0,
                met: qps <= peak,
                failure: None,
            })
        }
    }

    #[test]
    fn the_search_brackets_the_peak_from_either_side_and_bisects_to_the_tolerance() {
        for (estimate, peak) in [(1000.0, 437.0), (100.0, 437.0), (437.0, 437.0), (3.0, 2.9)] {
            let search = find_peak_qps(estimate, 0.05, capacity(peak)).unwrap();
            let found = search.peak.unwrap();
            assert!(
                found <= peak && found >= peak / 1.05,
                "{estimate} → {found} for {peak}"
            );
            assert!(search.probes.len() <= 12, "{:?}", search.probes);
            let failed_above = search
                .probes
                .iter()
                .any(|p| !p.met && p.qps <= found * 1.05);
            assert!(
                failed_above || found == estimate,
                "bracketed: {:?}",
                search.probes
            );
        }
    }

    #[test]
    fn the_search_stops_when_nothing_meets_the_bound_or_everything_does() {
        let nothing = find_peak_qps(100.0, 0.05, capacity(0.0)).unwrap();
        assert_eq!(nothing.peak, None);
        assert_eq!(nothing.probes.len(), 1 + MAX_HALVINGS);
        let everything = find_peak_qps(100.0, 0.05, capacity(f64::INFINITY)).unwrap();
        assert_eq!(
            everything.peak,
            Some(100.0 * 2f64.powi(MAX_DOUBLINGS as i32))
        );
    }

    fn choice(scenario: TestScenario, key: &'static str, value: f64) -> Calibrated {
        Calibrated {
            scenario,
            key,
            value,
            reasons: vec![format!("measured {value}")],
        }
    }

    #[test]
    fn merging_keeps_other_lines_and_replaces_an_earlier_calibration() {
        let base = "# my system\n*.*.min_query_count = 100\nresnet50.Server.target_qps = 5\n\
                    mobilenet.Server.target_qps = 7\n";
        let first = merge_user_conf(
            base,
            "resnet50",
            "run 1",
            &[
                choice(TestScenario::Server, "target_qps", 120.5),
                choice(TestScenario::SingleStream, "target_latency", 0.25),
            ],
        );
        assert_eq!(
            first,
            "# my system\n*.*.min_query_count = 100\nmobilenet.Server.target_qps = 7\n\
             # calibrate: run 1\n# calibrate:   measured 120.5\nresnet50.Server.target_qps = 120.5\n\
             # calibrate: run 1\n# calibrate:   measured 0.25\n\
             resnet50.SingleStream.target_latency = 0.25\n"
        );
        let second = merge_user_conf(
            &first,
            "resnet50",
            "run 2",
            &[choice(TestScenario::Server, "target_qps", 99.0)],
        );
        assert_eq!(
            second,
            "# my system\n*.*.min_query_count = 100\nmobilenet.Server.target_qps = 7\n\
             # calibrate: run 1\n# calibrate:   measured 0.25\n\
             resnet50.SingleStream.target_latency = 0.25\n\
             # calibrate: run 2\n# calibrate:   measured 99\nresnet50.Server.target_qps = 99\n"
        );
        let mut settings = TestSettings {
            scenario: TestScenario::Server,
            ..TestSettings::default()
        };
        let mut session = loadgen::config::ConfigSession::new();
        session
            .apply_text(
                &mut settings,
                &second,
                "resnet50",
                "Server",
                loadgen::config::ConfType::UserConf,
            )
            .unwrap();
        assert_eq!(settings.server_target_qps, 99.0);
        assert_eq!(settings.min_query_count, 100);
    }

    #[test]
    fn values_round_away_from_the_invalid_side() {
        assert_eq!(round_up_to(0.23101, 3), 0.232);
        assert_eq!(round_down_to(123.49, 1), 123.4);
    }
}
