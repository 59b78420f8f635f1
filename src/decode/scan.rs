//! A small JSON cursor for the hot path: Debezium envelopes are read field by field, straight
//! from the record's bytes, skipping what eavlake does not use sixteen bytes at a time (SSE2)
//! instead of building it. Profiling showed serde's derived visitors (key matching, moves of
//! large structs, per-string UTF-8 checks) costing three times a plain scan of the same bytes.
//! Keys of objects read with [`Cursor::fields`] are not scanned at all when they come in the
//! order they came before (see [`Keys`]): Debezium's never change order, and matching every key
//! was the scan's largest cost.
//!
//! The input is a `&str` (UTF-8 checked once, up front). Strings without escapes are borrowed;
//! escaped ones are unescaped into an owned `String`. Skipped values are checked for structure
//! (balanced brackets, terminated strings) but not for every grammar rule of JSON.

use super::layout::{Action, Layout, Layouts, MemberSpan, Step};
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

    #[inline(always)]
    fn ws(&mut self) {
        // Debezium writes JSON without blanks: one comparison decides (every token byte is
        // above the space).
        if self.b.get(self.pos).is_some_and(|&c| c > b' ') {
            return;
        }
        self.ws_slow();
    }

    fn ws_slow(&mut self) {
        while let Some(c) = self.b.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    /// The text from the cursor to the end.
    pub fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    /// Moves the cursor `n` bytes on, past text a caller has read from [`Cursor::rest`].
    pub fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.b.len());
    }

    /// The text from `start` to the cursor.
    pub fn since(&self, start: usize) -> &'a str {
        self.src.get(start..self.pos).unwrap_or("")
    }

    /// The next non-blank byte, not consumed.
    #[inline(always)]
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
    #[inline(always)]
    pub fn null(&mut self) -> bool {
        if self.peek() == Some(b'n') && self.b[self.pos..].starts_with(b"null") {
            self.pos += 4;
            true
        } else {
            false
        }
    }

    /// Consumes an object's `{`; false when the object is empty (its `}` consumed too).
    fn open_object(&mut self) -> Result<bool> {
        match self.peek() {
            Some(b'{') => self.pos += 1,
            None => return Err(self.syntax("unexpected end of input")),
            Some(_) if self.is_value_start() => return Err(self.shape("expected an object")),
            Some(_) => return Err(self.syntax("expected a JSON value")),
        }
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// After a member: consumes `,` (true: another member follows) or the closing `}` (false).
    #[inline(always)]
    fn next_member(&mut self) -> Result<bool> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b'}') => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.syntax("expected `,` or `}`")),
        }
    }

    /// Calls `f` with each key of an object; `f` must consume the member's value.
    pub fn object(&mut self, mut f: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>) -> Result<()> {
        if !self.open_object()? {
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a key"));
            }
            let key = self.string()?;
            self.eat(b':')?;
            f(self, key)?;
            if !self.next_member()? {
                return Ok(());
            }
        }
    }

    /// Like [`Cursor::object`], for an object whose keys `keys` knows: calls `f` with each wanted
    /// key's id and name, and may call it with [`OTHER_KEY`] for the others; `f` must consume
    /// the member's value (and do nothing else for [`OTHER_KEY`]).
    ///
    /// The object is first walked along the layouts `keys` learned (see [`super::layout`]),
    /// which pass over members not wanted without calling `f`. A record that departs from the
    /// layouts partway is read again member by member from the start, so `f` may be called
    /// twice for a member and must store what it reads, not add it up.
    #[inline(always)]
    pub fn fields(&mut self, keys: &mut Keys, mut f: impl FnMut(&mut Self, KeyId, &str) -> Result<()>) -> Result<()> {
        self.ws();
        let start = self.pos;
        if keys.layouts.active() {
            for i in 0..keys.layouts.list.len() {
                if self.walk(&keys.layouts.list[i], &mut f)? {
                    keys.layouts.hit(i);
                    return Ok(());
                }
            }
        }
        self.members(keys, &mut f)?;
        if keys.layouts.active() {
            let slots = &keys.slots;
            keys.layouts.missed(&self.src[start..self.pos], |text| layout_members(text, slots));
        }
        Ok(())
    }

    /// Reads the object at the cursor along `layout`: false, with the cursor back where it
    /// was, when the record departs from it.
    #[inline(always)]
    fn walk(&mut self, layout: &Layout, f: &mut impl FnMut(&mut Self, KeyId, &str) -> Result<()>) -> Result<bool> {
        let start = self.pos;
        for step in &layout.steps {
            if !same_bytes(self.b, self.pos, step) {
                self.pos = start;
                return Ok(false);
            }
            self.pos += step.len;
            match step.action {
                Action::Read(id) => f(self, id, &step.name)?,
                Action::Skip => self.skip()?,
                Action::End => return Ok(true),
            }
        }
        Ok(true)
    }

    /// The start and end of the value at the cursor, which is passed over.
    pub(super) fn value_span(&mut self) -> Result<(usize, usize)> {
        self.ws();
        let start = self.pos;
        self.skip()?;
        Ok((start, self.pos))
    }

    /// [`Cursor::fields`] member by member: the next key is first guessed from the order `keys`
    /// learned (see [`Keys`]) and checked with one comparison; only a wrong guess scans and
    /// matches the key. `f` is called for every member, [`OTHER_KEY`] for keys not wanted.
    fn members(&mut self, keys: &mut Keys, mut f: impl FnMut(&mut Self, KeyId, &str) -> Result<()>) -> Result<()> {
        if !self.open_object()? {
            return Ok(());
        }
        // Index into `keys.next` of the key before: 0 before the first.
        let mut prev = 0usize;
        loop {
            match keys.guess(prev, self.b, self.pos) {
                Some(slot) => {
                    let k = &keys.slots[slot];
                    self.pos += k.pattern.len();
                    prev = slot + 1;
                    f(self, k.id, &k.name)?;
                }
                None => {
                    if self.peek() != Some(b'"') {
                        return Err(self.syntax("expected a key"));
                    }
                    let key = self.string()?;
                    self.eat(b':')?;
                    // A key written with escapes is not learned: its bytes would never match.
                    let slot = match &key {
                        Cow::Borrowed(k) => keys.learn(k),
                        Cow::Owned(k) => keys.find(k),
                    };
                    match slot {
                        Some(slot) => {
                            keys.follows(prev, slot);
                            prev = slot + 1;
                            f(self, keys.slots[slot].id, &key)?;
                        }
                        None => {
                            prev = 0;
                            f(self, OTHER_KEY, &key)?;
                        }
                    }
                }
            }
            if !self.next_member()? {
                return Ok(());
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
        // Escapes come with JSON inside JSON (hot_attributes): on every entities change. Read in
        // one pass when the string is well formed; the slow path says what is wrong otherwise.
        #[cfg(target_arch = "x86_64")]
        if let Some((text, end)) = unescape_to_quote(self.src, start) {
            self.pos = end;
            return Ok(Cow::Owned(text));
        }
        let end = self.skip_string_from(start)?;
        unescape(&self.src[start..end - 1]).map(Cow::Owned).map_err(|(at, message)| ScanError {
            pos: start + at,
            message: format!("bad string: {message}"),
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
        // Fast path for plain integers (ids, LSNs, times: several on every record), eight digits
        // at a time; up to 18 digits cannot overflow. Anything else (19 digits, a fraction, an
        // exponent) takes the general path.
        self.ws();
        let b = self.b;
        let mut i = self.pos;
        let neg = b.get(i) == Some(&b'-');
        if neg {
            i += 1;
        }
        let (v, n) = digits(b, i);
        i += n;
        let ends_number = !b.get(i).is_some_and(|&c| NUMBER_GOES_ON[usize::from(c)]);
        if (1..=18).contains(&n) && ends_number {
            // At most 18 digits: below i64::MAX either way.
            let v = v as i64;
            self.pos = i;
            return Ok(if neg { -v } else { v });
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
        self.pos = scalar_end(self.b, self.pos);
        if self.pos == start {
            return Err(self.syntax("expected a JSON value"));
        }
        Ok(start)
    }

    /// The members of the object that makes up the whole input, when it is written exactly as
    /// PostgreSQL writes a `jsonb` (`{"key": value, "key": value}`: one blank after each `:`
    /// and `,`, none elsewhere, keys without escapes), each as its key and its value's text
    /// (what [`Cursor::raw`] gives), at most `max` of them. `None` when the text departs from
    /// that form anywhere or has more members, nesting deeper than the cursor allows included:
    /// the caller then reads it with [`Cursor::object`], which reads every such object as this
    /// does and says what is wrong with the others. The cursor is left where it was.
    ///
    /// One pass that checks the separators where they must be, instead of looking for blanks
    /// and tokens around every key and value (`hot_attributes` of every entities change:
    /// reading them member by member was a twenty-fifth of a file run in callgrind).
    pub fn jsonb_members(&mut self, max: usize, out: &mut Vec<(Cow<'a, str>, &'a str)>) -> Option<()> {
        let (b, start, at) = (self.b, out.len(), self.pos);
        let members = (|| {
            if b == b"{}" {
                return Some(());
            }
            let mut i = 1;
            (b.first() == Some(&b'{')).then_some(())?;
            loop {
                // `"key": `
                (b.get(i) == Some(&b'"')).then_some(())?;
                let q = quote_or_backslash(b, i + 1)?;
                (b[q] == b'"' && b.get(q + 1..q + 3) == Some(b": ")).then_some(())?;
                let key = self.src.get(i + 1..q)?;
                let v = q + 3;
                let end = match b.get(v)? {
                    b'"' => string_end(b, v + 1)?,
                    b'0'..=b'9' | b'-' | b'a'..=b'z' => scalar_end(b, v),
                    b'{' | b'[' => {
                        self.pos = v;
                        self.skip_nested().ok()?;
                        self.pos
                    }
                    _ => return None,
                };
                (out.len() - start < max).then_some(())?;
                out.push((Cow::Borrowed(key), self.src.get(v..end)?));
                match (b.get(end)?, b.get(end + 1)) {
                    (b',', Some(b' ')) => i = end + 2,
                    (b'}', None) => return Some(()),
                    _ => return None,
                }
            }
        })();
        self.pos = at;
        if members.is_none() {
            out.truncate(start);
        }
        members
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
    #[inline(always)]
    pub fn skip(&mut self) -> Result<()> {
        let b = self.b;
        // Most values skipped are strings, numbers and literals (Debezium's version, names,
        // times, `"xmin":null`): read where they are skipped, without a call. A scalar is read as
        // `skip_nested` reads it at the top level.
        match b.get(self.pos) {
            Some(b'"') => {
                if let Some(end) = string_end(b, self.pos + 1) {
                    self.pos = end;
                    return Ok(());
                }
            }
            Some(b'0'..=b'9' | b'-' | b'a'..=b'z') => {
                self.pos = scalar_end(b, self.pos);
                return Ok(());
            }
            _ => {}
        }
        self.skip_nested()
    }

    /// [`Cursor::skip`] past its fast cases: objects, arrays, literals, and errors.
    fn skip_nested(&mut self) -> Result<()> {
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
                    i = scalar_end(b, i);
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

/// The bytes after an integer's digits that make it something else (a fraction, an exponent,
/// a bad token): one load rather than a chain of comparisons on every integer.
static NUMBER_GOES_ON: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = b'a';
    while c <= b'z' {
        t[c as usize] = true;
        c += 1;
    }
    t[b'.' as usize] = true;
    t[b'E' as usize] = true;
    t[b'+' as usize] = true;
    t[b'-' as usize] = true;
    t
};

const ZEROS: u64 = 0x3030_3030_3030_3030;
const POW10: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// The value and count of the decimal digits at `b[start..]`. Past 18 digits the count is right
/// but the value has wrapped (callers take another path then).
///
/// Up to sixteen digits (ids, LSNs, microsecond times: several on every record) are counted
/// with one SSE2 compare and converted as two words of eight, without a loop: 57 instructions a
/// call, where the loop eight at a time took 77 (callgrind, 10M calls in a 1M-event file run).
/// Longer numbers, and numbers in the last fifteen bytes of a buffer, take that loop.
#[inline]
pub(crate) fn digits(b: &[u8], start: usize) -> (u64, usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = simd::load(b, start) {
        // Bits 16 and up are set, so the count is at most 16.
        let n = (!simd::mask(simd::within(x, b'0', 9))).trailing_zeros() as usize;
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        match n {
            0 => return (0, 0),
            1..=8 => return (eight_digits(last_digits(word(start), n)), n),
            9..=15 => {
                let high = eight_digits(word(start));
                return (high * POW10[n - 8] + eight_digits(last_digits(word(start + 8), n - 8)), n);
            }
            // Exactly sixteen when the next byte is not a digit; more go the long way.
            _ if !b.get(start + 16).is_some_and(u8::is_ascii_digit) => {
                return (eight_digits(word(start)) * POW10[8] + eight_digits(word(start + 8)), n)
            }
            _ => {}
        }
    }
    digits_by_eight(b, start)
}

/// `n` (1 to 8) digits at the start of the word `x`, moved to its end behind zeros, for
/// [`eight_digits`].
#[inline(always)]
fn last_digits(x: u64, n: usize) -> u64 {
    if n == 8 {
        x
    } else {
        (x << (8 * (8 - n))) | (ZEROS >> (8 * n))
    }
}

/// [`digits`] eight at a time, for any length and anywhere in the buffer.
fn digits_by_eight(b: &[u8], start: usize) -> (u64, usize) {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    let mut v = 0u64;
    let mut i = start;
    while let Some(w) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(w.try_into().unwrap_or_default());
        // A byte is a digit when its high nibble is 3 and stays 3 with 6 added. A carry out of
        // a non-digit byte can only disturb the bytes after it, so the lowest flag is exact.
        let not_digit = ((x & HIGH_NIBBLES) ^ ZEROS) | ((x.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES) ^ ZEROS);
        if not_digit == 0 {
            v = v.wrapping_mul(100_000_000).wrapping_add(eight_digits(x));
            i += 8;
            continue;
        }
        let n = (not_digit.trailing_zeros() / 8) as usize;
        if n > 0 {
            v = v.wrapping_mul(POW10[n]).wrapping_add(eight_digits(last_digits(x, n)));
        }
        return (v, i + n - start);
    }
    while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9) {
        v = v.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    (v, i - start)
}

/// The value of eight ASCII digits, the first in the lowest byte: pairs, then quads, then all.
#[inline(always)]
fn eight_digits(x: u64) -> u64 {
    let x = x.wrapping_sub(0x3030_3030_3030_3030);
    let x = (x.wrapping_mul(10) + (x >> 8)) & 0x00FF_00FF_00FF_00FF;
    let x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_FFFF_0000_FFFF;
    (x.wrapping_mul(10_000) + (x >> 32)) & 0xFFFF_FFFF
}

/// Index of the first byte at or after `i` that cannot be part of a number or a literal
/// (`0-9 - + . e E a-z`), sixteen bytes at a time on x86-64.
fn scalar_end(b: &[u8], i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    let i = match simd::first(b, i, |x| {
        use simd::{eq, within};
        let ok = [within(x, b'0', 9), within(x, b'a', 25), eq(x, b'-'), eq(x, b'+'), eq(x, b'.'), eq(x, b'E')];
        simd::not(ok.into_iter().fold(simd::none(), simd::or))
    }) {
        Ok(end) => return end,
        Err(rest) => rest,
    };
    let mut i = i;
    while matches!(b.get(i), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z')) {
        i += 1;
    }
    i
}

/// The text of a JSON string's content (between its quotes) with its escapes resolved; on
/// failure, the offset of the fault and what it is. Refuses what serde_json refuses: control
/// characters, unknown escapes, lone surrogates.
fn unescape(raw: &str) -> std::result::Result<String, (usize, String)> {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        // The runs between escapes are short (JSON in JSON): found inline, not by memchr.
        let run_end = backslash(b, i).unwrap_or(b.len());
        let run = &raw[i..run_end];
        if let Some(p) = run.bytes().position(|c| c < 0x20) {
            return Err((i + p, "control character (\\u0000-\\u001F) in a string".into()));
        }
        out.push_str(run);
        i = run_end;
        if i == b.len() {
            break;
        }
        let (c, len) = escape_at(raw, i).map_err(|message| (i, message.to_string()))?;
        out.push(c);
        i += len;
    }
    Ok(out)
}

/// The character the escape at `raw[at]` (a backslash) stands for, and the escape's length.
#[inline]
fn escape_at(raw: &str, at: usize) -> std::result::Result<(char, usize), &'static str> {
    let Some(&e) = raw.as_bytes().get(at + 1) else { return Err("unterminated escape") };
    let c = match e {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hex = |at: usize| {
                raw.get(at..at + 4)
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
            };
            let Some(hi) = hex(at + 2) else { return Err("invalid \\u escape") };
            let (code, len) = match hi {
                0xD800..=0xDBFF => {
                    let lo = if raw.get(at + 6..at + 8) == Some("\\u") { hex(at + 8) } else { None };
                    match lo {
                        Some(lo @ 0xDC00..=0xDFFF) => (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), 12),
                        _ => return Err("lone leading surrogate in hex escape"),
                    }
                }
                0xDC00..=0xDFFF => return Err("lone trailing surrogate in hex escape"),
                c => (c, 6),
            };
            return char::from_u32(code).map(|c| (c, len)).ok_or("invalid \\u escape");
        }
        _ => return Err("invalid escape"),
    };
    Ok((c, 2))
}

/// A string's content from `start` (just after its opening quote) to its closing quote, with its
/// escapes resolved, and the index after that quote: one pass that copies sixteen bytes at a
/// time up to the next quote, backslash or control character (three passes before: find the
/// end, find each escape, check for control characters). `None` for anything but text and valid
/// escapes up to a closing quote: the slow path ([`unescape`]) then says what is wrong.
#[cfg(target_arch = "x86_64")]
fn unescape_to_quote(src: &str, start: usize) -> Option<(String, usize)> {
    let b = src.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len().saturating_sub(start).min(256));
    let mut i = start;
    loop {
        let stop = loop {
            let Some(x) = simd::load(b, i) else {
                let p = b[i..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
                out.extend_from_slice(&b[i..i + p]);
                break i + p;
            };
            let m = simd::mask(simd::or(simd::or(simd::eq(x, b'"'), simd::eq(x, b'\\')), simd::within(x, 0, 0x1F)));
            // The whole block is stored; only the bytes before the first flagged one count.
            let n = if m == 0 { 16 } else { m.trailing_zeros() as usize };
            simd::push(&mut out, x, n);
            i += n;
            if m != 0 {
                break i;
            }
        };
        match b[stop] {
            b'"' => {
                // SAFETY: `out` is the bytes of `src` (a `str`) between the escapes, each run
                // starting and ending next to an ASCII byte (a quote, a backslash, an escape's
                // last character), so on character boundaries, and the escapes' characters
                // pushed whole: valid UTF-8.
                return Some((unsafe { String::from_utf8_unchecked(out) }, stop + 1));
            }
            b'\\' => match b.get(stop + 1) {
                // Nearly all of them: the quotes of JSON inside JSON.
                Some(&e @ (b'"' | b'\\' | b'/')) => {
                    out.push(e);
                    i = stop + 2;
                }
                _ => {
                    let (c, len) = escape_at(src, stop).ok()?;
                    let mut utf8 = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                    i = stop + len;
                }
            },
            _ => return None,
        }
    }
}

/// First `\\` at or after `i`, sixteen bytes at a time on x86-64.
#[inline(always)]
fn backslash(b: &[u8], i: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    let i = match simd::first(b, i, |x| simd::eq(x, b'\\')) {
        Ok(at) => return Some(at),
        Err(rest) => rest,
    };
    b.get(i..)?.iter().position(|&c| c == b'\\').map(|p| i + p)
}

/// Id of a key a reader wants (see [`Keys`]); [`OTHER_KEY`] for any other.
pub type KeyId = u8;
pub const OTHER_KEY: KeyId = 0;

/// The keys of one kind of object (Debezium's envelope, its `source` block, a row image) and the
/// order they came in lately. Debezium writes every record of a table with the same keys in the
/// same order, so the key after a given key is nearly always one of the two that followed it
/// lately: [`Cursor::fields`] checks those guesses against the record's bytes (`"name":`, 32
/// bytes compared at once) and scans and matches a key only when both are wrong. Keys not
/// wanted are learned too (as [`OTHER_KEY`]), up to a bound, so that they are guessed as well.
pub struct Keys {
    slots: Vec<Slot>,
    /// `next[0]`: guesses for an object's first key; `next[s + 1]`: for the key after slot `s`.
    next: Vec<[u16; 2]>,
    layouts: Layouts,
}

struct Slot {
    name: Box<str>,
    id: KeyId,
    /// `"name":` (so at most 32 bytes long), also padded to 32 bytes, with a bit per byte of
    /// it set where the record's byte must match.
    pattern: Box<[u8]>,
    padded: [u8; 32],
    bits: u32,
}

const NO_SLOT: u16 = u16::MAX;
/// Keys learned per kind of object at most (records with ever new keys must not grow it).
const MAX_SLOTS: usize = 64;
/// Longer keys are matched by scanning, never guessed (`"name":` must fit 32 bytes).
const MAX_KEY_BYTES: usize = 29;

impl Keys {
    /// Keys wanted, with their ids (not [`OTHER_KEY`]).
    pub fn new(wanted: &[(&str, KeyId)]) -> Keys {
        let mut keys = Keys { slots: Vec::new(), next: vec![[NO_SLOT; 2]], layouts: Layouts::default() };
        for (name, id) in wanted {
            keys.add(name, *id);
        }
        keys
    }

    fn add(&mut self, name: &str, id: KeyId) -> Option<usize> {
        if self.slots.len() >= MAX_SLOTS || name.len() > MAX_KEY_BYTES || name.contains(['"', '\\']) {
            return None;
        }
        let mut pattern = Vec::with_capacity(name.len() + 3);
        pattern.push(b'"');
        pattern.extend_from_slice(name.as_bytes());
        pattern.extend_from_slice(b"\":");
        let mut padded = [0u8; 32];
        padded[..pattern.len()].copy_from_slice(&pattern);
        // At most 32 bytes (MAX_KEY_BYTES + 3): the shift stays below 64.
        let bits = ((1u64 << pattern.len()) - 1) as u32;
        self.slots.push(Slot { name: name.into(), id, padded, bits, pattern: pattern.into() });
        self.next.push([NO_SLOT; 2]);
        Some(self.slots.len() - 1)
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| *s.name == *name)
    }

    /// The slot of `name`, learning it (as a key not wanted) when it is new and there is room.
    fn learn(&mut self, name: &str) -> Option<usize> {
        self.find(name).or_else(|| self.add(name, OTHER_KEY))
    }

    /// Records that `slot` came after `prev` (an index into `next`).
    fn follows(&mut self, prev: usize, slot: usize) {
        let slot = slot as u16;
        if let Some(n) = self.next.get_mut(prev) {
            if n[0] != slot && n[1] != slot {
                *n = [slot, n[0]];
            }
        }
    }

    /// The slot of the key at `b[pos..]` if it is one of the guesses after `prev`.
    #[inline(always)]
    fn guess(&self, prev: usize, b: &[u8], pos: usize) -> Option<usize> {
        let guesses = self.next.get(prev)?;
        let rest = b.get(pos..)?;
        #[cfg(target_arch = "x86_64")]
        if let Some(w) = rest.first_chunk::<32>() {
            // The record's 32 bytes are loaded once and compared with each guess byte by byte,
            // sixteen at a time: a bit per equal byte, then the pattern's bits must all be set.
            // (Half the instructions of comparing them as masked u128 words: callgrind.)
            let x = simd::load32(w);
            return guesses
                .iter()
                .map(|&g| usize::from(g))
                .find(|&g| self.slots.get(g).is_some_and(|s| simd::equal_bits(x, &s.padded) & s.bits == s.bits));
        }
        guesses
            .iter()
            .map(|&g| usize::from(g))
            .find(|&g| self.slots.get(g).is_some_and(|s| rest.starts_with(&s.pattern)))
    }
}

