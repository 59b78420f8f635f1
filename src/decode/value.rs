//! Debezium's logical types to exact values: decimals in every `decimal.handling.mode`, times in
//! every `time.precision.mode`. Pure functions, shared by the JSON and Avro decoders and by the
//! pivot (hot attributes inside JSONB use the same textual forms).

use super::scan::digits;
use super::{Decimal, TimeMode};
use base64::Engine;

/// Largest number of decimal digits a Decimal128 holds.
pub const MAX_DECIMAL_DIGITS: u32 = 38;

/// Smallest unscaled value above what Decimal128(38, s) holds: 10^38. An i128 goes up to about
/// 1.7 × 10^38, so a value may fit the integer and still not the column's precision.
const DECIMAL128_LIMIT: i128 = 10i128.pow(MAX_DECIMAL_DIGITS);

/// Earliest timestamp the lake keeps: 0001-01-01T00:00:00Z, in µs since the epoch.
pub const MIN_TIMESTAMP_US: i64 = -62_135_596_800_000_000;
/// Latest timestamp the lake keeps: 9999-12-31T23:59:59.999999Z. Timestamp(µs) could hold
/// ±290,000 years, but years outside 1..=9999 are not readable everywhere (Python's datetime,
/// Spark, Trino and ISO-8601 text stop there), so they are dead letters rather than lake values.
pub const MAX_TIMESTAMP_US: i64 = 253_402_300_799_999_999;

/// Why a value could not be read: malformed, or well-formed but beyond what its column holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    Invalid(String),
    OutOfRange(String),
}

impl ValueError {
    pub fn message(&self) -> &str {
        match self {
            ValueError::Invalid(m) | ValueError::OutOfRange(m) => m,
        }
    }
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl From<String> for ValueError {
    fn from(message: String) -> Self {
        ValueError::Invalid(message)
    }
}

fn range(message: String) -> ValueError {
    ValueError::OutOfRange(message)
}

/// Checks that µs since the epoch are within [`MIN_TIMESTAMP_US`]..=[`MAX_TIMESTAMP_US`].
pub fn check_timestamp(us: i64) -> Result<i64, ValueError> {
    if (MIN_TIMESTAMP_US..=MAX_TIMESTAMP_US).contains(&us) {
        Ok(us)
    } else {
        Err(range(format!("timestamp {us} µs is outside years 1 to 9999")))
    }
}

/// Parses decimal text, as in `decimal.handling.mode=string` or a JSON number in `double` mode:
/// `-12.340`, `1e-3`, `1.5E+10`. The scale is the number of fraction digits written (after
/// applying the exponent), so `"12.340"` has scale 3.
pub fn parse_decimal(text: &str) -> Result<Decimal, ValueError> {
    match plain_decimal(text) {
        Some(d) => Ok(d),
        None => general_decimal(text),
    }
}

/// [`parse_decimal`] of any text.
fn general_decimal(text: &str) -> Result<Decimal, ValueError> {
    let t = text.trim();
    // Debezium's double and string modes write these for a non-finite double: no decimal holds
    // them.
    if matches!(t, "NaN" | "Infinity" | "-Infinity" | "inf" | "-inf") {
        return Err(range(format!("`{t}` is not a finite number")));
    }
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => {
            let digits = t[i + 1..].trim_start_matches(['+', '-']);
            let exp: i32 = t[i + 1..].parse().map_err(|_| {
                // All digits but too long for an i32: a number, far out of range.
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    range(format!("exponent of `{}` is out of range", preview(t)))
                } else {
                    ValueError::Invalid(format!("bad exponent in `{}`", preview(t)))
                }
            })?;
            (&t[..i], exp)
        }
        None => (t, 0),
    };
    let (neg, digits) = match mantissa.as_bytes().first() {
        Some(b'-') => (true, &mantissa[1..]),
        Some(b'+') => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(ValueError::Invalid(format!("`{}` is not a decimal number", preview(t))));
    }
    let mut unscaled: i128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        if !b.is_ascii_digit() {
            return Err(ValueError::Invalid(format!("`{}` is not a decimal number", preview(t))));
        }
        unscaled = unscaled
            .checked_mul(10)
            .and_then(|v| v.checked_add((b - b'0') as i128))
            .ok_or_else(|| range(format!("`{}` has more than {MAX_DECIMAL_DIGITS} digits", preview(t))))?;
    }
    let mut scale = frac_part.len() as i64 - exp as i64;
    if scale < 0 {
        unscaled = unscaled
            .checked_mul(
                10i128
                    .checked_pow((-scale) as u32)
                    .ok_or_else(|| range(format!("`{}` is out of range", preview(t))))?,
            )
            .ok_or_else(|| range(format!("`{}` is out of range", preview(t))))?;
        scale = 0;
    }
    if scale > MAX_DECIMAL_DIGITS as i64 {
        return Err(range(format!("`{}` has a scale above {MAX_DECIMAL_DIGITS}", preview(t))));
    }
    Ok(Decimal { unscaled: if neg { -unscaled } else { unscaled }, scale: scale as u32 })
}

