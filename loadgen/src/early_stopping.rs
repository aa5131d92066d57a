//! The early-stopping statistics of the official LoadGen: the minimum number of under-latency
//! queries `h` needed, given `t` over-latency ones, for the target percentile to hold with 99%
//! confidence. The same floating-point operations as the original are used, in the same order,
//! so the integer answers are identical.

use std::collections::{BTreeMap, HashMap};

/// The confidence and tolerance the official LoadGen judges early stopping with.
pub const CONFIDENCE: f64 = 0.99;
pub const TOLERANCE: f64 = 0.0;

/// Whether a Server run of `queries` queries, `overlatency` of them over the latency bound,
/// passes early stopping at `percentile` (official: `queries >= h + overlatency`).
pub fn server_run_passes(
    finder: &mut MinPassingQueriesFinder,
    queries: i64,
    overlatency: i64,
    percentile: f64,
) -> bool {
    queries >= finder.find(overlatency, percentile, TOLERANCE, CONFIDENCE) + overlatency
}

/// ln B(x, y) through `lgamma`.
fn lbeta(x: i64, y: i64) -> f64 {
    libm::lgamma(x as f64) + libm::lgamma(y as f64) - libm::lgamma((x + y) as f64)
}

/// Gauss 2F1(1, b; c; x) by its series, stopped once a term is below 2^-33.
fn hypergeometric_2f1_a1(b: i64, c: i64, x: f64) -> f64 {
    let tolerance = 1.0 / (1u64 << 33) as f64;
    let mut term = 1.0f64;
    let mut result = 1.0f64;
    let mut i: i64 = 0;
    while term.abs() > tolerance {
        term *= (b + i) as f64 * x / (c + i) as f64;
        result += term;
        i += 1;
    }
    result
}

/// The regularised incomplete beta function I_x(a, b).
fn beta_regularized(x: f64, a: i64, b: i64) -> f64 {
    (a as f64 * x.ln() + (b - 1) as f64 * (1.0 - x).ln() - lbeta(a, b)).exp() / a as f64
        * hypergeometric_2f1_a1(1 - b, 1 + a, x / (x - 1.0))
}

/// Probability of at most `t` over-latency queries among `h + t`.
fn odds(h: i64, t: i64, p: f64, d: f64) -> f64 {
    beta_regularized(p - d, h, 1 + t)
}

/// Smallest `h` in `[min_h, max_h]` with `odds < 1 - c` (lower-bound binary search).
fn find_min_passing(mut min_h: i64, max_h: i64, t: i64, p: f64, d: f64, c: f64) -> i64 {
    let mut count = max_h - min_h;
    while count > 0 {
        let step = count / 2;
        let h = min_h + step;
        if odds(h, t, p, d) < 1.0 - c {
            count = step;
        } else {
            min_h = h + 1;
            count -= step + 1;
        }
    }
    min_h
}

/// Memoised `h(t)` search; the bracket of each new search comes from earlier answers.
#[derive(Debug, Default)]
pub struct MinPassingQueriesFinder {
    caches: HashMap<(u64, u64, u64), BTreeMap<i64, i64>>,
}

impl MinPassingQueriesFinder {
    /// A finder with empty caches (the original builds one per evaluation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Minimum `h` such that `odds(h, t, p, d) < 1 - c`.
    pub fn find(&mut self, t: i64, p: f64, d: f64, c: f64) -> i64 {
        let cache = self
            .caches
            .entry((p.to_bits(), d.to_bits(), c.to_bits()))
            .or_default();
        if let Some(&h) = cache.get(&t) {
            return h;
        }
        let (mut x0, mut y0, mut x1) = (-1i64, 0i64, 0i64);
        let mut y1 = ((1.0 - c).ln() / (p - d).ln()).ceil() as i64;
        let mut below = cache.range(..t).rev();
        if let Some((&x, &y)) = below.next() {
            x1 = x;
            y1 = y;
            if let Some((&x, &y)) = below.next() {
                x0 = x;
                y0 = y;
            }
        }
        let min_slope = (p - d) / (1.0 - p + d);
        let max_slope = ((y1 - y0) * (x1 - x0)) as f64;
        let min_h = ((t - x1) as f64 * min_slope + y1 as f64) as i64;
        let max_h = ((t - x1) as f64 * max_slope + y1 as f64 + 1.0) as i64;
        let h = find_min_passing(min_h, max_h, t, p, d, c);
        cache.insert(t, h);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_query_counts() {
        let mut f = MinPassingQueriesFinder::new();
        assert_eq!(f.find(1, 0.90, 0.0, CONFIDENCE) + 1, 64);
        assert_eq!(f.find(1, 0.99, 0.0, CONFIDENCE) + 1, 662);
        assert_eq!(f.find(1, 0.999, 0.0, CONFIDENCE) + 1, 6636);
        assert_eq!(f.find(0, 0.99, 0.0, CONFIDENCE), 459);
    }

    #[test]
    fn server_needs_more_queries() {
        let mut f = MinPassingQueriesFinder::new();
        let t = 5;
        assert_eq!(f.find(t, 0.99, 0.0, CONFIDENCE) + t - 601, 706);
    }

    #[test]
    fn odds_is_a_probability() {
        let o = odds(459, 0, 0.99, 0.0);
        assert!(o < 0.01 && o > 0.0);
        assert!(odds(458, 0, 0.99, 0.0) >= 0.01);
    }
}