/// The members of `text`, an object, for a layout: each key, its id when wanted, and the
/// span of its value.
fn layout_members(text: &str, slots: &[Slot]) -> Option<Vec<MemberSpan>> {
    let mut c = Cursor::new(text);
    let mut out = Vec::new();
    c.object(|c, key| {
        let (start, end) = c.value_span()?;
        let wanted = slots.iter().find(|s| *s.name == *key && s.id != OTHER_KEY).map(|s| s.id);
        out.push(MemberSpan { key: key.into_owned(), wanted, start, end });
        Ok(())
    })
    .ok()?;
    Some(out)
}

/// Whether `b[pos..]` starts with the run of bytes of `step`.
#[inline(always)]
fn same_bytes(b: &[u8], pos: usize, step: &Step) -> bool {
    let lit = &step.lit;
    #[cfg(target_arch = "x86_64")]
    if pos + lit.len() <= b.len() {
        // Whole blocks, then the last one (there is one: `lit` is padded, never empty) with only
        // the bytes of the run counted.
        let mut i = 0;
        while i + 16 < lit.len() {
            // SAFETY: i + 16 < lit.len() and pos + lit.len() <= b.len(): both loads in bounds.
            if unsafe { simd::equal_at(b, pos + i, lit, i) } != 0xFFFF {
                return false;
            }
            i += 16;
        }
        // SAFETY: as above, with i + 16 == lit.len().
        return unsafe { simd::equal_at(b, pos + i, lit, i) } & step.last_bits == step.last_bits;
    }
    b.get(pos..pos + step.len) == lit.get(..step.len)
}

