//! Admin console errors: what stops the console from starting
//! ([`AdminError`]), and what one command answers a client with
//! ([`CommandError`], sent as an ErrorResponse with every field kept).

use std::net::SocketAddr;

use pgwire::error::{ErrorInfo, SEVERITY_ERROR, SEVERITY_FATAL};
use thiserror::Error;

/// Why the admin console (or its metrics endpoint) cannot serve.
#[derive(Debug, Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} for the {what}: {source}; stop whatever holds the port or pick another one ({setting})")]
    Bind {
        what: &'static str,
        addr: String,
        /// The setting that chooses the port, for the next step.
        setting: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("admin console TLS: {0}; check [general] tls_certificate and tls_private_key")]
    Tls(String),
    #[error("admin console authentication: {0}")]
    Auth(String),
    #[error("admin console address: {0}")]
    Address(std::io::Error),
}

/// SQLSTATEs the console answers with (PostgreSQL Appendix A,
/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>).
pub mod sqlstate {
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const OBJECT_IN_USE: &str = "55006";
    pub const NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CONFIG_FILE_ERROR: &str = "F0000";
}

/// An error for the client: PostgreSQL's ErrorResponse fields, not a
/// flattened string, so psql prints the hint on its own line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct CommandError {
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl CommandError {
    pub fn new(code: &'static str, message: impl Into<String>) -> CommandError {
        CommandError {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A command that does not parse: wrong arguments, stray words.
    pub fn syntax(message: impl Into<String>) -> CommandError {
        CommandError::new(sqlstate::SYNTAX_ERROR, message)
    }

    /// A command, SHOW target or task that does not exist.
    pub fn unknown(message: impl Into<String>) -> CommandError {
        CommandError::new(sqlstate::UNDEFINED_OBJECT, message)
    }

    pub fn detail(mut self, detail: impl Into<String>) -> CommandError {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> CommandError {
        self.hint = Some(hint.into());
        self
    }

    /// As an ERROR: the session goes on.
    pub fn into_error_info(self) -> ErrorInfo {
        self.into_info(SEVERITY_ERROR)
    }

    /// As a FATAL error: the session ends (refused logins).
    pub fn into_fatal_info(self) -> ErrorInfo {
        self.into_info(SEVERITY_FATAL)
    }

    fn into_info(self, severity: &str) -> ErrorInfo {
        let mut info = ErrorInfo::new(severity.to_string(), self.code.to_string(), self.message);
        info.severity_nonlocalized = Some(severity.to_string());
        info.detail = self.detail;
        info.hint = self.hint;
        info
    }
}

/// The address a listener binds, from `[general] host` and a port.
pub(super) fn listen_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        // A bare IPv6 address.
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Bind a listener, naming what it is for in the error.
pub(super) async fn bind(
    what: &'static str,
    setting: &'static str,
    host: &str,
    port: u16,
) -> Result<(tokio::net::TcpListener, SocketAddr), AdminError> {
    let addr = listen_addr(host, port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| AdminError::Bind {
            what,
            addr: addr.clone(),
            setting,
            source,
        })?;
    let local = listener.local_addr().map_err(AdminError::Address)?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_survive() {
        let info = CommandError::syntax("bad")
            .detail("d")
            .hint("try HELP")
            .into_error_info();
        assert_eq!(info.code, "42601");
        assert_eq!(info.severity, "ERROR");
        assert_eq!(info.hint.as_deref(), Some("try HELP"));
        assert_eq!(info.detail.as_deref(), Some("d"));
        assert!(CommandError::unknown("x").into_fatal_info().is_fatal());
    }

    #[test]
    fn addresses() {
        assert_eq!(listen_addr("0.0.0.0", 6432), "0.0.0.0:6432");
        assert_eq!(listen_addr("::1", 6432), "[::1]:6432");
        assert_eq!(listen_addr("localhost", 1), "localhost:1");
    }
}
