//! The file source: Debezium record values, one per line, all tables in one file (told apart by
//! `source.table`), read in order. A line `null` is a tombstone; blank lines are skipped.
//!
//! The file is one stream named after the file; its positions are line numbers, so a run that
//! resumes after a recorded position skips the lines already durable in the lake.
//!
//! A line longer than `max_line_bytes` is not held whole: its first `max_line_bytes` bytes are
//! kept, the rest is read past, and the record says how long it was ([`Record::oversized`]), so
//! that one endless line cannot exhaust memory.
//!
//! A regular file is memory-mapped and its lines handed out in place: copying it through
//! `read` cost a tenth of a file run's CPU when the machine was busy. Pages read are released
//! every [`RELEASE`] bytes, so memory stays bounded whatever the file's size. The file must not
//! be truncated during the run (reading a page cut off the end of a mapping stops the
//! process). Anything that cannot be mapped (a pipe, an empty file) is read in chunks.

use super::Record;
use crate::position::StreamId;
use crate::prefetch::prefetch;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("reading `{path}` at line {line}: {source}")]
pub struct FileSourceError {
    pub path: PathBuf,
    pub line: i64,
    #[source]
    pub source: std::io::Error,
}

/// Bytes read from the file at once. Lines are handed out from this buffer without copying.
const CHUNK: usize = 4 << 20;

/// Bytes of a mapped file handed out between two releases of the pages behind.
const RELEASE: usize = 4 << 20;

/// Pages are released whole (x86-64's 4 KiB; a larger page only makes a release do less).
const PAGE: usize = 4096;

/// How far ahead of the line being handed out the mapped bytes are prefetched.
const PREFETCH: usize = 8 << 10;

/// Asks the CPU for the cache lines of `[from, to]` moved `PREFETCH` bytes on, so that the
/// line after next is in cache when it is searched: the hardware prefetcher does not follow a
/// sequential read into the next page, so each page of the mapping began with cache misses.
#[inline]
fn prefetch_ahead(map: Option<&[u8]>, from: usize, to: usize) {
    if let Some(m) = map {
        let lo = (from + PREFETCH) & !63;
        // A long line's bytes past the first 64 KiB are left to the hardware.
        let hi = (to + 1 + PREFETCH).min(lo + (64 << 10)).min(m.len());
        let mut i = lo;
        while i < hi {
            prefetch(&m[i]);
            i += 64;
        }
    }
}

/// Where the line at the start of `hay` ends (its `\n`, if `hay` holds one) and whether every
/// byte before that is ASCII. One pass for both: checking a line's UTF-8 in the decoder after
/// finding its end was a second pass over every byte (simdutf8, 1.9% of a 1M-event run), and
/// most Debezium JSON lines are ASCII (non-ASCII text comes through as is, not `\u` escaped).
fn line_end(hay: &[u8]) -> (Option<usize>, bool) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above; std caches the answer).
        return unsafe { line_end_avx2(hay) };
    }
    line_end_portable(hay)
}

fn line_end_portable(hay: &[u8]) -> (Option<usize>, bool) {
    let end = memchr::memchr(b'\n', hay);
    (end, hay[..end.unwrap_or(hay.len())].is_ascii())
}