/// Index after the closing quote of a string whose content starts at `i`, or `None` if it is
/// not terminated.
#[inline(always)]
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i = quote_or_backslash(b, i)?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// First `"` or `\\` at or after `i`, sixteen bytes at a time on x86-64, then eight.
fn quote_or_backslash(b: &[u8], i: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    let i = match simd::first(b, i, |x| simd::or(simd::eq(x, b'"'), simd::eq(x, b'\\'))) {
        Ok(at) => return Some(at),
        Err(rest) => rest,
    };
    quote_or_backslash_swar(b, i)
}

/// The sixteen-byte steps of the scans above, with SSE2 (part of every x86-64).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Sixteen bytes, or a mask of them (0xFF where a byte is flagged).
    pub type Block = __m128i;

    /// The first index at or after `i` whose byte `hit` flags, sixteen bytes at a time:
    /// `Err(rest)` when none is flagged before `rest` and fewer than sixteen bytes remain there
    /// (the caller reads those one by one).
    #[inline(always)]
    pub fn first(b: &[u8], mut i: usize, hit: impl Fn(Block) -> Block) -> Result<usize, usize> {
        while let Some(x) = load(b, i) {
            let m = mask(hit(x));
            if m != 0 {
                return Ok(i + m.trailing_zeros() as usize);
            }
            i += 16;
        }
        Err(i)
    }

    /// The sixteen bytes `b[i..i + 16]`; `None` when fewer remain.
    #[inline(always)]
    pub fn load(b: &[u8], i: usize) -> Option<Block> {
        // SAFETY: the unaligned load reads b[i..i + 16], checked in bounds.
        (i + 16 <= b.len()).then(|| unsafe { _mm_loadu_si128(b.as_ptr().add(i).cast()) })
    }

    /// One bit per byte of `x`, set where the byte is flagged.
    #[inline(always)]
    pub fn mask(x: Block) -> u32 {
        // SAFETY: SSE2 is part of every x86-64 target (so for all the calls in this module).
        unsafe { _mm_movemask_epi8(x) as u32 }
    }

    /// Appends the first `n` (at most sixteen) bytes of `x` to `out`.
    #[inline(always)]
    pub fn push(out: &mut Vec<u8>, x: Block, n: usize) {
        debug_assert!(n <= 16);
        out.reserve(16);
        // SAFETY: `reserve` left room for sixteen more bytes; only the first `n` are counted in.
        unsafe {
            _mm_storeu_si128(out.as_mut_ptr().add(out.len()).cast(), x);
            out.set_len(out.len() + n.min(16));
        }
    }

    /// A bit per byte of `a[i..i + 16]` equal to that of `b[j..j + 16]`.
    ///
    /// # Safety
    /// Both ranges must be in bounds.
    #[inline(always)]
    pub unsafe fn equal_at(a: &[u8], i: usize, b: &[u8], j: usize) -> u32 {
        debug_assert!(i + 16 <= a.len() && j + 16 <= b.len());
        let x = _mm_loadu_si128(a.as_ptr().add(i).cast());
        let y = _mm_loadu_si128(b.as_ptr().add(j).cast());
        mask(_mm_cmpeq_epi8(x, y))
    }

    /// The bytes equal to `c`.
    #[inline(always)]
    pub fn eq(x: Block, c: u8) -> Block {
        unsafe { _mm_cmpeq_epi8(x, _mm_set1_epi8(c as i8)) }
    }

    /// The bytes from `lo` to `lo + span`: `x - lo`, unsigned, at most `span`.
    #[inline(always)]
    pub fn within(x: Block, lo: u8, span: u8) -> Block {
        unsafe {
            let d = _mm_sub_epi8(x, _mm_set1_epi8(lo as i8));
            _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(span as i8)), d)
        }
    }

    #[inline(always)]
    pub fn or(a: Block, b: Block) -> Block {
        unsafe { _mm_or_si128(a, b) }
    }

    #[inline(always)]
    pub fn not(a: Block) -> Block {
        unsafe { _mm_xor_si128(a, _mm_set1_epi8(-1)) }
    }

    /// No byte flagged.
    #[inline(always)]
    pub fn none() -> Block {
        unsafe { _mm_setzero_si128() }
    }

    /// The 32 bytes of `w` as two blocks.
    #[inline(always)]
    pub fn load32(w: &[u8; 32]) -> [Block; 2] {
        // SAFETY: both unaligned loads read inside the 32 bytes.
        unsafe { [_mm_loadu_si128(w.as_ptr().cast()), _mm_loadu_si128(w.as_ptr().add(16).cast())] }
    }

    /// One bit per byte of `x` (32 bytes), set where it equals the byte of `y` at that place.
    #[inline(always)]
    pub fn equal_bits(x: [Block; 2], y: &[u8; 32]) -> u32 {
        let [y0, y1] = load32(y);
        // SAFETY: SSE2, as above.
        unsafe { mask(_mm_cmpeq_epi8(x[0], y0)) | mask(_mm_cmpeq_epi8(x[1], y1)) << 16 }
    }
}

