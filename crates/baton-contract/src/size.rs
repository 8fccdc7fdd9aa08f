//! Sizes as users write them (`512M`, `512MB`, `1.5G`, `4096`): one parser for every option
//! that takes a size (`maxMemory`, `logMaxSize`) and for PM2's `max_memory_restart`.
//!
//! A size is a number (digits, with an optional fraction) and an optional unit: none or `B`
//! for bytes, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB`, `T`/`TB`/`TiB` (any case),
//! all 1024-based as PM2 counts them. The result is whole bytes, rounded down, at least 1.

/// Bytes for each unit letter.
const UNITS: &[(char, u64)] = &[
    ('K', 1 << 10),
    ('M', 1 << 20),
    ('G', 1 << 30),
    ('T', 1 << 40),
];

/// Parse a size such as `512M` or `1.5G` into bytes. The error says what is expected.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let expected =
        || format!("expected a size such as 512M, 1.5G or a number of bytes, got {text:?}");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        u => {
            let mut chars = u.chars();
            let letter = chars.next().ok_or_else(expected)?;
            let rest: String = chars.collect();
            if !matches!(rest.as_str(), "" | "B" | "IB") {
                return Err(expected());
            }
            UNITS
                .iter()
                .find(|(l, _)| *l == letter)
                .map(|(_, m)| *m)
                .ok_or_else(expected)?
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(expected());
    }
    if fraction.len() > 9 {
        return Err(expected());
    }
    // Exact for fractions: (whole.fraction × 10^digits) × unit ÷ 10^digits, in u128.
    let digits: u128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| expected())?;
    let scale = 10u128.pow(fraction.len() as u32);
    let bytes = u64::try_from(digits * u128::from(multiplier) / scale)
        .map_err(|_| format!("{text:?} is too large (at most {} bytes)", u64::MAX))?;
    if bytes == 0 {
        return Err(format!("{text:?} is zero: a size must be at least 1 byte"));
    }
    Ok(bytes)
}

/// `bytes` the way a person reads it: `512 MiB`, `1.5 GiB`, `900 B`.
pub fn format_size(bytes: u64) -> String {
    for (letter, m) in UNITS.iter().rev() {
        if bytes >= *m {
            let tenths = bytes.saturating_mul(10) / m;
            return if tenths.is_multiple_of(10) {
                format!("{} {letter}iB", tenths / 10)
            } else {
                format!("{}.{} {letter}iB", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_1024_based_and_any_case() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_size("512mb"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("200K"), Ok(200 << 10));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("0.5K"), Ok(512));
    }

    #[test]
    fn bad_sizes_say_what_is_expected() {
        for bad in [
            "", "M", "12X", "1.2.3G", "1.G", ".5G", "-1M", "1 M", "5MBB", "1e6",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(
                err.starts_with("expected a size such as 512M"),
                "{bad}: {err}"
            );
        }
        assert!(parse_size("0").unwrap_err().contains("at least 1 byte"));
        assert!(parse_size("0.0001K")
            .unwrap_err()
            .contains("at least 1 byte"));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formats_round_trip_through_the_parser() {
        for n in [1u64, 900, 1024, 1536, 512 << 20, 3 << 29, 7 << 40] {
            let text = format_size(n).replace(' ', "");
            let back = parse_size(&text).unwrap();
            assert!(
                back <= n && n - back < n / 10 + 1,
                "{n} -> {text} -> {back}"
            );
        }
        assert_eq!(format_size(512 << 20), "512 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
    }
}
