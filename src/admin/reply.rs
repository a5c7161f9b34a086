//! What a command answers: a table of text columns and a command tag.
//! Commands build a [`Reply`] without knowing the wire; [`Reply::into_response`]
//! is the one place that turns it into pgwire messages.

use std::sync::Arc;

use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::api::Type;
use pgwire::error::PgWireResult;

use super::format::Cell;

/// Rows of text cells under named columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    /// The CommandComplete tag (`SHOW`, `DATA_SYNC`, ...).
    pub tag: &'static str,
}

impl Reply {
    /// An empty table with these columns.
    pub fn new(tag: &'static str, columns: &[&'static str]) -> Reply {
        Reply {
            columns: columns.to_vec(),
            rows: Vec::new(),
            tag,
        }
    }

    /// Add a row; it has exactly one cell per column (a bug otherwise,
    /// caught by every command's unit test).
    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len(), "{:?}", self.columns);
        self.rows.push(row);
    }

    /// The cell in `column` of row `row`, for tests.
    #[cfg(test)]
    pub fn get(&self, row: usize, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| *c == column)?;
        self.rows.get(row)?.get(i)?.as_deref()
    }

    /// RowDescription (every column `text`), DataRows, CommandComplete.
    pub fn into_response(self) -> PgWireResult<Response> {
        let fields: Arc<Vec<FieldInfo>> = Arc::new(
            self.columns
                .iter()
                .map(|name| {
                    FieldInfo::new(name.to_string(), None, None, Type::TEXT, FieldFormat::Text)
                })
                .collect(),
        );
        let width = fields.len();
        let mut encoder = DataRowEncoder::new(fields.clone());
        let mut rows = Vec::with_capacity(self.rows.len());
        for row in self.rows {
            for i in 0..width {
                encoder.encode_field(&row.get(i).cloned().flatten())?;
            }
            rows.push(Ok(encoder.take_row()));
        }
        let mut response = QueryResponse::new(fields, futures::stream::iter(rows));
        response.set_command_tag(self.tag);
        Ok(Response::Query(response))
    }
}
