//! The listener. One task per admin session: TLS negotiation, the startup
//! packet checked against the connection limit and the admin database,
//! SCRAM, then simple queries, all through pgwire's message handling. A
//! session that does not finish logging in within the startup timeout is
//! dropped; shutdown tells every session and waits for them (and for the
//! moves started here) to end.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::{ClientInfo, NoopHandler, PgWireConnectionState};
use pgwire::error::PgWireError;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use pgwire::tokio::TlsAcceptor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::auth::{self, Admission, Authenticators};
use super::commands::Context;
use super::console::Console;
use super::error::{bind, sqlstate, AdminError, CommandError};
use super::metrics::{self, Gauges};
use crate::config::Config;
use crate::data_sync::Registry;

/// How long a client has from connecting to being logged in.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for sessions to say goodbye.
const SESSION_GRACE: Duration = Duration::from_secs(5);

/// How long shutdown waits for moves started by DATA_SYNC to stop cleanly.
const MOVE_GRACE: Duration = Duration::from_secs(60);

/// Over the connection limit, this many more clients at once are told so
/// (53300) before being closed; beyond that they are closed at once, so a
/// flood costs nothing.
const REFUSALS: usize = 16;

/// The admin console, bound and ready to run.
pub struct AdminServer {
    config: Arc<Config>,
    registry: Arc<Registry>,
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Option<(TcpListener, SocketAddr)>,
    tls: Option<TlsAcceptor>,
    authenticators: Authenticators,
    startup_timeout: Duration,
}

impl Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .field("metrics", &self.metrics_addr())
            .field("tls", &self.tls.is_some())
            .field("startup_timeout", &self.startup_timeout)
            .finish_non_exhaustive()
    }
}

/// What every session task shares.
struct Shared {
    config: Arc<Config>,
    authenticators: Authenticators,
    console: Arc<Console>,
    /// Answers what this console does not do: extended queries, COPY,
    /// cancel requests (commands are short).
    noop: Arc<NoopHandler>,
    tls: Option<TlsAcceptor>,
    startup_timeout: Duration,
    shutdown: CancellationToken,
}

