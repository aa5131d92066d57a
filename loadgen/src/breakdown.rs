//! Latency breakdown added by this client (not part of the official output): how much of each
//! sample's latency the server spent queueing and computing, and what is left for the network
//! and the client. Written to its own file so the official files stay byte-compatible.

use crate::results::percentile;
use crate::sut::ServerTiming;

/// One completed sample of a performance pass that reported server timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakdownSample {
    pub latency_ns: i64,
    pub timing: ServerTiming,
}

/// Renders the breakdown section for a pass of `total_samples` samples, or `None` when no
/// sample carried server timings.
pub fn render(total_samples: usize, timed: &[BreakdownSample]) -> Option<String> {
    let timed: Vec<(i64, ServerTiming)> = timed.iter().map(|s| (s.latency_ns, s.timing)).collect();
    if timed.is_empty() {
        return None;
    }
    let column = |f: &dyn Fn(&(i64, ServerTiming)) -> i64| -> Vec<i64> {
        let mut v: Vec<i64> = timed.iter().map(f).collect();
        v.sort_unstable();
        v
    };
    // Server timings are input from the network: clamp them, and never overflow.
    let ns = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let total = column(&|(l, _)| *l);
    let queue = column(&|(_, t)| ns(t.queue_ns));
    let compute = column(&|(_, t)| ns(t.compute_ns));
    let network = column(&|(l, t)| {
        l.saturating_sub(ns(t.queue_ns))
            .saturating_sub(ns(t.compute_ns))
    });
    let mean_batch = timed
        .iter()
        .map(|(_, t)| f64::from(t.batch_size))
        .sum::<f64>()
        / timed.len() as f64;
    let rule = "================================================";
    let mut out = format!(
        "{rule}\nLatency breakdown (loadgen-client addition, not official LoadGen output)\n{rule}\n"
    );
    out += &format!(
        "Samples with server timings : {} of {}\n",
        timed.len(),
        total_samples
    );
    out += &format!(
        "{:<22}{:>14}{:>14}{:>14}{:>14}{:>14}\n",
        "(ns)", "mean", "p50", "p90", "p99", "max"
    );
    for (name, values) in [
        ("Total latency", &total),
        ("Network + client", &network),
        ("Server queue", &queue),
        ("Server compute", &compute),
    ] {
        let mean = values.iter().map(|&v| v as i128).sum::<i128>() / values.len() as i128;
        out += &format!(
            "{:<22}{:>14}{:>14}{:>14}{:>14}{:>14}\n",
            name,
            mean,
            percentile(values, 0.5),
            percentile(values, 0.9),
            percentile(values, 0.99),
            values[values.len() - 1]
        );
    }
    out += &format!("Mean server batch size : {mean_batch:.2}\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_latency_into_parts() {
        assert!(render(5, &[]).is_none());
        let samples: Vec<BreakdownSample> = (0..10)
            .map(|i| BreakdownSample {
                latency_ns: 1_000 + i,
                timing: ServerTiming {
                    queue_ns: 100,
                    compute_ns: 600,
                    batch_size: 4,
                },
            })
            .collect();
        let text = render(12, &samples).unwrap_or_default();
        assert!(text.contains("Samples with server timings : 10 of 12"));
        assert!(text.contains("Network + client"));
        let net = text
            .lines()
            .find(|l| l.starts_with("Network"))
            .unwrap_or_default();
        assert!(net.split_whitespace().any(|w| w == "304"), "{net}");
        assert!(text.contains("Mean server batch size : 4.00"));
    }

    #[test]
    fn hostile_server_timings_cannot_overflow() {
        let samples: Vec<BreakdownSample> =
            [(i64::MIN, u64::MAX), (i64::MAX, 0), (5, u64::MAX / 2)]
                .into_iter()
                .map(|(latency_ns, v)| BreakdownSample {
                    latency_ns,
                    timing: ServerTiming {
                        queue_ns: v,
                        compute_ns: v,
                        batch_size: u32::MAX,
                    },
                })
                .collect();
        let text = render(3, &samples).unwrap_or_default();
        assert!(text.contains("Network + client"), "{text}");
    }
}
