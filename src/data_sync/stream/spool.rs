//! Spill files for streamed transactions: pgoutput sends a large
//! transaction in pieces before it commits; the pieces wait on disk (not in
//! memory) until Stream Commit, then are applied as one transaction, or are
//! thrown away at Stream Abort.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::super::error::{DataSyncError, Result};

static SPOOLS: AtomicU64 = AtomicU64::new(0);

/// The messages of one streamed top-level transaction.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    /// Subtransactions aborted so far: their changes are skipped at replay.
    pub aborted: HashSet<u32>,
    pub messages: u64,
}

fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DataSyncError + '_ {
    move |source| DataSyncError::Spool {
        path: path.display().to_string(),
        source,
    }
}

impl Spool {
    pub fn new(xid: u32) -> Result<Spool> {
        let path = std::env::temp_dir().join(format!(
            "pgdog-spool-{}-{xid}-{}",
            std::process::id(),
            SPOOLS.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&path).map_err(io_error(&path))?;
        Ok(Spool {
            writer: Some(BufWriter::with_capacity(64 * 1024, file)),
            path,
            aborted: HashSet::new(),
            messages: 0,
        })
    }

    /// Append one pgoutput message (as received, xid prefix included).
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        let path = self.path.clone();
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| DataSyncError::State("append to a finished spool".into()))?;
        w.write_all(&(data.len() as u32).to_be_bytes())
            .map_err(io_error(&path))?;
        w.write_all(data).map_err(io_error(&path))?;
        self.messages += 1;
        Ok(())
    }

    /// Finish writing and read the messages back in order.
    pub fn reader(&mut self) -> Result<SpoolReader> {
        if let Some(mut w) = self.writer.take() {
            w.flush().map_err(io_error(&self.path))?;
        }
        let file = File::open(&self.path).map_err(io_error(&self.path))?;
        Ok(SpoolReader {
            reader: BufReader::with_capacity(64 * 1024, file),
            path: self.path.clone(),
        })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug)]
pub struct SpoolReader {
    reader: BufReader<File>,
    path: PathBuf,
}

impl SpoolReader {
    pub fn next_message(&mut self) -> Result<Option<Bytes>> {
        let mut len = [0u8; 4];
        match self.reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io_error(&self.path)(e)),
        }
        let len = u32::from_be_bytes(len) as usize;
        // The length was written by us a moment ago; still, never trust a
        // length to size a buffer beyond what a message can be.
        if len > pgdog_protocol::frame::DEFAULT_MAX_FRAME {
            return Err(DataSyncError::State(format!(
                "spool {} is corrupt",
                self.path.display()
            )));
        }
        let mut buf = vec![0u8; len];
        self.reader
            .read_exact(&mut buf)
            .map_err(io_error(&self.path))?;
        Ok(Some(Bytes::from(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_cleanup() {
        let mut s = Spool::new(7).unwrap();
        s.append(b"one").unwrap();
        s.append(b"").unwrap();
        s.append(&[9; 100_000]).unwrap();
        let path = s.path.clone();
        let mut r = s.reader().unwrap();
        assert_eq!(r.next_message().unwrap().unwrap(), &b"one"[..]);
        assert_eq!(r.next_message().unwrap().unwrap(), &b""[..]);
        assert_eq!(r.next_message().unwrap().unwrap().len(), 100_000);
        assert!(r.next_message().unwrap().is_none());
        drop(s);
        assert!(!path.exists());
    }
}