impl AdminServer {
    /// Check TLS and auth settings and bind the listeners: on `port`
    /// (`[general] port` when `None`; 0 picks a free one) and, when set,
    /// `[general] openmetrics_port`, both on `[general] host`.
    pub async fn bind(
        config: Arc<Config>,
        registry: Arc<Registry>,
        port: Option<u16>,
    ) -> Result<AdminServer, AdminError> {
        let general = &config.general;
        let tls = match (&general.tls_certificate, &general.tls_private_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(
                crate::net::tls::server_config(cert, key).map_err(AdminError::Tls)?,
            )),
            _ => None,
        };
        let authenticators = Authenticators::new(&config)?;
        let port = port.unwrap_or(general.port);
        let (listener, addr) = bind("admin console", "[general] port", &general.host, port).await?;
        let metrics = match general.openmetrics_port {
            Some(p) => Some(
                bind(
                    "metrics endpoint",
                    "[general] openmetrics_port",
                    &general.host,
                    p,
                )
                .await?,
            ),
            None => None,
        };
        if config.admin.password.is_empty() {
            warn!(
                "[admin] password is not set in {}: the admin console refuses every login until it is",
                config.path.display()
            );
        }
        Ok(AdminServer {
            config,
            registry,
            listener,
            addr,
            metrics,
            tls,
            authenticators,
            startup_timeout: STARTUP_TIMEOUT,
        })
    }

    /// Where the console listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the metrics endpoint listens, when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, a)| *a)
    }

    /// Change how long a client may take to log in.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> AdminServer {
        self.startup_timeout = timeout;
        self
    }

    /// Serve until `shutdown`, then end every session, wait for the moves
    /// started here to stop, and return.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AdminError> {
        let ctx = Arc::new(Context::new(
            self.config.clone(),
            self.registry.clone(),
            shutdown.clone(),
        ));
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            authenticators: self.authenticators,
            console: Arc::new(Console { ctx: ctx.clone() }),
            noop: Arc::new(NoopHandler),
            tls: self.tls,
            startup_timeout: self.startup_timeout,
            shutdown: shutdown.clone(),
        });
        let limit = self.config.general.max_admin_connections;
        let slots = Arc::new(Semaphore::new(limit));
        let refusals = Arc::new(Semaphore::new(REFUSALS));
        let metrics = self.metrics.map(|(listener, addr)| {
            info!(%addr, "metrics endpoint listening (OpenMetrics text at /metrics)");
            let gauges = Gauges {
                registry: self.registry.clone(),
                sessions: slots.clone(),
                max_sessions: limit,
            };
            tokio::spawn(metrics::serve(listener, gauges, shutdown.clone()))
        });
        info!(
            addr = %self.addr,
            database = %self.config.admin.name,
            tls = shared.tls.is_some(),
            "admin console listening"
        );

        let mut sessions = JoinSet::new();
        loop {
            // Reap ended sessions so the set stays as small as what runs.
            while sessions.try_join_next().is_some() {}
            let (socket, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, go on.
                        warn!("admin console: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (admitted, permit) = match slots.clone().try_acquire_owned() {
                Ok(p) => (true, p),
                Err(_) => match refusals.clone().try_acquire_owned() {
                    Ok(p) => (false, p),
                    Err(_) => {
                        debug!(%peer, "admin connection closed: over the limit and the refusal queue is full");
                        continue;
                    }
                },
            };
            sessions.spawn(session(socket, peer, shared.clone(), admitted, permit));
        }

        drop(self.listener);
        let drain = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(SESSION_GRACE, drain).await.is_err() {
            sessions.abort_all();
        }
        let mut moves = std::mem::take(&mut *ctx.moves.lock().unwrap_or_else(|e| e.into_inner()));
        if !moves.is_empty() {
            info!("waiting for data-sync tasks started from the admin console to stop");
            let drain = async { while moves.join_next().await.is_some() {} };
            if tokio::time::timeout(MOVE_GRACE, drain).await.is_err() {
                warn!(
                    "data-sync tasks did not stop within {}s; cutting them off (their slots are kept)",
                    MOVE_GRACE.as_secs()
                );
                moves.abort_all();
            }
        }
        if let Some(m) = metrics {
            let _ = m.await;
        }
        info!("admin console stopped");
        Ok(())
    }
}

/// The admin console's side of one connection, as pgwire frames it.
type Socket = tokio_util::codec::Framed<
    pgwire::tokio::server::MaybeTls,
    pgwire::tokio::server::PgWireMessageServerCodec<String>,
>;