/// [`parse_decimal`]'s usual case, on every decimal value: an optional minus, digits with at
/// most one `.`, 18 digits at most in all (no blanks, no exponent), read eight digits at a time
/// with u64 arithmetic. `None` for anything else, which the general path reads.
fn plain_decimal(t: &str) -> Option<Decimal> {
    let b = t.as_bytes();
    let neg = b.first() == Some(&b'-');
    let at = usize::from(neg);
    let (int, n_int) = digits(b, at);
    let (frac, n_frac, end) = match b.get(at + n_int) {
        Some(b'.') => {
            let (frac, n) = digits(b, at + n_int + 1);
            (frac, n, at + n_int + 1 + n)
        }
        _ => (0, 0, at + n_int),
    };
    if end != b.len() || !(1..=18).contains(&(n_int + n_frac)) {
        return None;
    }
    // At most 18 digits in all: below 10^18, no overflow.
    let unscaled = i128::from(int * 10u64.pow(n_frac as u32) + frac);
    Some(Decimal { unscaled: if neg { -unscaled } else { unscaled }, scale: n_frac as u32 })
}

/// A double (Avro `double`, or decimal.handling.mode=double) as the shortest decimal that reads
/// back as the same double: the value Debezium meant, not the binary expansion.
pub fn decimal_from_f64(v: f64) -> Result<Decimal, ValueError> {
    if !v.is_finite() {
        return Err(range(format!("{v} is not a finite number")));
    }
    parse_decimal(&format!("{v}"))
}

/// Big-endian two's-complement bytes (Kafka Connect's Decimal, `precise` mode) to an i128.
pub fn unscaled_from_be_bytes(bytes: &[u8]) -> Result<i128, ValueError> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let negative = bytes[0] & 0x80 != 0;
    let fill = if negative { 0xFF } else { 0x00 };
    // Longer than 16 bytes is fine only when the extra leading bytes are pure sign extension.
    let (extra, rest) = bytes.split_at(bytes.len().saturating_sub(16));
    if extra.iter().any(|b| *b != fill) || (!extra.is_empty() && (rest[0] & 0x80 != 0) != negative) {
        return Err(range(format!("decimal of {} bytes does not fit in 128 bits", bytes.len())));
    }
    let mut buf = [fill; 16];
    buf[16 - rest.len()..].copy_from_slice(rest);
    Ok(i128::from_be_bytes(buf))
}

/// Base64 text of a precise decimal to its unscaled value.
pub fn unscaled_from_base64(text: &str) -> Result<i128, ValueError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| ValueError::Invalid(format!("`{}` is not base64 ({e})", preview(text))))?;
    unscaled_from_be_bytes(&bytes)
}