/// First `"` or `\\` at or after `i`, eight bytes at a time.
fn quote_or_backslash_swar(b: &[u8], mut i: usize) -> Option<usize> {
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

    /// The randomized tests' source: the workload's seeded generator, as a closure.
    fn random(seed: u64) -> impl FnMut() -> u64 {
        let mut rng = crate::workload::rng::Rng::new(seed);
        move || rng.next_u64()
    }

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

    /// What the reader is given, in order: each member's key id, name and raw value, by
    /// [`Cursor::fields`] (layouts first; members not wanted left out, as a layout passes over
    /// them) or member by member. The reader stores them by the value's place, as `fields` asks:
    /// a record that departs from a layout partway is read again from the start.
    fn read_members(keys: &mut Keys, src: &str, layouts: bool) -> Result<Vec<(KeyId, String, String)>> {
        let mut c = Cursor::new(src);
        let mut seen = std::collections::BTreeMap::new();
        let f = |c: &mut Cursor, id, name: &str| {
            let (start, end) = c.value_span()?;
            if id != OTHER_KEY || !layouts {
                seen.insert(start, (id, name.to_string(), src[start..end].to_string()));
            }
            Ok(())
        };
        if layouts {
            c.fields(keys, f)?;
        } else {
            c.members(keys, f)?;
        }
        Ok(seen.into_values().collect())
    }

    /// Layouts read what reading member by member reads, whatever changes between records:
    /// constants that vary, values of other lengths, keys reordered or missing, blanks, escapes,
    /// records cut short or broken. Each pair of records is read in turns with keys that learn
    /// layouts from them, and each record also with new keys (member by member).
    #[test]
    fn layouts_read_what_member_by_member_reads() {
        const WANTED: &[(&str, KeyId)] = &[("lsn", 1), ("table", 2), ("ts_us", 3), ("obj", 4)];
        let records = [
            r#"{"version":"2.7.3","name":"eav","lsn":12,"ts_ns":99,"table":"entities","ts_us":5,"obj":{"a":[1,"}"]},"xmin":null}"#,
            r#"{"version":"2.7.3","name":"eav","lsn":1234567,"ts_ns":9,"table":"entity_values","ts_us":55,"obj":null,"xmin":null}"#,
            r#"{"version":"2.7.4","name":"eav","lsn":3,"ts_ns":99,"table":"e","ts_us":5,"obj":{},"xmin":null}"#,
            r#"{"version":"2.7.4","name":"eav","lsn":3,"ts_ns":99,"table":"e","ts_us":5,"obj":{},"xmin":7}"#,
            r#"{"version":"2.7.4","name":"eav","lsn":3,"ts_ns":99,"table":"e","ts_us":5,"obj":{},"xmin":null,"extra":1}"#,
            r#"{"version":"2.7.4","name":"eav","lsn":3,"ts_ns":99,"table":"e","ts_us":5,"obj":{}}"#,
            r#"{"name":"eav","version":"2.7.4","lsn":3,"ts_ns":99,"table":"e","ts_us":5,"obj":{},"xmin":null}"#,
            r#"{ "version":"2.7.4","name":"eav","lsn":3,"ts_ns":99,"table":"e","ts_us":5,"obj":{},"xmin":null}"#,
            r#"{"version":"2.7.4","name":"e\u0061v","lsn":3,"ts_ns":99,"table":"e\"","ts_us":5,"obj":{},"xmin":null}"#,
            r#"{"version":"2.7.4","name":"eav","l\u0073n":4,"ts_ns":99,"table":"e","ts_us":5,"obj":{},"xmin":null}"#,
            r#"{"version":"2.7.4","name":"eav","lsn":3,"ts_ns":99,"table":"e"","ts_us":5,"obj":{},"xmin":null}"#,
            r#"{"version":"2.7.4","name":"eav","lsn":"3","ts_ns":99,"table":"e","ts_us":5,"obj":{},"xmin":null}"#,
            r#"{"version":"2.7.4","name":"eav","lsn":3,"ts_ns":99,"table":"e","ts_us":5,"obj":{},"xmin":nul"#,
            r#"{"version":"2.7.4","name":"eav","lsn":3,"ts_ns":99,"table":"e","ts_us":5,"obj":{}"#,
            r#"{"version":"2.7.4","name":"eav","lsn":3,"ts_ns":99,"table":"e","ts_us":5,"#,
            r#"{"version":"2.7.4","name":"eav","lsn":3,"ts_ns":99,"table":"e","ts_us":5,"obj":{},"xmin":null} "#,
            r#"{}"#,
            r#"[]"#,
        ];
        // Every pair of records, each meeting layouts learned from the other and from itself.
        let mut hits = 0;
        for (i, a) in records.iter().enumerate() {
            for b in records.iter().skip(i) {
                let mut learned = Keys::new(WANTED);
                for r in [a, b, b, a, a, b] {
                    let by_layout = read_members(&mut learned, r, true);
                    let by_member = read_members(&mut Keys::new(WANTED), r, false)
                        .map(|m| m.into_iter().filter(|(id, ..)| *id != OTHER_KEY).collect::<Vec<_>>());
                    assert_eq!(by_layout, by_member, "{r}");
                }
                hits += learned.layouts.hits();
            }
        }
        // Most records after the first of a pair were read by a layout.
        assert!(hits > records.len() * records.len(), "{hits} hits");
    }

    /// Keys are guessed from the order learned, and a wrong guess (another table's image, keys
    /// reordered, spaces, escapes, a key never seen) still reads every member right.
    #[test]
    fn fields_read_the_same_whatever_the_guesses() {
        const A: KeyId = 1;
        const B: KeyId = 2;
        const LONG: KeyId = 3;
        let mut keys = Keys::new(&[("a", A), ("b", B), ("a_key_of_twenty_chars", LONG)]);
        let read = |keys: &mut Keys, src: &str| read_members(keys, src, false);
        let o = |id, name: &str, v: &str| (id, name.to_string(), v.to_string());
        let first = r#"{"a":1,"x":"s","b":[1,{"a":2}],"a_key_of_twenty_chars":null}"#;
        let want = vec![
            o(A, "a", "1"),
            o(OTHER_KEY, "x", r#""s""#),
            o(B, "b", r#"[1,{"a":2}]"#),
            o(LONG, "a_key_of_twenty_chars", "null"),
        ];
        for _ in 0..3 {
            assert_eq!(read(&mut keys, first).unwrap(), want);
        }
        let other = r#"{ "b" : 5 , "a":"t","y":true,"x":0,"a\u005fkey_of_twenty_chars":1}"#;
        let want_other = vec![
            o(B, "b", "5"),
            o(A, "a", r#""t""#),
            o(OTHER_KEY, "y", "true"),
            o(OTHER_KEY, "x", "0"),
            o(LONG, "a_key_of_twenty_chars", "1"),
        ];
        for _ in 0..3 {
            assert_eq!(read(&mut keys, other).unwrap(), want_other);
            assert_eq!(read(&mut keys, first).unwrap(), want);
        }
        // A key that only begins like a known one, and one past the end of the input.
        assert_eq!(read(&mut keys, r#"{"ab":1,"a":2}"#).unwrap(), vec![o(OTHER_KEY, "ab", "1"), o(A, "a", "2")]);
        assert!(read(&mut keys, r#"{"a":1,"b""#).unwrap_err().syntax);
        assert!(read(&mut keys, r#"{"a":1,"a_key_of_twenty_ch"#).unwrap_err().syntax);
        assert!(!read(&mut keys, "[1]").unwrap_err().syntax);
        // Ever new keys do not grow the table past its bound.
        for i in 0..200 {
            read(&mut keys, &format!(r#"{{"k{i}":1}}"#)).unwrap();
        }
        assert!(keys.slots.len() <= MAX_SLOTS);
    }

    #[test]
    fn integers_eight_digits_at_a_time() {
        for len in 1..=20usize {
            let text: String = (0..len).map(|i| char::from(b'1' + (i % 9) as u8)).collect();
            for tail in ["", ",", "}", " ", "x"] {
                let src = format!("{text}{tail}");
                let (v, n) = digits(src.as_bytes(), 0);
                assert_eq!(n, len, "{src}");
                if len <= 18 {
                    assert_eq!(v, text.parse::<u64>().unwrap(), "{src}");
                }
            }
            let parsed = Cursor::new(&text).i64();
            assert_eq!(parsed.ok(), text.parse::<i64>().ok(), "{text}");
            assert_eq!(Cursor::new(&format!("-{text},")).i64().ok(), format!("-{text}").parse::<i64>().ok());
        }
        assert_eq!(digits(b"0012", 0), (12, 4));
        assert_eq!(digits(b"12345678/", 0), (12345678, 8));
        assert_eq!(digits(b"1234567:", 0), (1234567, 7));
        assert_eq!(digits(b"\xff2345678", 0), (0, 0));
        assert_eq!(scalar_end(b"1709272200435407000}", 0), 19);
        assert_eq!(scalar_end(b"-1.5e+10,", 0), 8);
        assert_eq!(scalar_end(b"truefalsenull0123456789\"", 0), 23);
        assert_eq!(scalar_end(b"12345678901234567\xc3\xa9", 0), 17);
    }

    /// The sixteen-byte path of `digits` counts and converts as the eight-byte one does, for
    /// every length of number and whatever follows it (the number near the buffer's end or not).
    #[test]
    fn digits_sixteen_at_a_time_are_digits_eight_at_a_time() {
        let mut next = random(29);
        let tails: [&[u8]; 8] = [b"", b",", b"}", b".5", b"e3", b"\x00", b"\xff", b"/:"];
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let mut buf: Vec<u8> = (0..(next() % 4) as usize).map(|_| b'x').collect();
            let start = buf.len();
            buf.extend((0..len).map(|_| b'0' + (next() % 10) as u8));
            buf.extend_from_slice(tails[(next() % tails.len() as u64) as usize]);
            buf.extend((0..(next() % 24) as usize).map(|_| (next() % 256) as u8));
            let want = digits_by_eight(&buf, start);
            assert_eq!(digits(&buf, start), want, "{:?}", String::from_utf8_lossy(&buf));
            if len <= 18 && want.1 == len {
                let text = std::str::from_utf8(&buf[start..start + len]).unwrap();
                assert_eq!(want.0, text.parse::<u64>().unwrap_or(0));
            }
        }
    }

    #[test]
    fn escapes_resolved_or_refused_as_serde_json_does() {
        for raw in
            [r#"plain"#, r#"a\"b\\c\/d\be\ff\ng\rh\ti"#, r#"\u00e9\u20ac\ud83d\ude00x"#, r#"{\"k\": [1, \"v\"]}"#, ""]
        {
            let quoted = format!("\"{raw}\"");
            let want: String = serde_json::from_str(&quoted).unwrap();
            assert_eq!(Cursor::new(&quoted).string().unwrap(), want, "{raw}");
        }
        for bad in [r#"\x"#, r#"\u12"#, r#"\ud83dx"#, r#"\ude00"#, "a\u{1}b\\n", r#"\ud83d\u0041"#] {
            let quoted = format!("\"{bad}\"");
            assert!(serde_json::from_str::<String>(&quoted).is_err(), "{bad}");
            let e = Cursor::new(&quoted).string().unwrap_err();
            assert!(e.syntax && e.message.starts_with("bad string"), "{bad}: {e}");
        }
    }

    #[test]
    fn long_escaped_strings_read_in_one_pass_as_serde_json_reads_them() {
        // Escapes, multi-byte characters and the closing quote at every offset of the
        // sixteen-byte blocks, with a value after the string that the cursor must land on.
        for len in 0..48 {
            for at in 0..=len {
                for insert in [r#"\""#, r#"\u00e9"#, r#"\ud83d\ude00"#, "é", "€x", r#"\\"#] {
                    let mut raw: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
                    raw.insert_str(at, insert);
                    let src = format!("\"{raw}\",7");
                    let want: String = serde_json::from_str(&format!("\"{raw}\"")).unwrap();
                    let mut c = Cursor::new(&src);
                    assert_eq!(c.string().unwrap(), want, "{raw}");
                    assert_eq!((c.next_member(), c.i64()), (Ok(true), Ok(7)), "{raw}");
                }
                // What the one pass cannot read falls to the slow path, which says why.
                let body: String = (0..len).map(|_| 'q').collect();
                for (bad, why) in [
                    (format!("\"{}\\n{}\u{1}\"", &body[..at], &body[at..]), "bad string: control character"),
                    (format!("\"{}\\n{}\\x\"", &body[..at], &body[at..]), "bad string: invalid escape"),
                    (format!("\"{}\\n{}", &body[..at], &body[at..]), "unterminated string"),
                    (format!("\"{}\\n{}\\", &body[..at], &body[at..]), "unterminated string"),
                ] {
                    let e = Cursor::new(&bad).string().unwrap_err();
                    assert!(e.syntax && e.message.starts_with(why), "{bad:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn random_strings_read_as_serde_json_reads_them() {
        // Pieces that stress the one-pass reader in any order: escapes of every kind, surrogate
        // pairs, multi-byte characters, quotes and backslashes, control characters, long runs.
        const PIECES: [&str; 16] = [
            "a",
            "bcdefghijklmnopq",
            r#"\""#,
            r#"\\"#,
            r#"\/"#,
            r#"\n"#,
            r#"\u00e9"#,
            r#"\ud83d\ude00"#,
            "é",
            "€",
            "😀",
            "\u{1}",
            r#"\x"#,
            r#"\ud83d"#,
            "\t",
            "0123456789012345678901234567890",
        ];
        let mut next = random(0x9E37_79B9_7F4A_7C15u64);
        for _ in 0..20_000 {
            let raw: String = (0..next() % 12).map(|_| PIECES[(next() % 16) as usize]).collect();
            let quoted = format!("\"{raw}\"");
            let ours = Cursor::new(&quoted).string().map(|s| s.into_owned());
            match serde_json::from_str::<String>(&quoted) {
                Ok(want) => assert_eq!(ours, Ok(want), "{raw:?}"),
                // A string without escapes is borrowed as it is, control characters and all (the
                // fast path checks nothing else); with escapes it is checked as serde_json does.
                Err(_) if !raw.contains('\\') => assert_eq!(ours.as_deref(), Ok(raw.as_str()), "{raw:?}"),
                Err(_) => assert!(ours.is_err_and(|e| e.syntax), "{raw:?}"),
            }
        }
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

    /// The one-pass reader of jsonb-formed objects reads what the member-by-member reader reads
    /// (key and value text of each member, with the same limits on members and nesting) for
    /// every object it accepts, and accepts the jsonb form itself; random objects built from
    /// pieces in and out of that form.
    #[test]
    fn jsonb_members_read_what_object_reads() {
        const KEYS: [&str; 6] = ["a", "tags", "is_paid", r#"k\"ey"#, "é", ""];
        const VALUES: [&str; 14] = [
            "1",
            "-935.89",
            "true",
            "null",
            r#""customer""#,
            r#""a \"q\" b""#,
            r#"{"lang": "x", "n": [1, {"b": 2}]}"#,
            "[]",
            "{}",
            "[[[[1]]]]",
            r#""unterminated"#,
            "+1",
            "[1, 2",
            r#"{"a" 1}"#,
        ];
        const SEPARATORS: [&str; 5] = [", ", ",", " , ", ",  ", ", "];
        let mut next = random(0x2545_F491_4F6C_DD1Du64);
        let general = |json: &str, max: usize, depth: usize| {
            let mut c = Cursor::with_max_depth(json, depth);
            let mut out: Vec<(String, String)> = Vec::new();
            c.object(|c, key| {
                if out.len() == max {
                    return Err(c.shape("too many keys"));
                }
                out.push((key.into_owned(), c.raw()?.to_string()));
                Ok(())
            })
            .and_then(|()| c.end())
            .map(|()| out)
        };
        let mut accepted = 0;
        for round in 0..30_000 {
            let n = next() % 5;
            let mut json = String::from(if next().is_multiple_of(16) { "{ " } else { "{" });
            for m in 0..n {
                if m > 0 {
                    json += SEPARATORS[(next() % 5) as usize];
                }
                let colon = if next().is_multiple_of(16) { ":" } else { ": " };
                let key = KEYS[(next() % 6) as usize];
                json += &format!("\"{key}\"{colon}{}", VALUES[(next() % 14) as usize]);
            }
            json += if next().is_multiple_of(16) { "} " } else { "}" };
            let (max, depth) = ((next() % 5) as usize, (next() % 4) as usize);
            let mut out = Vec::new();
            let mut c = Cursor::with_max_depth(&json, depth);
            let fast = c.jsonb_members(max, &mut out);
            assert_eq!(c.pos, 0, "{json}");
            if fast.is_some() {
                accepted += 1;
                let fast: Vec<(String, String)> = out.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                assert_eq!(Ok(fast), general(&json, max, depth), "round {round}: {json}");
            } else {
                assert!(out.is_empty(), "{json}");
            }
        }
        assert!(accepted > 3_000, "only {accepted} objects in jsonb form were read in one pass");
        // The form PostgreSQL writes is read in one pass.
        let mut out = Vec::new();
        let json = r#"{"tags": {"lang": "customer", "street": -935.89}, "is_paid": true}"#;
        assert_eq!(Cursor::with_max_depth(json, 8).jsonb_members(10, &mut out), Some(()));
        assert_eq!(
            out,
            [(Cow::Borrowed("tags"), r#"{"lang": "customer", "street": -935.89}"#), (Cow::Borrowed("is_paid"), "true")]
        );
    }
}
