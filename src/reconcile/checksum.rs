//! The canonical form of a cell, shared by both sides of a reconcile, and its hash.
//!
//! A cell is `(entity_id, attribute name, value)`; both Postgres (in SQL, see `pg.rs`) and the
//! lake (here, in Rust) render it as the bytes `<entity_id> 0x1F <name> 0x1F <value>` where the
//! value is canonical text:
//! - int, bool: plain (`42`, `true`);
//! - decimal: by value, without trailing fractional zeros (`12.5`, `0`, `-3`), as PostgreSQL's
//!   `trim_scale(numeric)::text`;
//! - timestamp: microseconds since the epoch, UTC (`1709287200123456`);
//! - text: the text itself;
//! - json: PostgreSQL's `jsonb::text` normal form (keys by length then bytes, last duplicate
//!   wins, `", "` and `": "` separators, numbers as `numeric` prints them), see [`canonical_json`].
//!
//! Every live entity also contributes one presence cell with an empty name and value, so that an
//! entity without values is still seen, and null values contribute nothing (the lake does not
//! tell a null value from an absent one).
//!
//! The hash of a cell is PostgreSQL's own 64-bit text hash, `hashtextextended(value, seed)` with
//! `seed = entity_id # hashtextextended(name, 0)` (`#`: xor), reimplemented here bit for bit
//! ([`hash_bytes_extended`], Bob Jenkins' lookup3 as in PostgreSQL's `hashfn.c`): several times
//! cheaper in SQL than `md5()` of a concatenation, which is what bounds the Postgres side. A
//! range's checksum is the number of its cells and the sum of their hashes modulo 2^64, so the
//! checksums of two halves add up to the checksum of the whole. In SQL the sum is taken as two
//! `int4` halves (`sum(int4)` accumulates in `int8`, much cheaper than `numeric`) and put back
//! together here ([`sum_from_halves`]).

use crate::columns::Value;
use crate::decode::value::format_decimal;
use crate::decode::DataType;

/// The checksum of a set of cells: how many, and the sum of their hashes modulo 2^64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    pub count: u64,
    pub sum: u64,
}

impl Checksum {
    pub fn add(&mut self, hash: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(hash);
    }

    pub fn merge(&mut self, other: Checksum) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

/// The seed of an attribute's cells: `hashtextextended(name, 0)`; the presence cell's name is
/// empty.
pub fn name_seed(name: &str) -> u64 {
    hash_bytes_extended(name.as_bytes(), 0)
}

/// The hash of one cell (as SQL's bigint, two's complement): `hashtextextended(value,
/// entity_id # name_seed)`.
pub fn cell_hash(entity_id: i64, name_seed: u64, value: &str) -> u64 {
    hash_bytes_extended(value.as_bytes(), (entity_id as u64) ^ name_seed)
}

/// The hash of an entity's presence cell.
pub fn presence_hash(entity_id: i64) -> u64 {
    cell_hash(entity_id, name_seed(""), "")
}

/// The sum modulo 2^64 of `count` hashes, from SQL's `sum((h >> 32)::int4)` and
/// `sum(((h & 4294967295) - 2147483648)::int4)`.
pub fn sum_from_halves(count: i64, high: i64, low: i64) -> u64 {
    (high as u64).wrapping_shl(32).wrapping_add(low as u64).wrapping_add((count as u64).wrapping_mul(1 << 31))
}

/// PostgreSQL's `hash_bytes_extended` (src/common/hashfn.c), which `hashtextextended` applies to
/// a text's bytes under a deterministic collation.
pub fn hash_bytes_extended(k: &[u8], seed: u64) -> u64 {
    #[inline(always)]
    fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(4);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(6);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(8);
        *b = b.wrapping_add(*a);
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(16);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(19);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(4);
        *b = b.wrapping_add(*a);
    }
    #[inline(always)]
    fn fin(a: &mut u32, b: &mut u32, c: &mut u32) {
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(14));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(11));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(25));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(16));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(4));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(14));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(24));
    }
    let le = |x: &[u8]| u32::from_le_bytes([x[0], x[1], x[2], x[3]]);
    let init = 0x9e37_79b9u32.wrapping_add(k.len() as u32).wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    if seed != 0 {
        a = a.wrapping_add((seed >> 32) as u32);
        b = b.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }
    let mut k = k;
    while k.len() >= 12 {
        a = a.wrapping_add(le(&k[0..4]));
        b = b.wrapping_add(le(&k[4..8]));
        c = c.wrapping_add(le(&k[8..12]));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    // The tail, little-endian; the lowest byte of c is left for the length (added above).
    let byte = |i: usize, shift: u32| (k[i] as u32) << shift;
    let r = k.len();
    if r >= 11 {
        c = c.wrapping_add(byte(10, 24));
    }
    if r >= 10 {
        c = c.wrapping_add(byte(9, 16));
    }
    if r >= 9 {
        c = c.wrapping_add(byte(8, 8));
    }
    if r >= 8 {
        b = b.wrapping_add(byte(7, 24));
    }
    if r >= 7 {
        b = b.wrapping_add(byte(6, 16));
    }
    if r >= 6 {
        b = b.wrapping_add(byte(5, 8));
    }
    if r >= 5 {
        b = b.wrapping_add(byte(4, 0));
    }
    if r >= 4 {
        a = a.wrapping_add(byte(3, 24));
    }
    if r >= 3 {
        a = a.wrapping_add(byte(2, 16));
    }
    if r >= 2 {
        a = a.wrapping_add(byte(1, 8));
    }
    if r >= 1 {
        a = a.wrapping_add(byte(0, 0));
    }
    fin(&mut a, &mut b, &mut c);
    ((b as u64) << 32) | c as u64
}

