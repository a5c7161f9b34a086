//! Connection errors: what went wrong, on which server, and whether a retry
//! can help.

use std::fmt;

use pgdog_protocol::backend::ErrorFields;
use pgdog_protocol::ProtocolError;
use thiserror::Error;

/// Where a connection goes: printed in every error so an operator with ten
/// shards knows which one failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.port, self.database)
    }
}

/// A Postgres ErrorResponse with every field kept, and the server it came
/// from.
#[derive(Debug, Clone, Error)]
#[error("{server}: {fields}")]
pub struct ServerError {
    pub server: ServerAddr,
    pub fields: ErrorFields,
}

impl ServerError {
    pub fn code(&self) -> &str {
        self.fields.code()
    }
    pub fn message(&self) -> &str {
        self.fields.message()
    }
}

#[derive(Debug, Error)]
pub enum ConnectionError {
    #[error("{server}: {action}: {source}")]
    Io {
        server: ServerAddr,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{server}: TLS: {reason}")]
    Tls { server: ServerAddr, reason: String },
    #[error("{server}: authentication failed: {reason}")]
    Auth { server: ServerAddr, reason: String },
    #[error(transparent)]
    Server(#[from] Box<ServerError>),
    #[error("{server}: malformed message from server ({source}); the connection was closed")]
    Protocol {
        server: ServerAddr,
        #[source]
        source: ProtocolError,
    },
    #[error("{server}: unexpected {got} while {during}")]
    Unexpected {
        server: ServerAddr,
        got: &'static str,
        during: &'static str,
    },
    #[error("{server}: server closed the connection{}", during.map(|d| format!(" while {d}")).unwrap_or_default())]
    Closed {
        server: ServerAddr,
        during: Option<&'static str>,
    },
    #[error("{server}: timed out after {seconds:.1}s while {during}")]
    Timeout {
        server: ServerAddr,
        seconds: f64,
        during: &'static str,
    },
    #[error("{server}: {reason}")]
    Usage { server: ServerAddr, reason: String },
}

impl ConnectionError {
    /// The server's ErrorResponse, when that is what this is.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            ConnectionError::Server(e) => Some(e),
            _ => None,
        }
    }

    /// SQLSTATE, for server errors.
    pub fn code(&self) -> Option<&str> {
        self.server_error().map(|e| e.code())
    }

    /// Whether retrying the same operation on a new connection can succeed.
    /// The single place that decides; the engine asks, it does not guess.
    pub fn server(&self) -> &ServerAddr {
        match self {
            ConnectionError::Io { server, .. }
            | ConnectionError::Tls { server, .. }
            | ConnectionError::Auth { server, .. }
            | ConnectionError::Protocol { server, .. }
            | ConnectionError::Unexpected { server, .. }
            | ConnectionError::Closed { server, .. }
            | ConnectionError::Timeout { server, .. }
            | ConnectionError::Usage { server, .. } => server,
            ConnectionError::Server(e) => &e.server,
        }
    }
}

pub type Result<T, E = ConnectionError> = std::result::Result<T, E>;

/// A server error with this SQLSTATE, for tests.
#[cfg(test)]
pub(crate) fn server_error_for_tests(code: &str) -> ConnectionError {
    use pgdog_protocol::Str;
    ConnectionError::Server(Box::new(ServerError {
        server: ServerAddr {
            host: "127.0.0.1".into(),
            port: 5432,
            database: "db".into(),
        },
        fields: ErrorFields {
            fields: vec![
                (b'S', Str::from("FATAL")),
                (b'C', Str::from(code)),
                (b'M', Str::from("boom")),
            ],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str) -> ConnectionError {
        server_error_for_tests(code)
    }

    #[test]
    fn errors_name_the_server() {
        let e = server_error("42P01");
        assert_eq!(
            e.to_string(),
            "127.0.0.1:5432/db: FATAL: boom (SQLSTATE 42P01)"
        );
        assert_eq!(e.code(), Some("42P01"));
    }
}
