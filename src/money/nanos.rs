//! Money as whole nano-dollars (1e-9 USD), the one unit every total is kept in: an integer sum
//! does not depend on the order rows finished in (a float sum does), and a million rows of
//! $0.000001 add up to exactly $1. Two conversions, named for their rounding: a cost that
//! happened is rounded to the nearest nano-dollar; a worst case reserved under `--max-cost` is
//! rounded up, so it is never under-reserved.

/// An amount in nano-dollars.
pub(crate) type Nanos = u64;

/// A cost in nano-dollars, rounded to the nearest (negative, NaN or infinite: 0; saturating).
pub(crate) fn nearest(usd: f64) -> Nanos {
    convert(usd, f64::round)
}

/// An amount to reserve in nano-dollars, rounded up (negative, NaN or infinite: 0; saturating).
pub(crate) fn rounded_up(usd: f64) -> Nanos {
    convert(usd, f64::ceil)
}

fn convert(usd: f64, round: fn(f64) -> f64) -> Nanos {
    if usd.is_finite() && usd > 0.0 {
        round(usd * 1e9).min(Nanos::MAX as f64) as Nanos
    } else {
        0
    }
}

/// Nano-dollars as dollars.
pub(crate) fn usd(nanos: Nanos) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_named() {
        assert_eq!(nearest(0.000_000_001_4), 1);
        assert_eq!(rounded_up(0.000_000_001_4), 2);
        assert_eq!(nearest(-1.0), 0);
        assert_eq!(rounded_up(f64::NAN), 0);
        assert_eq!(nearest(f64::INFINITY), 0);
        assert_eq!(rounded_up(1e30), Nanos::MAX);
        assert_eq!(usd(1_500_000_000), 1.5);
    }
}
