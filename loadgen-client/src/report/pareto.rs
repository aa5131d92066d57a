//! The Pareto frontier of runs: more throughput, less latency and more accuracy are better; a
//! run is dominated when another is at least as good in every objective both have and better in
//! one.

/// A run's objectives; an unknown one is left out of every comparison that involves it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objectives {
    /// Samples per second.
    pub throughput: f64,
    /// ns.
    pub latency: Option<f64>,
    /// %.
    pub accuracy: Option<f64>,
}

/// Whether `a` dominates `b`.
pub fn dominates(a: &Objectives, b: &Objectives) -> bool {
    // (a's advantage, its value) for each objective both have, larger is better.
    let mut pairs = vec![(a.throughput, b.throughput)];
    if let (Some(x), Some(y)) = (a.latency, b.latency) {
        pairs.push((-x, -y));
    }
    if let (Some(x), Some(y)) = (a.accuracy, b.accuracy) {
        pairs.push((x, y));
    }
    pairs.iter().all(|(x, y)| x >= y) && pairs.iter().any(|(x, y)| x > y)
}

/// For each run, whether it is on the frontier (no other run dominates it).
pub fn frontier(runs: &[Objectives]) -> Vec<bool> {
    runs.iter()
        .map(|r| !runs.iter().any(|other| dominates(other, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(throughput: f64, latency: f64, accuracy: f64) -> Objectives {
        Objectives {
            throughput,
            latency: Some(latency),
            accuracy: Some(accuracy),
        }
    }

    #[test]
    fn trade_offs_stay_on_the_frontier_and_worse_in_everything_does_not() {
        let runs = [
            run(1000.0, 5.0, 70.0), // fast, less accurate
            run(200.0, 9.0, 80.0),  // accurate
            run(150.0, 12.0, 75.0), // worse than the second in all three
            run(1000.0, 5.0, 70.0), // a tie dominates nothing
        ];
        assert_eq!(frontier(&runs), vec![true, true, false, true]);
    }

    #[test]
    fn unknown_objectives_are_left_out() {
        let no_accuracy = Objectives {
            accuracy: None,
            ..run(900.0, 6.0, 0.0)
        };
        // Without accuracy, only throughput and latency decide: the first run dominates it.
        assert!(dominates(&run(1000.0, 5.0, 1.0), &no_accuracy));
        let offline = Objectives {
            throughput: 800.0,
            latency: None,
            accuracy: None,
        };
        assert_eq!(
            frontier(&[offline, run(700.0, 1.0, 99.0)]),
            vec![true, false]
        );
    }
}
