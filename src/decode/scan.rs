//! A small JSON cursor for the hot path: Debezium envelopes are read field by field, straight
//! from the record's bytes, skipping what eavlake does not use eight bytes at a time instead of
//! building it. Profiling showed serde's derived visitors (key matching, moves of large
//! structs, per-string UTF-8 checks) costing three times a plain scan of the same bytes.
//!
//! The input is a `&str` (UTF-8 checked once, up front). Strings without escapes are borrowed;
//! escaped ones are unescaped into an owned `String`. Skipped values are checked for structure
//! (balanced brackets, terminated strings) but not for every grammar rule of JSON.

use super::value::preview;
use std::borrow::Cow;

/// Where and why the JSON could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanError {
    pub pos: usize,
    pub message: String,
    /// True for malformed JSON; false for well-formed JSON of an unexpected shape.
    pub syntax: bool,
    /// Well-formed, but past a limit.
    pub beyond: Option<Beyond>,
}

/// The limit a well-formed value is past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beyond {
    /// An integer past i64.
    IntegerRange,
    /// Nesting deeper than the cursor's maximum depth.
    Depth,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.message, self.pos)
    }
}

pub type Result<T> = std::result::Result<T, ScanError>;

pub struct Cursor<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    /// Deepest nesting [`Cursor::skip`] accepts (JSONB values: see `limits`).
    max_depth: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(src: &'a str) -> Cursor<'a> {
        Cursor { src, b: src.as_bytes(), pos: 0, max_depth: usize::MAX }
    }

    /// A cursor whose skipped values may nest at most `max_depth` arrays or objects deep.
    pub fn with_max_depth(src: &'a str, max_depth: usize) -> Cursor<'a> {
        Cursor { max_depth, ..Cursor::new(src) }
    }

    fn syntax(&self, message: impl Into<String>) -> ScanError {
        ScanError { pos: self.pos, message: message.into(), syntax: true, beyond: None }
    }

    /// A well-formed value of the wrong kind.
    pub fn shape(&self, message: impl Into<String>) -> ScanError {
        ScanError { pos: self.pos, message: message.into(), syntax: false, beyond: None }
    }

    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    /// The text from `start` to the cursor.
    pub fn since(&self, start: usize) -> &'a str {
        self.src.get(start..self.pos).unwrap_or("")
    }

    /// The next non-blank byte, not consumed.
    pub fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> Result<()> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else if self.pos >= self.b.len() {
            Err(self.syntax("unexpected end of input"))
        } else {
            Err(self.syntax(format!("expected `{}`", c as char)))
        }
    }

    /// Ensures only blanks remain.
    pub fn end(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.syntax("trailing characters")),
        }
    }

    /// Consumes `null` if it is next.
    pub fn null(&mut self) -> bool {
        if self.peek() == Some(b'n') && self.b[self.pos..].starts_with(b"null") {
            self.pos += 4;
            true
        } else {
            false
        }
    }

    /// Calls `f` with each key of an object; `f` must consume the member's value.
    pub fn object(&mut self, mut f: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>) -> Result<()> {
        match self.peek() {
            Some(b'{') => self.pos += 1,
            None => return Err(self.syntax("unexpected end of input")),
            Some(_) if self.is_value_start() => return Err(self.shape("expected an object")),
            Some(_) => return Err(self.syntax("expected a JSON value")),
        }
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a key"));
            }
            let key = self.string()?;
            self.eat(b':')?;
            f(self, key)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax("expected `,` or `}`")),
            }
        }
    }

    fn is_value_start(&self) -> bool {
        matches!(self.b.get(self.pos), Some(b'"' | b'[' | b'{' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9'))
    }

    /// A string value (borrowed when it has no escapes).
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        match self.peek() {
            Some(b'"') => {}
            None => return Err(self.syntax("unexpected end of input")),
            Some(_) if self.is_value_start() => return Err(self.shape("expected a string")),
            Some(_) => return Err(self.syntax("expected a JSON value")),
        }
        let start = self.pos + 1;
        if let Some(i) = quote_or_backslash(self.b, start) {
            if self.b[i] == b'"' {
                self.pos = i + 1;
                return Ok(Cow::Borrowed(&self.src[start..i]));
            }
        }
        let end = self.skip_string_from(start)?;
        // Escapes are rare (JSON inside JSON: hot_attributes, sequence): let serde_json do them.
        let raw = &self.src[start - 1..end];
        serde_json::from_str::<String>(raw).map(Cow::Owned).map_err(|e| ScanError {
            pos: start,
            message: format!("bad string: {e}"),
            syntax: true,
            beyond: None,
        })
    }

    /// Skips a string whose content starts at `start`; returns the index after its closing quote.
    fn skip_string_from(&mut self, start: usize) -> Result<usize> {
        match string_end(self.b, start) {
            Some(end) => {
                self.pos = end;
                Ok(end)
            }
            None => {
                self.pos = self.b.len();
                Err(self.syntax("unterminated string"))
            }
        }
    }

    /// An integer value.
    pub fn i64(&mut self) -> Result<i64> {
        // Fast path for plain integers (ids, LSNs, times: on every record several times):
        // digits accumulated directly, falling back to the general path for anything else.
        self.ws();
        let b = self.b;
        let mut i = self.pos;
        let neg = b.get(i) == Some(&b'-');
        if neg {
            i += 1;
        }
        let digits_start = i;
        let mut v: i64 = 0;
        while let Some(&c) = b.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            match v.checked_mul(10).and_then(|v| v.checked_sub((c - b'0') as i64)) {
                Some(n) => v = n,
                None => return self.i64_slow(),
            }
            i += 1;
        }
        let ends_number = !matches!(b.get(i), Some(b'.' | b'e' | b'E' | b'a'..=b'z' | b'+' | b'-'));
        if i > digits_start && ends_number {
            // Accumulated negatively so that i64::MIN fits.
            let v = if neg { Some(v) } else { v.checked_neg() };
            if let Some(v) = v {
                self.pos = i;
                return Ok(v);
            }
        }
        self.i64_slow()
    }

    fn i64_slow(&mut self) -> Result<i64> {
        let start = self.scalar_start()?;
        let text = &self.src[start..self.pos];
        text.parse().map_err(|_| {
            let digits = text.strip_prefix('-').unwrap_or(text);
            let range = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            let message = if range {
                format!("integer `{}` is beyond the range of a 64-bit integer", preview(text))
            } else {
                format!("expected an integer, found `{}`", preview(text))
            };
            ScanError { pos: start, message, syntax: false, beyond: range.then_some(Beyond::IntegerRange) }
        })
    }

    /// A boolean value.
    pub fn bool(&mut self) -> Result<bool> {
        let start = self.scalar_start()?;
        match &self.src[start..self.pos] {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(ScanError {
                pos: start,
                message: format!("expected a boolean, found `{}`", preview(other)),
                syntax: false,
                beyond: None,
            }),
        }
    }

    /// Consumes a scalar (number or literal) and returns where it started; a string, object or
    /// array here is a shape error, and is skipped so the message can show it.
    fn scalar_start(&mut self) -> Result<usize> {
        let start = match self.peek() {
            Some(b'"' | b'{' | b'[') => {
                let raw = self.raw()?;
                return Err(ScanError {
                    pos: self.pos - raw.len(),
                    message: format!("expected a scalar, found `{}`", preview(raw)),
                    syntax: false,
                    beyond: None,
                });
            }
            Some(_) => self.pos,
            None => return Err(self.syntax("unexpected end of input")),
        };
        while let Some(c) = self.b.get(self.pos) {
            if !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z') {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.syntax("expected a JSON value"));
        }
        Ok(start)
    }

    /// Skips any value and returns its text.
    pub fn raw(&mut self) -> Result<&'a str> {
        self.ws();
        let start = self.pos;
        self.skip()?;
        Ok(&self.src[start..self.pos])
    }

    /// After a value of the wrong kind inside an object: skips the rest of the object.
    pub fn skip_to_object_end(&mut self) -> Result<()> {
        loop {
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b',' | b':') => self.pos += 1,
                Some(_) => self.skip()?,
                None => return Err(self.syntax("unexpected end of input")),
            }
        }
    }

    /// Skips any value: one tight loop over the bytes, tracking only nesting and strings.
    pub fn skip(&mut self) -> Result<()> {
        let b = self.b;
        let mut i = self.pos;
        let mut depth = 0usize;
        // Kept in a register: the loop writes `self.pos` only on the way out.
        let max_depth = self.max_depth;
        loop {
            let Some(&c) = b.get(i) else {
                self.pos = i;
                return Err(self.syntax("unexpected end of input"));
            };
            match c {
                b' ' | b'\n' | b'\r' | b'\t' => i += 1,
                b',' | b':' if depth > 0 => i += 1,
                b'"' => {
                    let Some(end) = string_end(b, i + 1) else {
                        self.pos = b.len();
                        return Err(self.syntax("unterminated string"));
                    };
                    i = end;
                    if depth == 0 {
                        break;
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    if depth > max_depth {
                        self.pos = i;
                        return Err(ScanError {
                            pos: i,
                            message: format!("nested more than {max_depth} levels deep"),
                            syntax: false,
                            beyond: Some(Beyond::Depth),
                        });
                    }
                    i += 1;
                }
                b'}' | b']' => {
                    if depth == 0 {
                        self.pos = i;
                        return Err(self.syntax("unexpected closing bracket"));
                    }
                    depth -= 1;
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                b'0'..=b'9' | b'-' | b'a'..=b'z' => {
                    while matches!(b.get(i), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z')) {
                        i += 1;
                    }
                    if depth == 0 {
                        break;
                    }
                }
                _ => {
                    self.pos = i;
                    return Err(self.syntax("expected a JSON value"));
                }
            }
        }
        self.pos = i;
        Ok(())
    }
}

/// Index after the closing quote of a string whose content starts at `i`, or `None` if it is
/// not terminated.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i = quote_or_backslash(b, i)?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// First `"` or `\\` at or after `i`, eight bytes at a time (most strings here are 5 to 40
/// bytes: shorter than memchr's set-up pays for, longer than a byte loop is quick for).
fn quote_or_backslash(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` equal to `c` leaves a high bit in `zero(x ^ c·ONES)`; bytes above the first
    // match may be flagged too, but the lowest flag is always exact.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().ok()?);
        let m = zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?.iter().position(|&c| c == b'"' || c == b'\\').map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_skips() {
        let src = r#" {"a": "x", "b": {"c": [1, 2, {"d": "}"}]}, "e": -12, "f": true, "g": null, "h": "q\"\u00e9"} "#;
        let mut c = Cursor::new(src);
        let mut seen = Vec::new();
        c.object(|c, k| {
            match &*k {
                "a" => assert_eq!(c.string()?, "x"),
                "b" => assert_eq!(c.raw()?, r#"{"c": [1, 2, {"d": "}"}]}"#),
                "e" => assert_eq!(c.i64()?, -12),
                "f" => assert!(c.bool()?),
                "g" => assert!(c.null()),
                "h" => assert_eq!(c.string()?, "q\"é"),
                _ => c.skip()?,
            }
            seen.push(k.into_owned());
            Ok(())
        })
        .unwrap();
        c.end().unwrap();
        assert_eq!(seen, ["a", "b", "e", "f", "g", "h"]);
    }

    #[test]
    fn finds_quotes_and_backslashes_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for c in [b'"', b'\\'] {
                    let mut v = vec![b'a'; len];
                    v[at] = c;
                    // A second match later must not hide the first.
                    if at + 3 < len {
                        v[at + 3] = b'"';
                    }
                    assert_eq!(quote_or_backslash(&v, 0), Some(at), "len {len} at {at}");
                }
            }
            assert_eq!(quote_or_backslash(&vec![b'x'; len], 0), None);
        }
        assert_eq!(string_end(br#"ab\"c"d"#, 0), Some(6));
    }

    #[test]
    fn tells_bad_json_from_bad_shape() {
        let err = |src: &str, f: &dyn Fn(&mut Cursor) -> Result<()>| f(&mut Cursor::new(src)).unwrap_err();
        assert!(err(r#"{"a": "x"#, &|c| c.object(|c, _| c.skip())).syntax);
        assert!(err(r#"{"a" 1}"#, &|c| c.object(|c, _| c.skip())).syntax);
        assert!(err(r#"{"a": [1, 2}"#, &|c| c.object(|c, _| c.skip())).syntax);
        assert!(!err("[1]", &|c| c.object(|c, _| c.skip())).syntax);
        let e = err(r#""12""#, &|c| c.i64().map(drop));
        assert!(!e.syntax);
        assert_eq!(e.message, "expected a scalar, found `\"12\"`");
        let e = err("1.5", &|c| c.i64().map(drop));
        assert_eq!(e.message, "expected an integer, found `1.5`");
        let e = err("1e3", &|c| c.i64().map(drop));
        assert_eq!(e.message, "expected an integer, found `1e3`");
        let e = err("9223372036854775808", &|c| c.i64().map(drop));
        assert_eq!(e.message, "integer `9223372036854775808` is beyond the range of a 64-bit integer");
        assert_eq!((e.beyond, e.syntax), (Some(Beyond::IntegerRange), false));
        assert_eq!(err("1.5", &|c| c.i64().map(drop)).beyond, None);
        assert!(err("-", &|c| c.i64().map(drop)).message.contains("expected an integer"));
        for (text, v) in [("0", 0), ("-0", 0), ("42", 42), (" -7,", -7), ("9223372036854775807", i64::MAX)] {
            assert_eq!(Cursor::new(text).i64(), Ok(v), "{text}");
        }
        assert_eq!(Cursor::new("-9223372036854775808").i64(), Ok(i64::MIN));
        assert!(Cursor::new("{} x").object(|c, _| c.skip()).is_ok());
        let mut c = Cursor::new("{} x");
        c.object(|c, _| c.skip()).unwrap();
        assert!(c.end().unwrap_err().syntax);
    }
}
