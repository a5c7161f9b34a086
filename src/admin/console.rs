//! The query side of a session: each simple query is split into
//! statements, each parsed into a [`Command`] and run; the first error
//! ends the query (as in PostgreSQL) and the session stays usable.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::Response;
use pgwire::api::ClientInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use tracing::debug;

use super::commands::{statements, Command, Context};
use super::error::CommandError;
use super::reply::Reply;

/// Runs commands for every session of one console.
#[derive(Debug)]
pub struct Console {
    pub ctx: Arc<Context>,
}

impl Console {
    /// Run every statement of a query string, stopping at the first error.
    pub async fn run(&self, query: &str) -> Vec<Result<Reply, CommandError>> {
        let mut out = Vec::new();
        for statement in statements(query) {
            let result = match Command::parse(statement) {
                Ok(command) => command.execute(&self.ctx).await,
                Err(e) => Err(e),
            };
            let failed = result.is_err();
            out.push(result);
            if failed {
                break;
            }
        }
        out
    }
}

#[async_trait]
impl SimpleQueryHandler for Console {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let peer = client.socket_addr();
        let mut responses = Vec::new();
        for result in self.run(query).await {
            match result {
                Ok(reply) => responses.push(reply.into_response()?),
                Err(e) => {
                    debug!(%peer, query, code = e.code, "admin command failed: {}", e.message);
                    responses.push(Response::Error(Box::new(e.into_error_info())));
                }
            }
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}