/// [`line_end`] 64 bytes a step: per step, one test for a newline and one for a high bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn line_end_avx2(hay: &[u8]) -> (Option<usize>, bool) {
    use std::arch::x86_64::*;
    let nl = _mm256_set1_epi8(b'\n' as i8);
    // A high bit anywhere in the steps before the one holding the newline.
    let mut high = false;
    let mut i = 0;
    while i + 64 <= hay.len() {
        // SAFETY: `i + 64 <= hay.len()`: both 32-byte loads are inside `hay`.
        let (a, b) = unsafe {
            let p = hay.as_ptr().add(i);
            (_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast()))
        };
        let (ea, eb) = (_mm256_cmpeq_epi8(a, nl), _mm256_cmpeq_epi8(b, nl));
        if _mm256_movemask_epi8(_mm256_or_si256(ea, eb)) != 0 {
            let eq = (_mm256_movemask_epi8(ea) as u32 as u64) | ((_mm256_movemask_epi8(eb) as u32 as u64) << 32);
            let hi = (_mm256_movemask_epi8(a) as u32 as u64) | ((_mm256_movemask_epi8(b) as u32 as u64) << 32);
            let at = eq.trailing_zeros();
            // `at < 64`: the bits of the bytes before the newline.
            let before = hi & ((1u64 << at) - 1);
            return (Some(i + at as usize), !high && before == 0);
        }
        high |= _mm256_movemask_epi8(_mm256_or_si256(a, b)) != 0;
        i += 64;
    }
    let (end, ascii) = line_end_portable(&hay[i..]);
    (end.map(|e| i + e), !high && ascii)
}

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    file: File,
    /// The whole file, when it could be mapped; `buf` is unused then.
    map: Option<memmap2::Mmap>,
    /// Start of the mapped bytes not yet released.
    released: usize,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    line: i64,
    max_line_bytes: usize,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<FileSource, FileSourceError> {
        let file = File::open(path).map_err(|source| FileSourceError { path: path.to_path_buf(), line: 0, source })?;
        let map = Self::map(&file);
        Ok(FileSource {
            path: path.to_path_buf(),
            file,
            buf: if map.is_some() { Vec::new() } else { vec![0; CHUNK] },
            end: map.as_ref().map_or(0, |m| m.len()),
            eof: map.is_some(),
            map,
            released: 0,
            start: 0,
            line: 0,
            max_line_bytes: crate::limits::Limits::default().max_record_bytes,
        })
    }

    /// The same source reading in chunks, as for a file that cannot be mapped.
    #[cfg(test)]
    fn unmapped(mut self) -> FileSource {
        if self.map.take().is_some() {
            (self.buf, self.end, self.eof) = (vec![0; CHUNK], 0, false);
        }
        self
    }

    /// Keeps at most `max` bytes of a line (`limits.max_record_bytes`).
    pub fn with_max_line_bytes(mut self, max: usize) -> FileSource {
        self.max_line_bytes = max.max(1);
        self
    }

    /// The stream this file is: named by the file name, so two files are two streams.
    pub fn stream(&self) -> StreamId {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        StreamId::File { name }
    }

    /// A read-only mapping of a non-empty regular file, read front to back.
    fn map(file: &File) -> Option<memmap2::Mmap> {
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() == 0 {
            return None;
        }
        // SAFETY: the mapping is read-only and private; the file is not written by this process,
        // and the module contract says it must not be truncated while it is read.
        let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
        // Read-ahead on: the file is read once, front to back.
        let _ = map.advise(memmap2::Advice::Sequential);
        Some(map)
    }

    /// The bytes lines are cut from: the mapping, or the read buffer.
    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&self.buf)
    }

    /// Releases the mapped pages before `upto` (rounded down to a page) once [`RELEASE`] bytes
    /// have been passed: they are read again from the file if touched again, so this only
    /// bounds memory.
    fn release(&mut self, upto: usize) {
        if self.map.is_none() || upto < self.released + RELEASE {
            return;
        }
        // `released` stays on a page boundary, so the span starts where the last one ended.
        self.release_span(self.released, upto);
        self.released = upto & !(PAGE - 1);
    }

    /// Releases the whole mapped pages within `[lo, hi)` now (also the middle of an oversized
    /// line).
    fn release_span(&self, lo: usize, hi: usize) {
        let Some(map) = &self.map else { return };
        let (lo, hi) = ((lo + PAGE - 1) & !(PAGE - 1), hi & !(PAGE - 1));
        if hi > lo {
            // SAFETY: the pages are part of this private read-only mapping; no slice into them
            // is alive (records borrow the source mutably, so the previous one is gone) or
            // handed out later (they are behind the line being read, or past what it keeps).
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, lo, hi - lo) };
        }
    }

    /// The next line of a mapped file (see [`Self::next_line`]).
    fn next_mapped_line(&mut self) -> Option<Line> {
        let len = self.end;
        if self.start >= len {
            return None;
        }
        // Looked for in steps, releasing behind, so an endless line does not stay mapped whole.
        let mut from = self.start;
        let mut ascii = true;
        let end = loop {
            let to = (from + RELEASE).min(len);
            let (found, step_ascii) = self.map.as_deref().map_or((None, false), |m| line_end(&m[from..to]));
            ascii &= step_ascii;
            match found {
                Some(nl) => break from + nl,
                None if to == len => break len,
                None => {
                    // Past the line's first max_line_bytes (all a record keeps of it), what
                    // was scanned is let go.
                    self.release_span(self.start + self.max_line_bytes, to);
                    from = to;
                }
            }
        };
        prefetch_ahead(self.map.as_deref(), self.start, end);
        let line = Line { start: self.start, end, dropped: 0, ascii };
        self.start = (end + 1).min(len);
        Some(line)
    }

    /// The next line; `None` at the end of the file.
    fn next_line(&mut self) -> Result<Option<Line>, FileSourceError> {
        if self.map.is_some() {
            let line = self.next_mapped_line();
            if let Some(l) = &line {
                self.release(l.start);
            }
            return Ok(line);
        }
        let mut dropped = 0;
        // Bytes of the line before this offset from `start` hold no end of line.
        let mut scanned = 0;
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.buf[self.start + scanned..self.end]) {
                let line = Line { start: self.start, end: self.start + scanned + nl, dropped, ascii: false };
                self.start = line.end + 1;
                return Ok(Some(line));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                // The last line has no end of line.
                let line = Line { start: self.start, end: self.end, dropped, ascii: false };
                self.start = self.end;
                return Ok(Some(line));
            }
            // Past the limit, the line's tail is let go as it is read: only its beginning stays.
            if self.end - self.start > self.max_line_bytes {
                dropped += self.end - self.start - self.max_line_bytes;
                self.end = self.start + self.max_line_bytes;
            }
            scanned = self.end - self.start;
            // Keep the partial line, make room (a line longer than the buffer grows it), read on.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.file.read(&mut self.buf[self.end..]).map_err(|source| FileSourceError {
                path: self.path.clone(),
                line: self.line + 1,
                source,
            })?;
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
        }
    }

    /// The next non-blank line at or after `from` (1-based), or `None` at end of file.
    pub fn next_from(&mut self, from: i64) -> Result<Option<Record<'_>>, FileSourceError> {
        loop {
            let Some(Line { start: a, end: mut b, dropped, ascii }) = self.next_line()? else { return Ok(None) };
            self.line += 1;
            if self.line < from {
                continue;
            }
            if dropped > 0 || b - a > self.max_line_bytes {
                let value = &self.bytes()[a..a + self.max_line_bytes];
                let oversized = Some(b - a + dropped);
                let rec = Record { key: None, value: Some(value), text: None, seq: self.line, kafka: None, oversized };
                return Ok(Some(rec));
            }
            while b > a && matches!(self.bytes()[b - 1], b'\r' | b' ' | b'\t') {
                b -= 1;
            }
            if b == a {
                continue;
            }
            let line = &self.bytes()[a..b];
            let value = if line == b"null" { None } else { Some(line) };
            // SAFETY: `ascii`: every byte of the line is below 0x80 (`line_end`), so valid UTF-8.
            let text = value.filter(|_| ascii).map(|v| unsafe { std::str::from_utf8_unchecked(v) });
            return Ok(Some(Record { key: None, value, text, seq: self.line, kafka: None, oversized: None }));
        }
    }
}

