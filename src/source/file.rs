//! The file source: Debezium record values, one per line, all tables in one file (told apart by
//! `source.table`), read in order. A line `null` is a tombstone; blank lines are skipped.
//!
//! The file is one stream named after the file; its positions are line numbers, so a run that
//! resumes after a recorded position skips the lines already durable in the lake.

use super::Record;
use crate::position::StreamId;
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

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    line: i64,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<FileSource, FileSourceError> {
        let file = File::open(path).map_err(|source| FileSourceError { path: path.to_path_buf(), line: 0, source })?;
        Ok(FileSource { path: path.to_path_buf(), file, buf: vec![0; CHUNK], start: 0, end: 0, eof: false, line: 0 })
    }

    /// The stream this file is: named by the file name, so two files are two streams.
    pub fn stream(&self) -> StreamId {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        StreamId::File { name }
    }

    /// The next line, without its end of line, or `None` at the end of the file.
    fn next_line(&mut self) -> Result<Option<(usize, usize)>, FileSourceError> {
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let line = (self.start, self.start + nl);
                self.start += nl + 1;
                return Ok(Some(line));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                // The last line has no end of line.
                let line = (self.start, self.end);
                self.start = self.end;
                return Ok(Some(line));
            }
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
            let Some((a, mut b)) = self.next_line()? else { return Ok(None) };
            self.line += 1;
            if self.line < from {
                continue;
            }
            while b > a && matches!(self.buf[b - 1], b'\r' | b' ' | b'\t') {
                b -= 1;
            }
            if b == a {
                continue;
            }
            let line = &self.buf[a..b];
            let value = if line == b"null" { None } else { Some(line) };
            return Ok(Some(Record { key: None, value, seq: self.line, kafka: None }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_numbers_tombstones_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut f = File::create(&path).unwrap();
        write!(f, "{{\"a\":1}}\r\n\nnull\n{{\"b\":2}}").unwrap();
        let mut src = FileSource::open(&path).unwrap();
        assert_eq!(src.stream(), StreamId::File { name: "events.jsonl".into() });
        let r = src.next_from(1).unwrap().unwrap();
        assert_eq!((r.seq, r.value), (1, Some(&b"{\"a\":1}"[..])));
        let r = src.next_from(1).unwrap().unwrap();
        assert_eq!((r.seq, r.value), (3, None));
        let r = src.next_from(1).unwrap().unwrap();
        assert_eq!((r.seq, r.value), (4, Some(&b"{\"b\":2}"[..])));
        assert!(src.next_from(1).unwrap().is_none());

        let mut src = FileSource::open(&path).unwrap();
        assert_eq!(src.next_from(4).unwrap().unwrap().seq, 4);

        // Lines longer than the buffer, and lines across reads.
        let long = "x".repeat(CHUNK + 10);
        let big = dir.path().join("big.jsonl");
        std::fs::write(&big, format!("a\n{long}\nb")).unwrap();
        let mut src = FileSource::open(&big).unwrap();
        assert_eq!(src.next_from(1).unwrap().unwrap().value, Some(&b"a"[..]));
        assert_eq!(src.next_from(1).unwrap().unwrap().value.map(<[u8]>::len), Some(long.len()));
        assert_eq!(src.next_from(1).unwrap().unwrap().value, Some(&b"b"[..]));
        assert!(src.next_from(1).unwrap().is_none());
        assert!(FileSource::open(&dir.path().join("missing")).unwrap_err().to_string().contains("missing"));
    }
}
