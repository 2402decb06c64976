//! Numbers for people: thousands separators and dollar amounts.

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 row`, `2 rows`, `1,000 rows`: a count with its noun (plural by adding `s`).
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else if ["ch", "sh", "s", "x"].iter().any(|end| noun.ends_with(end)) {
        format!("{} {noun}es", group(n))
    } else {
        format!("{} {noun}s", group(n))
    }
}

/// Formats dollars for people: `$0.0265`, `$12.35`.
pub fn format_usd(usd: f64) -> String {
    // `+ 0.0` turns the -0.0 of an empty float sum into 0.0.
    let usd = usd + 0.0;
    if usd != 0.0 && usd.abs() < 0.0001 {
        format!("${usd:.8}").trim_end_matches('0').to_string()
    } else if usd != 0.0 && usd.abs() < 1.0 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

/// Dollars rounded to whole nano-dollars, so sums print as `4.808299`, not `4.808299000000001`.
pub fn round_usd(usd: f64) -> f64 {
    (usd * 1e9).round() / 1e9 + 0.0
}

/// Serializes a dollar amount rounded by [`round_usd`] (for `--json` outputs).
pub fn serialize_usd<S: serde::Serializer>(usd: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round_usd(*usd))
}

/// [`serialize_usd`] for an amount that may be unknown (null).
pub fn serialize_opt_usd<S: serde::Serializer>(usd: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match usd {
        Some(usd) => s.serialize_some(&round_usd(*usd)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(8231), "8,231");
        assert_eq!(group(1234567), "1,234,567");
    }

    #[test]
    fn dollars() {
        assert_eq!(format_usd(0.026_496_75), "$0.0265");
        assert_eq!(format_usd(12.345), "$12.35");
        assert_eq!(format_usd(0.0), "$0.00");
        assert_eq!(
            format_usd(0.000_01),
            "$0.00001",
            "a tiny cap is not shown as zero"
        );
        assert_eq!(format_usd(std::iter::empty::<f64>().sum()), "$0.00");
    }

    #[test]
    fn rounded_dollars_print_short() {
        let sum: f64 = [0.1, 0.3, 4.408299].iter().sum();
        assert_ne!(sum.to_string(), "4.808299");
        assert_eq!(round_usd(sum).to_string(), "4.808299");
        assert_eq!(round_usd(-0.0).to_string(), "0");
    }
}