/// The canonical text of a lake cell of an attribute of `data_type`; `decimal_scale` is the
/// lake's. A value whose kind does not match the type (which the lake never writes) is rendered
/// by its own kind, so that it differs from Postgres rather than being dropped.
pub fn canonical_value(value: &Value, data_type: DataType, decimal_scale: u32) -> String {
    let mut out = String::new();
    canonical_value_into(value, data_type, decimal_scale, &mut out);
    out
}

/// [`canonical_value`], appended to `out` (no allocation for the common kinds).
pub fn canonical_value_into(value: &Value, data_type: DataType, decimal_scale: u32, out: &mut String) {
    use std::fmt::Write;
    match value {
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Decimal(d) => out.push_str(&trim_decimal(&format_decimal(*d, decimal_scale))),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Timestamp(us) => {
            let _ = write!(out, "{us}");
        }
        Value::Text(s) if data_type == DataType::Json => match canonical_json(s) {
            Ok(j) => out.push_str(&j),
            Err(_) => out.push_str(s),
        },
        Value::Text(s) => out.push_str(s),
    }
}

/// A decimal's text without trailing fractional zeros (and without a bare trailing point).
fn trim_decimal(text: &str) -> String {
    let t = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { text };
    if t == "-0" {
        "0".to_string()
    } else {
        t.to_string()
    }
}

/// A canonical value made readable for a report: timestamps as RFC 3339 in UTC, the rest as is.
pub fn display_value(canonical: &str, data_type: Option<DataType>) -> String {
    if data_type == Some(DataType::Timestamp) {
        if let Some(dt) = canonical.parse::<i64>().ok().and_then(chrono::DateTime::from_timestamp_micros) {
            return dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        }
    }
    canonical.to_string()
}

/// JSON text in PostgreSQL's `jsonb` output form, so that a JSON value from the lake hashes
/// like `value::text` in Postgres whatever its original spacing, key order or number spelling.
pub fn canonical_json(text: &str) -> Result<String, String> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing characters at byte {}", p.i));
    }
    let mut out = String::with_capacity(text.len());
    write_json(&v, &mut out);
    Ok(out)
}