/// TLS negotiated and the startup packet read, by `deadline`; `None`: the
/// client is gone or was refused.
async fn start(
    socket: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    mut deadline: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Option<(Socket, pgwire::messages::startup::Startup)> {
    let negotiated = tokio::select! {
        _ = &mut deadline => {
            debug!(%peer, "admin client sent no startup packet in time; dropped");
            return None;
        }
        _ = shared.shutdown.cancelled() => return None,
        n = negotiate_tls::<String>(socket, shared.tls.clone()) => n,
    };
    let mut socket = match negotiated {
        Ok(Some(s)) => s,
        Ok(None) => {
            debug!(%peer, "admin client started TLS directly but no certificate is configured; dropped");
            return None;
        }
        Err(e) => {
            debug!(%peer, "admin client dropped during TLS negotiation: {e}");
            return None;
        }
    };

    let first = tokio::select! {
        _ = &mut deadline => {
            debug!(%peer, "admin client sent no startup packet in time; dropped");
            return None;
        }
        _ = shared.shutdown.cancelled() => return None,
        m = socket.next() => m,
    };
    let startup = match first {
        Some(Ok(PgWireFrontendMessage::Startup(s))) => s,
        // Nothing here runs long enough to need cancelling.
        Some(Ok(PgWireFrontendMessage::CancelRequest(_))) => return None,
        Some(Ok(_)) => {
            refuse(
                &mut socket,
                CommandError::new(sqlstate::PROTOCOL_VIOLATION, "expected a startup message"),
            )
            .await;
            return None;
        }
        Some(Err(e)) => {
            debug!(%peer, "malformed startup packet from an admin client; dropped: {e}");
            return None;
        }
        None => return None,
    };
    Some((socket, startup))
}

/// One admin session, from the first byte to the goodbye. The permit
/// holds its place under the connection limit (or in the refusal queue).
async fn session(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    admitted: bool,
    _permit: OwnedSemaphorePermit,
) {
    // One deadline for everything before the login completes.
    let deadline = tokio::time::sleep(shared.startup_timeout);
    tokio::pin!(deadline);
    let Some((mut socket, startup)) = start(socket, peer, &shared, deadline.as_mut()).await else {
        return;
    };
    let user = startup.parameters.get("user").cloned().unwrap_or_default();
    let secure = socket.is_secure();
    let admission = Admission {
        over_limit: !admitted,
        secure,
    };
    let authenticator = shared.authenticators.for_connection(secure);
    if let Err(e) = auth::check_startup(&shared.config, &startup.parameters, admission) {
        info!(%peer, %user, code = e.code, "admin login refused: {}", e.message);
        refuse(&mut socket, e).await;
        return;
    }

    let mut pending = Some(PgWireFrontendMessage::Startup(startup));
    let mut logged_in = false;
    loop {
        let message = match pending.take() {
            Some(m) => m,
            None => {
                let authenticating = matches!(
                    socket.state(),
                    PgWireConnectionState::AwaitingStartup
                        | PgWireConnectionState::AuthenticationInProgress
                );
                let next = tokio::select! {
                    _ = &mut deadline, if authenticating => {
                        debug!(%peer, %user, "admin client did not finish logging in in time; dropped");
                        return;
                    }
                    _ = shared.shutdown.cancelled() => {
                        refuse(
                            &mut socket,
                            CommandError::new(
                                sqlstate::ADMIN_SHUTDOWN,
                                "terminating connection: pgdog is shutting down",
                            ),
                        )
                        .await;
                        return;
                    }
                    m = socket.next() => m,
                };
                match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        debug!(%peer, %user, "malformed message from an admin client; dropped: {e}");
                        return;
                    }
                    None => break,
                }
            }
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let extended = message.is_extended_query();
        let result = if extended
            && matches!(socket.state(), PgWireConnectionState::ReadyForQuery)
            && !matches!(
                message,
                PgWireFrontendMessage::Sync(_) | PgWireFrontendMessage::Flush(_)
            ) {
            Err(simple_queries_only())
        } else {
            process_message(
                message,
                &mut socket,
                authenticator.clone(),
                shared.console.clone(),
                shared.noop.clone(),
                shared.noop.clone(),
                shared.noop.clone(),
            )
            .await
        };
        if let Err(e) = result {
            let e = with_login_user(e, &user);
            let fatal = e.is_fatal();
            if fatal {
                info!(%peer, %user, "admin session refused: {e}");
            }
            if process_error(&mut socket, e, extended).await.is_err() || fatal {
                return;
            }
        }
        if !logged_in && matches!(socket.state(), PgWireConnectionState::ReadyForQuery) {
            logged_in = true;
            info!(%peer, %user, tls = socket.is_secure(), "admin session started");
        }
    }
    if logged_in {
        debug!(%peer, %user, "admin session ended");
    }
}

/// The error for an extended-protocol message.
fn simple_queries_only() -> PgWireError {
    PgWireError::UserError(Box::new(
        CommandError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "the admin console speaks the simple query protocol only",
        )
        .hint("send commands as plain queries, as psql does")
        .into_error_info(),
    ))
}

/// pgwire names the SCRAM user in a failed login, which libpq leaves
/// empty; say it as PostgreSQL does, with the login's user.
fn with_login_user(e: PgWireError, user: &str) -> PgWireError {
    if !matches!(e, PgWireError::InvalidPassword(_)) {
        return e;
    }
    PgWireError::UserError(Box::new(
        CommandError::new(
            sqlstate::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
        .into_fatal_info(),
    ))
}

/// Send a FATAL error and close.
async fn refuse<S>(socket: &mut S, error: CommandError)
where
    S: Sink<PgWireBackendMessage> + Unpin,
    S::Error: Debug,
{
    let _ = socket
        .send(PgWireBackendMessage::ErrorResponse(
            error.into_fatal_info().into(),
        ))
        .await;
    let _ = socket.close().await;
}