/// Brings a decimal to `scale` without losing digits: the unscaled value of a Decimal128(38,
/// scale). Fails when it would have to round or has more than 38 digits at that scale.
pub fn rescale(d: Decimal, scale: u32) -> Result<i128, ValueError> {
    let too_big = || range(format!("value does not fit a decimal(38, {scale})"));
    let v = if d.scale == scale {
        d.unscaled
    } else if d.scale < scale {
        let f = 10i128.checked_pow(scale - d.scale).ok_or_else(too_big)?;
        d.unscaled.checked_mul(f).ok_or_else(too_big)?
    } else {
        // A scale past 38 digits leaves nothing but zeros to drop: the value must be 0.
        match 10i128.checked_pow(d.scale - scale) {
            Some(f) if d.unscaled % f == 0 => d.unscaled / f,
            None if d.unscaled == 0 => 0,
            _ => return Err(range(format!("value has more than {scale} fraction digits"))),
        }
    };
    if v.unsigned_abs() >= DECIMAL128_LIMIT as u128 {
        return Err(too_big());
    }
    Ok(v)
}

/// Decimal text of an unscaled value, for messages and tests.
pub fn format_decimal(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (i, f) = padded.split_at(padded.len() - scale);
    format!("{sign}{i}.{f}")
}

/// An integer timestamp in the unit `mode` gives it to microseconds.
pub fn timestamp_from_int(v: i64, mode: TimeMode) -> Result<i64, ValueError> {
    let us = match mode {
        TimeMode::Adaptive => Some(v),
        TimeMode::Connect | TimeMode::Milliseconds => v.checked_mul(1000),
        TimeMode::Nanoseconds => Some(v.div_euclid(1000)),
    };
    check_timestamp(us.ok_or_else(|| range(format!("timestamp {v} is out of range")))?)
}

/// `io.debezium.time.Date` (days since the epoch) to microseconds at midnight UTC.
pub fn timestamp_from_days(days: i64) -> Result<i64, ValueError> {
    check_timestamp(days.checked_mul(86_400_000_000).ok_or_else(|| range(format!("date {days} is out of range")))?)
}