/// A line of the file: `[start, end)` without its end of line, the bytes of it dropped past
/// `max_line_bytes`, and whether it is known to be ASCII (mapped files only).
struct Line {
    start: usize,
    end: usize,
    dropped: usize,
    ascii: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Both ways of reading: mapped, and in chunks.
    fn sources(path: &Path) -> [FileSource; 2] {
        [FileSource::open(path).unwrap(), FileSource::open(path).unwrap().unmapped()]
    }

    #[test]
    fn lines_numbers_tombstones_and_resume() {
        for mapped in [true, false] {
            lines_numbers_tombstones_and_resume_when(mapped);
        }
    }

    fn lines_numbers_tombstones_and_resume_when(mapped: bool) {
        let open = |p: &Path| {
            let [m, u] = sources(p);
            if mapped {
                assert!(m.map.is_some());
                m
            } else {
                u
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut f = File::create(&path).unwrap();
        write!(f, "{{\"a\":1}}\r\n\nnull\n{{\"b\":2}}").unwrap();
        let mut src = open(&path);
        assert_eq!(src.stream(), StreamId::File { name: "events.jsonl".into() });
        let r = src.next_from(1).unwrap().unwrap();
        assert_eq!((r.seq, r.value), (1, Some(&b"{\"a\":1}"[..])));
        let r = src.next_from(1).unwrap().unwrap();
        assert_eq!((r.seq, r.value), (3, None));
        let r = src.next_from(1).unwrap().unwrap();
        assert_eq!((r.seq, r.value), (4, Some(&b"{\"b\":2}"[..])));
        assert!(src.next_from(1).unwrap().is_none());

        let mut src = open(&path);
        assert_eq!(src.next_from(4).unwrap().unwrap().seq, 4);

        // Lines longer than the buffer, and lines across reads.
        let long = "x".repeat(CHUNK + 10);
        let big = dir.path().join("big.jsonl");
        std::fs::write(&big, format!("a\n{long}\nb")).unwrap();
        let mut src = open(&big);
        assert_eq!(src.next_from(1).unwrap().unwrap().value, Some(&b"a"[..]));
        assert_eq!(src.next_from(1).unwrap().unwrap().value.map(<[u8]>::len), Some(long.len()));
        assert_eq!(src.next_from(1).unwrap().unwrap().value, Some(&b"b"[..]));
        assert!(src.next_from(1).unwrap().is_none());
        assert!(FileSource::open(&dir.path().join("missing")).unwrap_err().to_string().contains("missing"));
    }

    /// A line past the limit keeps only its beginning and says how long it was, whether it fits
    /// one read or spans many; the lines around it are untouched.
    #[test]
    fn oversized_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.jsonl");
        let huge = "y".repeat(3 * CHUNK + 5);
        std::fs::write(&path, format!("a\n{}\nb\n{huge}\nc\n{huge}", "z".repeat(2000))).unwrap();
        for src in sources(&path) {
            let mut src = src.with_max_line_bytes(1024);
            let mut seen = Vec::new();
            while let Some(r) = src.next_from(1).unwrap() {
                seen.push((r.seq, r.value.map(<[u8]>::len), r.oversized, r.value.and_then(|v| v.first().copied())));
            }
            assert_oversized_cut(&seen, huge.len());
            // Memory stays bounded by the limit and a read, not by the line.
            assert!(src.buf.len() <= 2 * CHUNK, "{}", src.buf.len());
        }
    }

    /// A mapped line longer than the release step: scanned in steps, its middle let go, its
    /// beginning and the lines after it intact.
    #[test]
    fn mapped_line_past_the_release_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endless.jsonl");
        let endless = 2 * RELEASE + 3;
        let mut text = vec![b'z'; endless];
        text[0] = b'a';
        text.extend_from_slice(b"\nnext\n");
        std::fs::write(&path, &text).unwrap();
        let mut src = FileSource::open(&path).unwrap().with_max_line_bytes(5000);
        assert!(src.map.is_some());
        let r = src.next_from(1).unwrap().unwrap();
        assert_eq!(
            (r.seq, r.oversized, r.value.map(|v| (v.len(), v[0], v[4999]))),
            (1, Some(endless), Some((5000, b'a', b'z')))
        );
        assert_eq!(src.next_from(1).unwrap().unwrap().value, Some(&b"next"[..]));
        assert!(src.next_from(1).unwrap().is_none());
    }

