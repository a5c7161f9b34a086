//! Where log lines go: standard error, coloured only when it is a terminal,
//! as text or one JSON object a line (`--log-format json`, for log
//! shippers). While progress bars are drawn, lines are printed above them
//! (the bars are hidden for the write and drawn again), so neither breaks
//! the other.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::MultiProgress;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The progress display lines must be printed around, while there is one.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Print log lines above `bars` until [`detach`].
pub fn attach(bars: &MultiProgress) {
    *BARS.lock().unwrap_or_else(|e| e.into_inner()) = Some(bars.clone());
}

pub fn detach() {
    *BARS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Install the subscriber: `PGDOG_LOG` (or `RUST_LOG`) filters, `info`
/// by default.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGDOG_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().with_ansi(false).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Makes a [`Line`] per event.
#[derive(Debug, Clone, Copy)]
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

/// One event's text, written out whole when dropped.
#[derive(Debug)]
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let write = |bytes: &[u8]| {
            let _ = std::io::stderr().lock().write_all(bytes);
        };
        let bars = BARS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bars {
            Some(bars) => bars.suspend(|| write(&self.0)),
            None => write(&self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_kept_whole_until_dropped() {
        let mut l = Stderr.make_writer();
        l.write_all(b"half ").unwrap();
        l.write_all(b"and the rest\n").unwrap();
        assert_eq!(l.0, b"half and the rest\n");
    }
}
