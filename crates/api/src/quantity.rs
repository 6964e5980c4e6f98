//! Resource quantities (`100m`, `20Mi`, `1.5G`, `2e3`) as upstream's `resource.Quantity` reads them:
//! a signed decimal number and one suffix (binary `Ki`..`Ei`, decimal `n u m k M G T P E`, or a
//! decimal exponent `e`/`E`). Values are kept exactly, as thousandths (`milli`), and read back
//! rounded up as upstream's `Value()` and `MilliValue()` do.

use std::fmt;

/// Why a quantity string is not one; the text is upstream's `ErrFormatWrong` / `ErrSuffix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    #[error("unable to parse quantity's suffix")]
    Suffix,
    #[error("quantity too large")]
    TooLarge,
}

/// A parsed quantity: the exact value times 1000 is `num / den` (den a power of ten), so nothing
/// is lost before the rounding that reading a value asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    num: i128,
    den: i128,
}

impl Quantity {
    /// Parses `s` as upstream does (`resource.ParseQuantity`).
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let s = s.trim_end();
        if s.is_empty() {
            return Err(QuantityError::Format);
        }
        let (neg, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(QuantityError::Format);
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let digits: String = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(QuantityError::TooLarge);
        }
        let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| QuantityError::Format)? };
        // value = mantissa * 10^-frac * factor, and we keep value * 1000.
        let mut num = mantissa.checked_mul(1000).ok_or(QuantityError::TooLarge)?;
        let mut den: i128 = 1;
        for _ in 0..frac_part.len() {
            den = den.checked_mul(10).ok_or(QuantityError::TooLarge)?;
        }
        let pow = |base: i128, e: u32| base.checked_pow(e).ok_or(QuantityError::TooLarge);
        match suffix {
            "" => {}
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                let e = "KMGTPE".find(&suffix[..1]).unwrap() as u32 + 1;
                num = num.checked_mul(pow(1024, e)?).ok_or(QuantityError::TooLarge)?;
            }
            "n" => den = den.checked_mul(1_000_000_000).ok_or(QuantityError::TooLarge)?,
            "u" => den = den.checked_mul(1_000_000).ok_or(QuantityError::TooLarge)?,
            "m" => den = den.checked_mul(1_000).ok_or(QuantityError::TooLarge)?,
            "k" | "M" | "G" | "T" | "P" | "E" => {
                let e = "kMGTPE".find(suffix).unwrap() as u32 + 1;
                num = num.checked_mul(pow(1000, e)?).ok_or(QuantityError::TooLarge)?;
            }
            _ if suffix.starts_with(['e', 'E']) => {
                let exp = &suffix[1..];
                let body = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) || body.len() > 3 {
                    return Err(QuantityError::Suffix);
                }
                let e: u32 = body.parse().map_err(|_| QuantityError::Suffix)?;
                if exp.starts_with('-') {
                    den = den.checked_mul(pow(10, e)?).ok_or(QuantityError::TooLarge)?;
                } else {
                    num = num.checked_mul(pow(10, e)?).ok_or(QuantityError::TooLarge)?;
                }
            }
            _ if suffix.bytes().all(|b| b"eEinumkKMGTP+-0123456789".contains(&b)) => return Err(QuantityError::Suffix),
            _ => return Err(QuantityError::Format),
        }
        Ok(Quantity { num: if neg { -num } else { num }, den })
    }

    /// The value in thousandths, rounded up (upstream's `MilliValue`).
    pub fn milli(&self) -> i128 {
        div_ceil(self.num, self.den)
    }

    /// The value, rounded up to a whole number (upstream's `Value`): bytes for memory.
    pub fn value(&self) -> i128 {
        div_ceil(self.num, self.den.saturating_mul(1000))
    }

    pub fn is_zero(&self) -> bool {
        self.num == 0
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) {
        q + 1
    } else {
        q
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.milli())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn suffixes() {
        assert_eq!(q("20Mi").value(), 20 * 1024 * 1024);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("128974848").value(), 128974848);
        assert_eq!(q("129e6").value(), 129_000_000);
        assert_eq!(q("129M").value(), 129_000_000);
        assert_eq!(q("123Mi").value(), 123 * 1024 * 1024);
        assert_eq!(q("100m").milli(), 100);
        assert_eq!(q("0.5").milli(), 500);
        assert_eq!(q("1.5").milli(), 1500);
        assert_eq!(q("2").milli(), 2000);
        assert_eq!(q("250u").milli(), 1, "rounded up as MilliValue");
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("0").value(), 0);
        assert!(q("0").is_zero());
        assert_eq!(q("+3").value(), 3);
        assert_eq!(q("-1").value(), -1);
        assert_eq!(q("1e-3").milli(), 1);
        assert_eq!(q("100m").value(), 1, "Value rounds up");
    }

    #[test]
    fn rejects_malformed() {
        for s in ["", "Mi", "abc", "1..2", "1.2.3", "."] {
            assert_eq!(Quantity::parse(s), Err(QuantityError::Format), "{s}");
        }
        for s in ["1Ki2", "1mm", "1e", "1kk"] {
            assert_eq!(Quantity::parse(s), Err(QuantityError::Suffix), "{s}");
        }
        assert_eq!(Quantity::parse("1x"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1KiB"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("99999999999999999999999999999999999"), Err(QuantityError::TooLarge));
        assert_eq!(Quantity::parse("1e999"), Err(QuantityError::TooLarge));
    }
}
