//! Everything needed to open one connection.

use std::fmt;
use std::time::Duration;

use super::error::ServerAddr;
use super::tls::TlsConnector;

/// libpq's `channel_binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelBinding {
    Disable,
    /// Use SCRAM-SHA-256-PLUS when TLS is up and the server offers it.
    #[default]
    Prefer,
    /// Fail unless authentication used channel binding.
    Require,
}

/// Where to connect, as whom, and how.
#[derive(Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Never printed: `Debug` masks it.
    pub password: Option<String>,
    pub database: String,
    pub application_name: String,
    /// Open a logical replication connection (`replication=database`).
    pub replication: bool,
    pub tls: Option<TlsConnector>,
    pub channel_binding: ChannelBinding,
    pub connect_timeout: Duration,
    /// Extra startup parameters (`options`, GUCs).
    pub params: Vec<(String, String)>,
    /// The largest message accepted from the server: a longer length in a
    /// header is a protocol error, not a reason to buffer it.
    pub max_message_size: usize,
}

impl ConnectOptions {
    pub fn new(host: &str, port: u16, user: &str, database: &str) -> Self {
        Self {
            host: host.to_string(),
            port,
            user: user.to_string(),
            password: None,
            database: database.to_string(),
            application_name: "pgdog".to_string(),
            replication: false,
            tls: None,
            channel_binding: ChannelBinding::Prefer,
            connect_timeout: Duration::from_secs(10),
            params: Vec::new(),
            max_message_size: pgdog_protocol::frame::DEFAULT_MAX_FRAME,
        }
    }

    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    pub fn password(mut self, password: Option<&str>) -> Self {
        self.password = password.map(str::to_string);
        self
    }

    pub fn tls(mut self, tls: Option<TlsConnector>) -> Self {
        self.tls = tls;
        self
    }

    pub fn replication(mut self, on: bool) -> Self {
        self.replication = on;
        self
    }

    pub fn addr(&self) -> ServerAddr {
        ServerAddr {
            host: self.host.clone(),
            port: self.port,
            database: self.database.clone(),
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("database", &self.database)
            .field("replication", &self.replication)
            .field("tls", &self.tls.as_ref().map(|t| t.mode))
            .finish_non_exhaustive()
    }
}
