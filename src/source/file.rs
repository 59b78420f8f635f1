//! The file source: Debezium record values, one per line, all tables in one file (told apart by
//! `source.table`), read in order. A line `null` is a tombstone; blank lines are skipped.
//!
//! The file is one stream named after the file; its positions are line numbers, so a run that
//! resumes after a recorded position skips the lines already durable in the lake.

use super::Record;
use crate::position::StreamId;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("reading `{path}` at line {line}: {source}")]
pub struct FileSourceError {
    pub path: PathBuf,
    pub line: i64,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    line: i64,
    buf: Vec<u8>,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<FileSource, FileSourceError> {
        let file = File::open(path).map_err(|source| FileSourceError { path: path.to_path_buf(), line: 0, source })?;
        Ok(FileSource {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            buf: Vec::with_capacity(4096),
        })
    }

    /// The stream this file is: named by the file name, so two files are two streams.
    pub fn stream(&self) -> StreamId {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        StreamId::File { name }
    }

    /// The next non-blank line at or after `from` (1-based), or `None` at end of file.
    pub fn next_from(&mut self, from: i64) -> Result<Option<Record<'_>>, FileSourceError> {
        loop {
            self.buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.buf).map_err(|source| FileSourceError {
                path: self.path.clone(),
                line: self.line + 1,
                source,
            })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if self.line < from {
                continue;
            }
            let mut end = self.buf.len();
            while end > 0 && matches!(self.buf[end - 1], b'\n' | b'\r' | b' ' | b'\t') {
                end -= 1;
            }
            if end == 0 {
                continue;
            }
            let line = &self.buf[..end];
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
        assert!(FileSource::open(&dir.path().join("missing")).unwrap_err().to_string().contains("missing"));
    }
}
