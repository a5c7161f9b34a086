//! The rows of one `COPY ... TO STDOUT`, binary or text, each handed on
//! with the shard its routing picks, straight from the read buffer (no
//! copy and no reference count per row). The copy writes them to their
//! shard; verify hashes them.

use pgdog_protocol::copy_binary::Decoder;
use pgdog_protocol::copy_text::Splitter;

use crate::net::copy::CopyOut;

use super::super::error::{DataSyncError, Result};
use super::super::plan::Routing;

#[derive(Debug)]
pub struct RowReader {
    binary: bool,
    decoder: Decoder,
    lines: Splitter,
}

impl RowReader {
    pub fn new(binary: bool) -> RowReader {
        RowReader {
            binary,
            decoder: Decoder::new(),
            lines: Splitter::new(),
        }
    }

    /// Hand every row of the next read to `f`: its shard (`None` without
    /// `routing`), its bytes, and what ends it on the wire (a text row's
    /// newline). The bytes read; `None` at the end of the COPY.
    #[inline]
    pub async fn next_batch(
        &mut self,
        out: &mut CopyOut<'_>,
        routing: Option<&Routing>,
        mut f: impl FnMut(Option<usize>, &[u8], &'static [u8]),
    ) -> Result<Option<usize>> {
        if self.binary {
            let decoder = &mut self.decoder;
            return out
                .next_batch(|body| {
                    decoder.push_slice(body, |row| {
                        let shard = routing.map(|r| r.binary_row(&row)).transpose()?;
                        f(shard, row.as_bytes(), b"");
                        Ok::<(), DataSyncError>(())
                    })
                })
                .await;
        }
        let Some(chunk) = out.next().await? else {
            return Ok(None);
        };
        let n = chunk.len();
        self.lines.push(chunk);
        while let Some(row) = self.lines.next_row()? {
            let shard = routing.map(|r| r.text_row(&row)).transpose()?;
            f(shard, &row, b"\n");
        }
        Ok(Some(n))
    }

    /// At the end of the COPY: an error if a row was cut short.
    pub fn finish(&mut self) -> Result<()> {
        if self.binary {
            self.decoder.finish()?;
        } else {
            self.lines.finish()?;
        }
        Ok(())
    }
}
