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
    let total = column(&|(l, _)| *l);
    let queue = column(&|(_, t)| t.queue_ns as i64);
    let compute = column(&|(_, t)| t.compute_ns as i64);
    let network = column(&|(l, t)| l - t.queue_ns as i64 - t.compute_ns as i64);
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
}
