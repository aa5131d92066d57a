//! Number formatting as the official C++ streams produce it.

/// A double in C++ default stream format (`%g` with 6 significant digits): `1000`, `0.99`,
/// `6242.82`, `1e+06`, `inf`.
pub fn fmt_g(v: f64) -> String {
    const PRECISION: i32 = 6;
    if v.is_nan() {
        return if v.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if v.is_infinite() {
        return if v < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..PRECISION).contains(&exp) {
        let mantissa = strip_fraction_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (PRECISION - 1 - exp).max(0) as usize;
        strip_fraction_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

/// `DoubleToString(value, precision)`: fixed notation with `precision` decimals.
pub fn fixed(v: f64, precision: usize) -> String {
    format!("{v:.precision$}")
}

fn strip_fraction_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cpp_default_stream() {
        assert_eq!(fmt_g(1000.0), "1000");
        assert_eq!(fmt_g(0.99), "0.99");
        assert_eq!(fmt_g(0.9), "0.9");
        assert_eq!(fmt_g(6242.8213), "6242.82");
        assert_eq!(fmt_g(1e6), "1e+06");
        assert_eq!(fmt_g(8e6), "8e+06");
        assert_eq!(fmt_g(845.1934), "845.193");
        assert_eq!(fmt_g(513.891_2), "513.891");
        assert_eq!(fmt_g(0.0001), "0.0001");
        assert_eq!(fmt_g(0.00001234), "1.234e-05");
        assert_eq!(fmt_g(999_999.5), "1e+06");
        assert_eq!(fmt_g(123_456.0), "123456");
        assert_eq!(fmt_g(0.0), "0");
        assert_eq!(fmt_g(f64::INFINITY), "inf");
        assert_eq!(fmt_g(-2.5), "-2.5");
    }

    #[test]
    fn fixed_decimals() {
        assert_eq!(fixed(513.8912, 2), "513.89");
        assert_eq!(fixed(90.0, 1), "90.0");
        assert_eq!(fixed(99.9, 2), "99.90");
    }
}