/// ISO-8601 text to µs since the epoch, UTC: ZonedTimestamp (`2024-03-01T10:00:00.1234Z`, any
/// fraction length, `Z` or an offset) and isostring/local forms without an offset (read as UTC).
pub fn parse_timestamp(text: &str) -> Result<i64, ValueError> {
    match utc_timestamp(text.as_bytes()) {
        Some(us) => check_timestamp(us),
        None => parse_timestamp_generally(text),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f]Z` with one to nine fraction digits, the form Debezium writes a
/// ZonedTimestamp in, or with an offset `±HH:MM` for `Z` (a timestamptz inside a jsonb), read
/// by position in about 420 instructions, where chrono's general parser took 570 with `Z` and
/// 2,000 with an offset (callgrind; a fifth of a run's changes carry a timestamp); `None` for
/// any other form or a field out of its range, which [`parse_timestamp_generally`] then reads
/// or refuses.
fn utc_timestamp(t: &[u8]) -> Option<i64> {
    let num = |from: usize, to: usize| -> Option<i64> {
        t.get(from..to)?.iter().try_fold(0i64, |v, &c| c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0')))
    };
    if t.len() < 20 || t[4] != b'-' || t[7] != b'-' || t[10] != b'T' || t[13] != b':' || t[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let (mut end, mut micros) = (19, 0);
    if t[19] == b'.' {
        let n = t[20..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        let fraction = num(20, 20 + n)?;
        // Truncated to microseconds, as the general path's nanoseconds / 1000 are.
        micros = if n <= 6 { fraction * 10i64.pow(6 - n as u32) } else { fraction / 10i64.pow(n as u32 - 6) };
        end = 20 + n;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    // `Z`, or an offset `+HH:MM` / `-HH:MM` (as PostgreSQL writes a timestamptz in JSON).
    let offset_minutes = match &t[end..] {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(end + 1, end + 3)?, num(end + 4, end + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || !(1..=month_days).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (y.div_euclid(400), y.rem_euclid(400));
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((((days * 24 + hour) * 60 + minute - offset_minutes) * 60 + second) * 1_000_000 + micros)
}

/// [`parse_timestamp`] for every form it takes, with chrono.
fn parse_timestamp_generally(text: &str) -> Result<i64, ValueError> {
    let t = text.trim();
    let err = || ValueError::Invalid(format!("`{}` is not an ISO-8601 timestamp", preview(t)));
    let in_range =
        |us: Option<i64>| check_timestamp(us.ok_or_else(|| range(format!("`{}` is out of range", preview(t))))?);
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
        return in_range(micros(dt.timestamp(), dt.timestamp_subsec_nanos()));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
            let dt = dt.and_utc();
            return in_range(micros(dt.timestamp(), dt.timestamp_subsec_nanos()));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let dt = d.and_hms_opt(0, 0, 0).ok_or_else(err)?.and_utc();
        return in_range(micros(dt.timestamp(), 0));
    }
    Err(err())
}

/// The first 40 characters of a value, for messages (values may be huge).
pub(crate) fn preview(s: &str) -> String {
    let mut p: String = s.chars().take(40).collect();
    if p.len() < s.len() {
        p.push('…');
    }
    p
}

fn micros(secs: i64, nanos: u32) -> Option<i64> {
    secs.checked_mul(1_000_000)?.checked_add((nanos / 1000) as i64)
}

/// µs since the epoch to `YYYY-MM-DD` (UTC), for the lake's `date=` partitions.
pub fn date_of(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(dt) => dt.format("%Y-%m-%d").to_string(),
        None => "1970-01-01".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(u: i128, s: u32) -> Decimal {
        Decimal { unscaled: u, scale: s }
    }

    /// The fast path reads every timestamp it accepts exactly as chrono's path does, and leaves
    /// the rest to it: dates that do not exist, fields out of range, leap seconds, fractions of
    /// any length, other separators and offsets, years 0 to 9999.
    #[test]
    fn utc_timestamps_agree_with_the_general_path() {
        let mut rng = crate::workload::rng::Rng::new(17);
        let mut fast = 0;
        for _ in 0..50_000 {
            let mut pick = |hi: u64| rng.below(hi);
            let fraction: String = (0..pick(12)).map(|_| char::from(b'0' + pick(10) as u8)).collect();
            let text = format!(
                "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}{}{}{}",
                pick(10_000),
                pick(14),
                pick(33),
                ["T", "T", "T", " ", "t"][pick(5) as usize],
                pick(25),
                pick(61),
                pick(62),
                if fraction.is_empty() && pick(2) == 0 { "" } else { "." },
                fraction,
                ["Z", "Z", "Z", "z", "+00:00", "-05:30", "", "Z ", "+23:59", "-24:00", "+02:60", "+0200", "+02"]
                    [pick(13) as usize],
            );
            let got = parse_timestamp(&text);
            assert_eq!(got, parse_timestamp_generally(&text), "{text}");
            fast += usize::from(utc_timestamp(text.as_bytes()).is_some());
        }
        // About one random text in ten has the fast path's form and valid fields.
        assert!(fast > 4_000, "{fast}");
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_timestamp("2024-02-29T23:59:59.9999999Z"), Ok(1_709_251_199_999_999));
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.5Z"), Ok(-500_000));
        assert_eq!(parse_timestamp("1970-01-01T02:00:00.25+02:00"), Ok(250_000));
        assert_eq!(parse_timestamp("1969-12-31T19:00:00-05:00"), Ok(0));
    }

    /// The fast path reads every text it accepts exactly as the general path does, and leaves
    /// the rest to it (texts of digits, points, signs, exponents and blanks in any order).
    #[test]
    fn plain_decimals_agree_with_the_general_path() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut fast = 0;
        for _ in 0..50_000 {
            let len = 1 + next(24);
            let text: String = (0..len)
                .map(|_| match next(20) {
                    0 => '.',
                    1 => '-',
                    2 => 'e',
                    3 => ' ',
                    4 => '+',
                    d => char::from(b'0' + (d % 10) as u8),
                })
                .collect();
            if let Some(d) = plain_decimal(&text) {
                fast += 1;
                assert_eq!(Ok(d), general_decimal(&text), "`{text}`");
            }
        }
        assert!(fast > 5_000, "the fast path took only {fast} texts");
    }

    #[test]
    fn decimal_text_forms() {
        assert_eq!(parse_decimal("12.340"), Ok(dec(12340, 3)));
        assert_eq!(parse_decimal(" 7.25 "), Ok(dec(725, 2)));
        assert_eq!(parse_decimal("+3"), Ok(dec(3, 0)));
        assert_eq!(parse_decimal("123456789012345678.9"), Ok(dec(1234567890123456789, 1)));
        assert_eq!(parse_decimal("-0.5"), Ok(dec(-5, 1)));
        assert_eq!(parse_decimal("1.5E+3"), Ok(dec(1500, 0)));
        assert_eq!(parse_decimal("2.5e-3"), Ok(dec(25, 4)));
        assert_eq!(parse_decimal("42"), Ok(dec(42, 0)));
        assert!(parse_decimal("abc").is_err());
        assert!(parse_decimal("1.2.3").is_err());
        assert!(parse_decimal("").is_err());
        assert!(parse_decimal("123456789012345678901234567890123456789012").is_err());
    }

    #[test]
    fn doubles_keep_their_written_value() {
        assert_eq!(decimal_from_f64(12.34), Ok(dec(1234, 2)));
        assert_eq!(decimal_from_f64(0.1), Ok(dec(1, 1)));
        assert!(decimal_from_f64(f64::NAN).is_err());
    }

    #[test]
    fn precise_bytes_are_twos_complement() {
        // Debezium's example: 1.23 with scale 2 is "AHs=" (0x00 0x7B).
        assert_eq!(unscaled_from_base64("AHs="), Ok(123));
        assert_eq!(unscaled_from_be_bytes(&[0xFF, 0x85]), Ok(-123));
        assert_eq!(unscaled_from_be_bytes(&[]), Ok(0));
        let mut long = vec![0xFF; 4];
        long.extend_from_slice(&(-5i128).to_be_bytes());
        assert_eq!(unscaled_from_be_bytes(&long), Ok(-5));
        assert!(unscaled_from_be_bytes(&[0x01; 17]).is_err());
        assert!(unscaled_from_base64("!!").is_err());
    }

    #[test]
    fn rescaling_never_rounds() {
        assert_eq!(rescale(dec(1234, 2), 4), Ok(123400));
        assert_eq!(rescale(dec(123400, 4), 2), Ok(1234));
        assert!(rescale(dec(12345, 4), 2).is_err());
        assert_eq!(format_decimal(-123400, 4), "-12.3400");
        assert_eq!(format_decimal(5, 3), "0.005");
    }

    #[test]
    fn timestamps_in_every_form() {
        let base = 1_709_287_200_000_000; // 2024-03-01T10:00:00Z
        assert_eq!(parse_timestamp("2024-03-01T10:00:00Z"), Ok(base));
        assert_eq!(parse_timestamp("2024-03-01T10:00:00.1Z"), Ok(base + 100_000));
        assert_eq!(parse_timestamp("2024-03-01T10:00:00.123456789Z"), Ok(base + 123_456));
        assert_eq!(parse_timestamp("2024-03-01T12:00:00.5+02:00"), Ok(base + 500_000));
        assert_eq!(parse_timestamp("2024-03-01T10:00:00.25"), Ok(base + 250_000));
        assert_eq!(parse_timestamp("2024-03-01 10:00:00"), Ok(base));
        assert_eq!(parse_timestamp("2024-03-01"), Ok(base - 36_000_000_000));
        assert!(parse_timestamp("yesterday").is_err());
        assert_eq!(timestamp_from_int(base, TimeMode::Adaptive), Ok(base));
        assert_eq!(timestamp_from_int(base / 1000, TimeMode::Connect), Ok(base));
        assert_eq!(timestamp_from_int(base * 1000 + 999, TimeMode::Nanoseconds), Ok(base));
        assert_eq!(timestamp_from_days(19783), Ok(base - 36_000_000_000));
        assert_eq!(date_of(base), "2024-03-01");
    }
}
