//! COPY on a connection: `COPY ... TO STDOUT` as a pull stream and
//! `COPY ... FROM STDIN` as a sink, both with bounded memory: the stream
//! reads from the socket only when asked, the sink writes out once its
//! buffer passes a threshold.

use bytes::{BufMut, Bytes};
use pgdog_protocol::backend::{CopyResponse, Message};
use pgdog_protocol::frontend;

use super::connection::Connection;
use super::error::{ConnectionError, Result};

/// Write the sink's buffer out once it holds this much.
pub const COPY_IN_FLUSH: usize = 256 * 1024;

/// The rows of a running `COPY ... TO STDOUT`.
#[derive(Debug)]
pub struct CopyOut<'a> {
    conn: &'a mut Connection,
    pub response: CopyResponse,
    /// Rows reported by CommandComplete once the stream ended.
    rows: Option<u64>,
    finished: bool,
}

impl Connection {
    /// Send `sql`, a statement that turns the connection into a COPY
    /// stream, and wait for its response, which `pick` takes (handing back
    /// any other message). An error from the server leaves the connection
    /// ready for the next statement; anything else breaks it.
    pub(crate) async fn start_copy<T>(
        &mut self,
        sql: &str,
        what: &'static str,
        pick: impl FnOnce(Message) -> std::result::Result<T, Message>,
    ) -> Result<T> {
        frontend::query(sql, self.buffer());
        self.flush().await?;
        match pick(self.recv().await?) {
            Ok(response) => Ok(response),
            Err(Message::ErrorResponse(fields)) => {
                let err = self.server_error(fields);
                self.wait_ready().await?;
                Err(err)
            }
            Err(other) => {
                self.mark_broken();
                Err(self.unexpected(&other, what))
            }
        }
    }

    /// Start `sql` (a `COPY ... TO STDOUT`) and wait for CopyOutResponse.
    pub async fn copy_out(&mut self, sql: &str) -> Result<CopyOut<'_>> {
        let response = self
            .start_copy(sql, "starting COPY TO STDOUT", |m| match m {
                Message::CopyOutResponse(response) => Ok(response),
                other => Err(other),
            })
            .await?;
        Ok(CopyOut {
            conn: self,
            response,
            rows: None,
            finished: false,
        })
    }

    /// Start `sql` (a `COPY ... FROM STDIN`) and wait for CopyInResponse.
    pub async fn copy_in(&mut self, sql: &str) -> Result<CopyIn<'_>> {
        let response = self
            .start_copy(sql, "starting COPY FROM STDIN", |m| match m {
                Message::CopyInResponse(response) => Ok(response),
                other => Err(other),
            })
            .await?;
        Ok(CopyIn {
            conn: self,
            response,
            open_at: None,
        })
    }

    /// Read up to ReadyForQuery, dropping what comes before it.
    pub(super) async fn wait_ready(&mut self) -> Result<()> {
        loop {
            if let Message::ReadyForQuery { .. } = self.recv().await? {
                return Ok(());
            }
        }
    }
}

impl CopyOut<'_> {
    /// The next CopyData body, `None` once the COPY completed. A server
    /// error ends the stream with that error.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        if self.finished {
            return Ok(None);
        }
        let mut error = None;
        loop {
            match self.conn.recv().await? {
                Message::CopyData(data) => {
                    if error.is_none() {
                        return Ok(Some(data));
                    }
                }
                Message::CopyDone => {}
                Message::CommandComplete { tag } => {
                    self.rows = tag.rsplit(' ').next().and_then(|n| n.parse().ok());
                }
                Message::ErrorResponse(fields) => error = Some(self.conn.server_error(fields)),
                Message::ReadyForQuery { .. } => {
                    self.finished = true;
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(None),
                    };
                }
                other => {
                    self.conn.mark_broken();
                    return Err(self.conn.unexpected(&other, "reading COPY TO STDOUT"));
                }
            }
        }
    }

    /// Hand every CopyData body already read to `f` by reference, reading
    /// more first if none is complete: the allocation-free form of
    /// [`CopyOut::next`]. Returns the body bytes handed over, or `None`
    /// once the COPY completed.
    pub async fn next_batch<E: From<ConnectionError>>(
        &mut self,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<Option<usize>, E> {
        if self.finished {
            return Ok(None);
        }
        loop {
            let (frames, bytes) = self.conn.drain_copy_data(&mut f)?;
            if frames > 0 {
                return Ok(Some(bytes));
            }
            if self.conn.front_needs_more() {
                self.conn.fill().await?;
                continue;
            }
            // Something else is next: the end of the COPY, or an error.
            return match self.next().await? {
                Some(data) => {
                    f(&data)?;
                    Ok(Some(data.len()))
                }
                None => Ok(None),
            };
        }
    }

    /// Rows the server says it sent, after the end of the stream.
    pub fn rows(&self) -> Option<u64> {
        self.rows
    }
}

/// A running `COPY ... FROM STDIN`. Data is appended to one open CopyData
/// message, closed and written out when the buffer passes
/// [`COPY_IN_FLUSH`]; message boundaries need not match rows.
#[derive(Debug)]
pub struct CopyIn<'a> {
    conn: &'a mut Connection,
    pub response: CopyResponse,
    /// Offset in the write buffer of the open CopyData message's length.
    open_at: Option<usize>,
}

impl CopyIn<'_> {
    /// Append bytes to the stream (buffered).
    #[inline]
    pub fn write(&mut self, data: &[u8]) {
        let buf = &mut self.conn.write_buf;
        if self.open_at.is_none() {
            buf.put_u8(b'd');
            self.open_at = Some(buf.len());
            buf.put_i32(0);
        }
        buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet written.
    pub fn buffered(&self) -> usize {
        self.conn.pending_write()
    }

    /// Write out when the buffer is over the threshold. Awaiting here is
    /// the backpressure: a slow destination slows the producer.
    #[inline]
    pub async fn maybe_flush(&mut self) -> Result<()> {
        if self.conn.pending_write() >= COPY_IN_FLUSH {
            self.flush().await?;
        }
        Ok(())
    }

    fn close_message(&mut self) {
        if let Some(at) = self.open_at.take() {
            let buf = &mut self.conn.write_buf;
            let len = (buf.len() - at) as i32;
            buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.close_message();
        self.conn.flush().await
    }

    /// End the COPY; returns the row count the server reports.
    pub async fn finish(mut self) -> Result<u64> {
        self.close_message();
        frontend::copy_done(self.conn.buffer());
        self.conn.flush().await?;
        let mut error = None;
        let mut rows = 0;
        loop {
            match self.conn.recv().await? {
                Message::CommandComplete { tag } => {
                    rows = tag
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                }
                Message::ErrorResponse(fields) => error = Some(self.conn.server_error(fields)),
                Message::ReadyForQuery { .. } => break,
                other => {
                    self.conn.mark_broken();
                    return Err(self.conn.unexpected(&other, "finishing COPY FROM STDIN"));
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Abort the COPY (nothing it sent is kept) and leave the connection
    /// ready for the next query.
    pub async fn fail(mut self, reason: &str) -> Result<()> {
        self.close_message();
        frontend::copy_fail(reason, self.conn.buffer());
        self.conn.flush().await?;
        self.conn.wait_ready().await
    }
}