    /// The one-pass scan agrees with finding the newline and checking the bytes before it
    /// apart, wherever the newline and a non-ASCII byte fall (inside a 64-byte step, across
    /// steps, in the tail, before or after each other, none at all).
    #[test]
    fn line_end_finds_the_newline_and_non_ascii_bytes() {
        for len in [0, 1, 31, 32, 63, 64, 65, 127, 128, 129, 200] {
            for nl in (0..len).step_by(7).map(Some).chain([None]) {
                for high in (0..len).step_by(5).map(Some).chain([None]) {
                    let mut hay = vec![b'a'; len];
                    if let Some(h) = high {
                        hay[h] = 0xC3;
                    }
                    if let Some(n) = nl {
                        hay[n] = b'\n';
                    }
                    let expected = line_end_portable(&hay);
                    assert_eq!(line_end(&hay), expected, "len {len}, newline {nl:?}, high byte {high:?}");
                }
            }
        }
    }

    /// A mapped file's ASCII lines come with their text (the decoder need not check it again);
    /// a line with other bytes, and any line read in chunks, without.
    #[test]
    fn ascii_lines_come_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let long = "x".repeat(100);
        std::fs::write(&path, format!("{{\"a\":1}}\n{{\"n\":\"Zoë\"}}\n{{\"b\":\"{long}\"}}\n")).unwrap();
        let [mut mapped, mut chunked] = sources(&path);
        let texts = |src: &mut FileSource| {
            let mut out = Vec::new();
            while let Some(r) = src.next_from(1).unwrap() {
                assert!(r.text.is_none_or(|t| Some(t.as_bytes()) == r.value));
                out.push(r.text.is_some());
            }
            out
        };
        assert_eq!(texts(&mut mapped), [true, false, true]);
        assert_eq!(texts(&mut chunked), [false, false, false]);
    }

    /// A record as the test sees it: line, value length, oversized length, first byte.
    type Seen = (i64, Option<usize>, Option<usize>, Option<u8>);

    fn assert_oversized_cut(seen: &[Seen], huge: usize) {
        let line = |seq, len, over, first: u8| (seq, Some(len), over, Some(first));
        assert_eq!(
            seen,
            [
                line(1, 1, None, b'a'),
                line(2, 1024, Some(2000), b'z'),
                line(3, 1, None, b'b'),
                line(4, 1024, Some(huge), b'y'),
                line(5, 1, None, b'c'),
                line(6, 1024, Some(huge), b'y'),
            ]
        );
    }
}
