//! C library number parsing (`strtoull` with base 0 and `strtod`) with the same prefix and
//! overflow rules, so config values are accepted and converted exactly like the official LoadGen.

/// `strtoull(s, &end, 0)`: the value and the number of bytes consumed (0 when nothing parsed).
pub fn strtoull_base0(s: &str) -> (u64, usize) {
    let b = s.as_bytes();
    let (i, negative) = skip_space_and_sign(b);
    let (radix, digits_start) = if b.get(i) == Some(&b'0')
        && matches!(b.get(i + 1), Some(b'x' | b'X'))
        && b.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit())
    {
        (16u32, i + 2)
    } else if b.get(i) == Some(&b'0') {
        (8, i)
    } else {
        (10, i)
    };
    let mut j = digits_start;
    let mut value: u64 = 0;
    let mut overflow = false;
    while j < b.len() {
        let Some(d) = (b[j] as char).to_digit(radix) else {
            break;
        };
        match value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        j += 1;
    }
    if j == digits_start {
        return (0, 0);
    }
    if overflow {
        return (u64::MAX, j);
    }
    (
        if negative {
            value.wrapping_neg()
        } else {
            value
        },
        j,
    )
}

/// `strtod(s, &end)`: the value and the number of bytes consumed (0 when nothing parsed).
pub fn strtod(s: &str) -> (f64, usize) {
    let b = s.as_bytes();
    let (i, negative) = skip_space_and_sign(b);
    let apply_sign = |v: f64| if negative { -v } else { v };
    let rest = &s[i..];
    let lower = rest.to_ascii_lowercase();
    if lower.starts_with("infinity") {
        return (apply_sign(f64::INFINITY), i + 8);
    }
    if lower.starts_with("inf") {
        return (apply_sign(f64::INFINITY), i + 3);
    }
    if lower.starts_with("nan") {
        let mut end = i + 3;
        if b.get(end) == Some(&b'(') {
            if let Some(close) = s[end..].find(')') {
                let inner = &s[end + 1..end + close];
                if inner
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    end += close + 1;
                }
            }
        }
        return (f64::NAN, end);
    }
    if b.get(i) == Some(&b'0') && matches!(b.get(i + 1), Some(b'x' | b'X')) {
        if let Some((v, len)) = parse_hex_float(&s[i + 2..]) {
            return (apply_sign(v), i + 2 + len);
        }
        // "0x" without hex digits parses as the decimal 0.
        return (apply_sign(0.0), i + 1);
    }
    match parse_decimal(&s[i..]) {
        Some((v, len)) => (apply_sign(v), i + len),
        None => (0.0, 0),
    }
}

/// The index after the leading white space and optional `+`/`-` sign, and whether the sign was
/// `-`.
fn skip_space_and_sign(b: &[u8]) -> (usize, bool) {
    let mut i = digits_len(b, 0, |c| c.is_ascii_whitespace());
    let negative = b.get(i) == Some(&b'-');
    if matches!(b.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    (i, negative)
}

/// True when `strtoull(base 0)` or `strtod` consumes the whole token.
pub fn is_c_number(token: &str) -> bool {
    !token.is_empty() && (strtoull_base0(token).1 == token.len() || strtod(token).1 == token.len())
}

fn digits_len(b: &[u8], from: usize, pred: impl Fn(u8) -> bool) -> usize {
    b[from..].iter().take_while(|c| pred(**c)).count()
}

fn parse_decimal(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    let int_len = digits_len(b, 0, |c| c.is_ascii_digit());
    let mut end = int_len;
    let mut frac_len = 0;
    if b.get(end) == Some(&b'.') {
        frac_len = digits_len(b, end + 1, |c| c.is_ascii_digit());
        if int_len > 0 || frac_len > 0 {
            end += 1 + frac_len;
        }
    }
    if int_len == 0 && frac_len == 0 {
        return None;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let mut k = end + 1;
        if matches!(b.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        let exp_len = digits_len(b, k, |c| c.is_ascii_digit());
        if exp_len > 0 {
            end = k + exp_len;
        }
    }
    let mut text = String::with_capacity(end + 2);
    if int_len == 0 {
        text.push('0');
    }
    for &c in &b[..end] {
        text.push(c as char);
        if c == b'.' && frac_len == 0 {
            text.push('0');
        }
    }
    text.parse::<f64>().ok().map(|v| (v, end))
}

fn parse_hex_float(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    let mut mantissa = 0f64;
    let mut end = 0;
    let mut any = false;
    let mut scale_exp: i32 = 0;
    while let Some(d) = b.get(end).and_then(|c| (*c as char).to_digit(16)) {
        mantissa = mantissa * 16.0 + f64::from(d);
        any = true;
        end += 1;
    }
    if b.get(end) == Some(&b'.') {
        let mut k = end + 1;
        let mut frac_any = false;
        while let Some(d) = b.get(k).and_then(|c| (*c as char).to_digit(16)) {
            mantissa = mantissa * 16.0 + f64::from(d);
            scale_exp -= 4;
            frac_any = true;
            k += 1;
        }
        if any || frac_any {
            end = k;
            any = true;
        }
    }
    if !any {
        return None;
    }
    if matches!(b.get(end), Some(b'p' | b'P')) {
        let mut k = end + 1;
        let negative = b.get(k) == Some(&b'-');
        if matches!(b.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        let len = digits_len(b, k, |c| c.is_ascii_digit());
        if len > 0 {
            let exp: i32 = s[k..k + len].parse().unwrap_or(i32::MAX / 2);
            scale_exp = scale_exp.saturating_add(if negative { -exp } else { exp });
            end = k + len;
        }
    }
    Some((mantissa * 2f64.powi(scale_exp), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtoull_prefixes_and_quirks() {
        assert_eq!(strtoull_base0("0x20"), (32, 4));
        assert_eq!(strtoull_base0("017"), (15, 3));
        assert_eq!(strtoull_base0("08"), (0, 1));
        assert_eq!(strtoull_base0("1e3"), (1, 1));
        assert_eq!(strtoull_base0("-1"), (u64::MAX, 2));
        assert_eq!(strtoull_base0("99999999999999999999999"), (u64::MAX, 23));
        assert_eq!(strtoull_base0("abc"), (0, 0));
        assert_eq!(strtoull_base0("0x"), (0, 1));
        assert_eq!(
            strtoull_base0("16159082839903944936").0,
            16_159_082_839_903_944_936
        );
    }

    #[test]
    fn strtod_forms() {
        assert_eq!(strtod("1e3"), (1000.0, 3));
        assert_eq!(strtod("1.5"), (1.5, 3));
        assert_eq!(strtod(".5"), (0.5, 2));
        assert_eq!(strtod("5."), (5.0, 2));
        assert_eq!(strtod("1e"), (1.0, 1));
        assert_eq!(strtod("0x1p4"), (16.0, 5));
        assert_eq!(strtod("-inf").0, f64::NEG_INFINITY);
        assert_eq!(strtod("abc").1, 0);
    }

    #[test]
    fn whole_token_check() {
        assert!(is_c_number("08"));
        assert!(is_c_number("99.9"));
        assert!(is_c_number("0x20"));
        assert!(!is_c_number("#"));
        assert!(!is_c_number("12ms"));
        assert!(!is_c_number(""));
    }
}
