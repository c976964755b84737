//! `events.jsonl`, written a whole line or nothing: a write that fails part-way (a full disk, a
//! file-size limit) is cut back to where the line began, and a line torn by a crash (`kill -9`
//! inside a write) is cut away when the next run opens the log, so appending never glues a new
//! record to half an old one. Failed writes are counted (`pretune_events_write_errors_total`)
//! and warned about; the run goes on (the checkpoints are what a resume needs).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The append-only event log of a run.
pub struct EventLog {
    file: File,
    /// Lines that could not be written.
    pub failures: u64,
}

impl EventLog {
    /// Opens (or creates) the log at `path` for appending, first cutting a torn last line.
    ///
    /// # Errors
    /// When the file cannot be opened, read or cut.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let whole = whole_lines_len(&mut file)?;
        if whole < file.metadata()?.len() {
            file.set_len(whole)?;
        }
        Ok(EventLog { file, failures: 0 })
    }

    /// Appends `line` and a newline in one write; on failure the file is cut back to its
    /// length before, the failure counted, and the error returned.
    ///
    /// # Errors
    /// The write's error.
    pub fn append(&mut self, line: &str) -> std::io::Result<()> {
        let before = self.file.metadata()?.len();
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        match self.file.write_all(&buf) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.file.set_len(before);
                self.failures += 1;
                metrics::counter!(crate::metrics::names::EVENTS_WRITE_ERRORS).increment(1);
                Err(e)
            }
        }
    }
}

/// The length of the file's whole lines: up to and including its last newline.
fn whole_lines_len(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_and_appends_stay_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("events.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":2}\n{\"torn\":").unwrap();
        let mut log = EventLog::open(&p).unwrap();
        log.append("{\"c\":3}").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
        std::fs::write(&p, "no newline at all").unwrap();
        EventLog::open(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
        let long = "x".repeat(200_000);
        std::fs::write(&p, format!("{long}\n{long}")).unwrap();
        EventLog::open(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 200_001, "found across 64 KiB chunks");
    }
}
