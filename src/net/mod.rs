//! Client connections to PostgreSQL over the sans-IO protocol crate: TLS,
//! authentication, simple and pipelined extended queries, COPY in both
//! directions, and replication mode.

mod auth;
pub mod connection;
pub mod copy;
pub mod error;
pub mod extended;
pub mod options;
pub mod replication;
mod stream;
pub mod tls;

pub use connection::Connection;
pub use error::{ConnectionError, ServerAddr, ServerError};
pub use options::{ChannelBinding, ConnectOptions};
pub use tls::{TlsConnector, TlsMode, TlsOptions};
