//! The extended query protocol with pipelining: many Bind/Execute queued
//! before one Sync, responses matched in order. This is how changes are
//! applied without a round trip per row.

use pgdog_protocol::backend::{DataRow, Message};
use pgdog_protocol::frontend::{self, Format};

use super::connection::Connection;
use super::error::{ConnectionError, Result};

/// Why a pipeline failed: which queued execute (0-based) and the error.
#[derive(Debug)]
pub struct PipelineError {
    pub index: usize,
    pub error: ConnectionError,
}

impl Connection {
    /// Encode messages into the write buffer; if one cannot be encoded
    /// (a count or length past what the protocol holds), none of them
    /// stays there.
    fn encode(
        &mut self,
        f: impl FnOnce(&mut bytes::BytesMut) -> Result<(), pgdog_protocol::ProtocolError>,
    ) -> Result<()> {
        let buf = self.buffer();
        let start = buf.len();
        match f(buf) {
            Ok(()) => Ok(()),
            Err(source) => {
                buf.truncate(start);
                Err(ConnectionError::Protocol {
                    server: self.addr().clone(),
                    source,
                })
            }
        }
    }

    /// Prepare `sql` as the named statement `name` and wait until it is ready.
    pub async fn prepare(&mut self, name: &str, sql: &str, param_types: &[u32]) -> Result<()> {
        self.encode(|buf| frontend::parse(name, sql, param_types, buf))?;
        frontend::sync(self.buffer());
        self.flush().await?;
        let mut error = None;
        loop {
            match self.recv().await? {
                Message::ParseComplete => {}
                Message::ErrorResponse(fields) => error = Some(self.server_error(fields)),
                Message::ReadyForQuery { .. } => break,
                other => {
                    self.mark_broken();
                    return Err(self.unexpected(&other, "preparing a statement"));
                }
            }
        }
        error.map_or(Ok(()), Err)
    }

    /// One statement with parameters, through the unnamed statement; rows
    /// come back in `results` format.
    pub async fn query_params<'a>(
        &mut self,
        sql: &str,
        param_formats: &[Format],
        params: impl IntoIterator<Item = Option<&'a [u8]>>,
        results: Format,
    ) -> Result<Vec<DataRow>> {
        self.encode(|buf| {
            frontend::parse("", sql, &[], buf)?;
            frontend::bind("", "", param_formats, params, &[results], buf)?;
            frontend::execute("", 0, buf);
            frontend::sync(buf);
            Ok(())
        })?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.recv().await? {
                Message::ParseComplete
                | Message::BindComplete
                | Message::CommandComplete { .. }
                | Message::EmptyQueryResponse => {}
                Message::DataRow(row) => rows.push(row),
                Message::ErrorResponse(fields) => error = Some(self.server_error(fields)),
                Message::ReadyForQuery { .. } => break,
                other => {
                    self.mark_broken();
                    return Err(self.unexpected(&other, "running a parameterized query"));
                }
            }
        }
        error.map_or(Ok(rows), Err)
    }

    /// One statement with text parameters and text results: catalog and
    /// state lookups, whose values never go into the SQL text (so quoting
    /// does not depend on `standard_conforming_strings`).
    pub async fn query_text(&mut self, sql: &str, params: &[&str]) -> Result<Vec<DataRow>> {
        self.query_params(
            sql,
            &[Format::Text],
            params.iter().map(|p| Some(p.as_bytes())),
            Format::Text,
        )
        .await
    }

    /// Queue Bind + Execute of a prepared statement (nothing is sent yet).
    pub fn queue_execute<'a>(
        &mut self,
        statement: &str,
        param_formats: &[Format],
        params: impl IntoIterator<Item = Option<&'a [u8]>>,
    ) -> Result<()> {
        self.encode(|buf| {
            frontend::bind("", statement, param_formats, params, &[], buf)?;
            frontend::execute("", 0, buf);
            Ok(())
        })
    }

    /// Queue Parse of a named statement (nothing is sent yet): it runs in
    /// order with the rest of the pipeline.
    pub fn queue_parse(&mut self, name: &str, sql: &str) -> Result<()> {
        self.encode(|buf| frontend::parse(name, sql, &[], buf))
    }

    /// Queue a statement without parameters through the extended protocol
    /// (unnamed statement), so it can sit inside a pipeline.
    pub fn queue_statement(&mut self, sql: &str) -> Result<()> {
        self.encode(|buf| {
            frontend::parse("", sql, &[], buf)?;
            frontend::bind("", "", &[], std::iter::empty(), &[], buf)?;
            frontend::execute("", 0, buf);
            Ok(())
        })
    }

    /// Send Sync and read the responses of `executes` queued executes.
    /// `affected` receives each command's row count, in order. On an error
    /// the server skips the rest of the pipeline; the error says which
    /// execute failed, and the connection is ready for more.
    pub async fn sync_pipeline(
        &mut self,
        executes: usize,
        affected: &mut Vec<u64>,
    ) -> Result<(), PipelineError> {
        frontend::sync(self.buffer());
        let start = affected.len();
        let fail = |index, error| PipelineError { index, error };
        self.flush().await.map_err(|e| fail(0, e))?;
        let mut error = None;
        loop {
            let msg = self
                .recv()
                .await
                .map_err(|e| fail(affected.len() - start, e))?;
            match msg {
                Message::ParseComplete
                | Message::BindComplete
                | Message::NoData
                | Message::CloseComplete => {}
                Message::RowDescription(_) | Message::DataRow(_) => {}
                Message::CommandComplete { tag } => {
                    affected.push(
                        tag.rsplit(' ')
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0),
                    );
                }
                Message::EmptyQueryResponse => affected.push(0),
                Message::ErrorResponse(fields) => {
                    error = Some(fail(affected.len() - start, self.server_error(fields)));
                }
                Message::ReadyForQuery { .. } => break,
                other => {
                    self.mark_broken();
                    return Err(fail(
                        affected.len() - start,
                        self.unexpected(&other, "reading pipelined results"),
                    ));
                }
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        if affected.len() - start != executes {
            self.mark_broken();
            return Err(fail(
                affected.len() - start,
                ConnectionError::Usage {
                    server: self.addr().clone(),
                    reason: format!(
                        "pipeline expected {executes} results, got {}",
                        affected.len() - start
                    ),
                },
            ));
        }
        Ok(())
    }
}