enum Json {
    Null,
    Bool(bool),
    /// Already in numeric's output form.
    Number(String),
    String(String),
    Array(Vec<Json>),
    /// Sorted as jsonb sorts keys, duplicates resolved (last wins).
    Object(Vec<(String, Json)>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'{') => {
                self.i += 1;
                let mut entries: Vec<(String, Json)> = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Object(entries));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return self.err("expected a key");
                    }
                    let key = self.string()?;
                    self.ws();
                    if self.s.get(self.i) != Some(&b':') {
                        return self.err("expected `:`");
                    }
                    self.i += 1;
                    let v = self.value()?;
                    entries.push((key, v));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            break;
                        }
                        _ => return self.err("expected `,` or `}`"),
                    }
                }
                // jsonb keeps the last of duplicate keys, and orders keys by length, then bytes.
                let mut dedup: Vec<(String, Json)> = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    match dedup.iter_mut().find(|(dk, _)| *dk == k) {
                        Some(slot) => slot.1 = v,
                        None => dedup.push((k, v)),
                    }
                }
                dedup.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
                Ok(Json::Object(dedup))
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            break;
                        }
                        _ => return self.err("expected `,` or `]`"),
                    }
                }
                Ok(Json::Array(items))
            }
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(_) => self.number(),
        }
    }

    fn literal(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            self.err("unexpected character")
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let start = self.i;
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else { return self.err("unterminated string") };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else { return self.err("unterminated escape") };
                    self.i += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp) {
                                if !self.s[self.i..].starts_with(b"\\u") {
                                    return self.err("lone surrogate");
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.err("bad surrogate pair");
                                }
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                            }
                            let ch = char::from_u32(cp).ok_or_else(|| format!("bad \\u escape at byte {}", self.i))?;
                            let mut b = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| format!("string at byte {start} is not UTF-8"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self.s.get(self.i..self.i + 4).ok_or_else(|| "short \\u escape".to_string())?;
        let h = std::str::from_utf8(h).map_err(|_| "bad \\u escape".to_string())?;
        let v = u32::from_str_radix(h, 16).map_err(|_| format!("bad \\u escape `{h}`"))?;
        self.i += 4;
        Ok(v)
    }

    /// A JSON number in `numeric`'s output form: the exponent folded in, display scale
    /// `max(0, fraction digits - exponent)`, no negative zero.
    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        let mut negative = false;
        if self.s.get(self.i) == Some(&b'-') {
            negative = true;
            self.i += 1;
        }
        let take_digits = |p: &mut Self| {
            let s = p.i;
            while p.i < p.s.len() && p.s[p.i].is_ascii_digit() {
                p.i += 1;
            }
            String::from_utf8_lossy(&p.s[s..p.i]).into_owned()
        };
        let int = take_digits(self);
        if int.is_empty() {
            return self.err("bad number");
        }
        let mut frac = String::new();
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            frac = take_digits(self);
            if frac.is_empty() {
                return self.err("bad number");
            }
        }
        let mut exp: i64 = 0;
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            let sign = match self.s.get(self.i) {
                Some(b'-') => {
                    self.i += 1;
                    -1
                }
                Some(b'+') => {
                    self.i += 1;
                    1
                }
                _ => 1,
            };
            let e = take_digits(self);
            exp = sign * e.parse::<i64>().map_err(|_| format!("bad exponent at byte {start}"))?;
        }
        // value = digits × 10^shift
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        let shift = exp - frac.len() as i64;
        let scale = (-shift).max(0) as usize;
        let mut text = if digits.is_empty() {
            if scale > 0 {
                format!("0.{}", "0".repeat(scale))
            } else {
                "0".to_string()
            }
        } else if shift >= 0 {
            format!("{digits}{}", "0".repeat(shift as usize))
        } else {
            let padded = if digits.len() <= scale {
                format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
            } else {
                digits.to_string()
            };
            let (a, b) = padded.split_at(padded.len() - scale);
            format!("{a}.{b}")
        };
        if negative && !digits.is_empty() {
            text.insert(0, '-');
        }
        Ok(Json::Number(text))
    }
}

fn write_json(v: &Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(n),
        Json::String(s) => write_string(s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Json::Object(entries) => {
            out.push('{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(k, out);
                out.push_str(": ");
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

/// PostgreSQL's `escape_json`: the short escapes, other control characters as `\u00xx`,
/// everything else (non-ASCII included) as is.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_takes_postgres_normal_form() {
        let cases = [
            (r#"{"b":1,"a":2}"#, r#"{"a": 2, "b": 1}"#),
            (r#"{"bb":1,"a":2,"c":3}"#, r#"{"a": 2, "c": 3, "bb": 1}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a": 2}"#),
            ("[1.0, 1, 1e2, 1.5E-3, -0, -0.0, 0.10, 12e-1]", "[1.0, 1, 100, 0.0015, 0, 0.0, 0.10, 1.2]"),
            (r#""a\u00e9\n\"\\\/\u0001😀""#, "\"a\u{e9}\\n\\\"\\\\/\\u0001😀\""),
            (r#"{"x": {"z": [], "y": {}}}"#, r#"{"x": {"y": {}, "z": []}}"#),
            ("  true ", "true"),
            (r#""\ud83d\ude00""#, "\"😀\""),
        ];
        for (input, want) in cases {
            assert_eq!(canonical_json(input).unwrap(), want, "{input}");
        }
        assert!(canonical_json("{").is_err());
        assert!(canonical_json("1 2").is_err());
    }

    #[test]
    fn decimals_compare_by_value() {
        assert_eq!(canonical_value(&Value::Decimal(12_500_000_000), DataType::Decimal, 9), "12.5");
        assert_eq!(canonical_value(&Value::Decimal(0), DataType::Decimal, 9), "0");
        assert_eq!(canonical_value(&Value::Decimal(-3_000_000_000), DataType::Decimal, 9), "-3");
        assert_eq!(canonical_value(&Value::Decimal(1), DataType::Decimal, 9), "0.000000001");
        assert_eq!(canonical_value(&Value::Decimal(500), DataType::Decimal, 0), "500");
    }

    #[test]
    fn sums_wrap_and_halves_rebuild_the_sum() {
        let hashes = [u64::MAX, 1u64 << 63, 12345, 0xdead_beef_0000_0001];
        let want = hashes.iter().fold(0u64, |s, h| s.wrapping_add(*h));
        let high: i64 = hashes.iter().map(|h| (*h as i64) >> 32).sum();
        let low: i64 = hashes.iter().map(|h| ((*h as i64) & 0xffff_ffff) - (1 << 31)).sum();
        assert_eq!(sum_from_halves(hashes.len() as i64, high, low), want);
        assert_eq!(sum_from_halves(0, 0, 0), 0);
    }
}
