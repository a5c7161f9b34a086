//! One client connection to a Postgres server: startup, authentication,
//! reading and writing typed messages, and simple queries.
//!
//! COPY lives in [`super::copy`], the extended protocol in
//! [`super::extended`], replication commands in [`super::replication`].

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pgdog_protocol::backend::{DataRow, Message, TransactionStatus};
use pgdog_protocol::frame::FrameDecoder;
use pgdog_protocol::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::error::{ConnectionError, Result, ServerAddr, ServerError};
use super::options::ConnectOptions;
use super::stream::Stream;

/// Read at least this much at a time: large COPY and replication streams
/// arrive in big reads.
const READ_CHUNK: usize = 128 * 1024;

/// An open, authenticated connection.
#[derive(Debug)]
pub struct Connection {
    /// Socket, TLS or not.
    stream: Stream,
    /// Bytes read from the socket and not yet split into frames.
    read_buf: BytesMut,
    /// Messages encoded and not yet written.
    pub(super) write_buf: BytesMut,
    /// Frame splitter (length cap).
    decoder: FrameDecoder,
    /// For errors and logs.
    addr: ServerAddr,
    /// ParameterStatus values (server_version, ...), kept current.
    params: HashMap<String, String>,
    /// Process id and secret key, for CancelRequest.
    backend_key: Option<(i32, Bytes)>,
    /// Transaction state at the last ReadyForQuery.
    status: TransactionStatus,
    /// The options this connection was opened with, for cancel requests.
    options: ConnectOptions,
    /// Set after an error that leaves the protocol state unknown; every
    /// later call fails fast instead of misreading the stream.
    broken: bool,
}

impl Connection {
    /// Connect, negotiate TLS, authenticate and wait for ReadyForQuery.
    pub async fn connect(options: &ConnectOptions) -> Result<Connection> {
        let addr = options.addr();
        let timeout = options.connect_timeout;
        match tokio::time::timeout(timeout, Self::connect_inner(options)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectionError::Timeout {
                server: addr,
                seconds: timeout.as_secs_f64(),
                during: "connecting",
            }),
        }
    }

    /// [`Connection::connect`] taking its options by value (handy in
    /// closures that build options per call).
    pub async fn connect_owned(options: ConnectOptions) -> Result<Connection> {
        Self::connect(&options).await
    }

    async fn connect_inner(options: &ConnectOptions) -> Result<Connection> {
        let addr = options.addr();
        let stream = open_stream(options).await?;
        let mut conn = Connection {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(8 * 1024),
            decoder: FrameDecoder::new(options.max_message_size),
            addr,
            params: HashMap::new(),
            backend_key: None,
            status: TransactionStatus::Idle,
            options: options.clone(),
            broken: false,
        };
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &options.user),
            ("database", &options.database),
            ("application_name", &options.application_name),
            ("client_encoding", "UTF8"),
        ];
        if options.replication {
            params.push(("replication", "database"));
        }
        for (k, v) in &options.params {
            params.push((k, v));
        }
        frontend::startup(&params, &mut conn.write_buf);
        conn.flush().await?;
        conn.authenticate(options).await?;
        // After AuthenticationOk: ParameterStatus, BackendKeyData, then
        // ReadyForQuery (or an ErrorResponse, e.g. too many connections).
        loop {
            match conn.recv().await? {
                Message::BackendKeyData {
                    process_id,
                    secret_key,
                } => conn.backend_key = Some((process_id, secret_key)),
                Message::ReadyForQuery { status } => {
                    conn.status = status;
                    break;
                }
                Message::ErrorResponse(fields) => return Err(conn.server_error(fields)),
                Message::NegotiateProtocolVersion { .. } => {}
                other => return Err(conn.unexpected(&other, "starting up")),
            }
        }
        debug!(server = %conn.addr, version = conn.param("server_version").unwrap_or("?"), tls = conn.stream.is_tls(), "connected");
        Ok(conn)
    }

    pub fn addr(&self) -> &ServerAddr {
        &self.addr
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    pub(super) fn stream(&self) -> &Stream {
        &self.stream
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn transaction_status(&self) -> TransactionStatus {
        self.status
    }

    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_key.as_ref().map(|k| k.0)
    }

    /// `server_version_num` as Postgres computes it (150004 for 15.4),
    /// parsed from the `server_version` parameter.
    pub fn server_version_num(&self) -> u32 {
        parse_server_version(self.param("server_version").unwrap_or(""))
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Write out everything queued in the write buffer.
    pub async fn flush(&mut self) -> Result<()> {
        if self.broken {
            return Err(self.broken_error());
        }
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.write_buf).await;
        self.write_buf.clear();
        if let Err(source) = result {
            self.broken = true;
            return Err(ConnectionError::Io {
                server: self.addr.clone(),
                action: "writing",
                source,
            });
        }
        Ok(())
    }

    /// Queue raw, already encoded messages.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// Bytes waiting in the write buffer.
    pub fn pending_write(&self) -> usize {
        self.write_buf.len()
    }

    /// The next message that is not asynchronous noise: notices are logged,
    /// parameter changes recorded, notifications dropped.
    pub async fn recv(&mut self) -> Result<Message> {
        loop {
            let msg = self.recv_raw().await?;
            match msg {
                // A server's WARNING is meant for people (pgdog raises
                // some itself); NOTICE and below are chatter.
                Message::NoticeResponse(fields) if fields.severity() == "WARNING" => {
                    warn!(server = %self.addr, "{}", fields.get(b'M').unwrap_or(""));
                }
                Message::NoticeResponse(fields) => {
                    debug!(server = %self.addr, "notice: {fields}");
                }
                Message::ParameterStatus { name, value } => {
                    self.params.insert(name.to_string(), value.to_string());
                }
                Message::NotificationResponse { .. } => {}
                Message::ReadyForQuery { status } => {
                    self.status = status;
                    return Ok(msg);
                }
                other => return Ok(other),
            }
        }
    }

    async fn recv_raw(&mut self) -> Result<Message> {
        if self.broken {
            return Err(self.broken_error());
        }
        loop {
            match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(frame)) => {
                    return Message::parse(frame).map_err(|source| {
                        self.broken = true;
                        ConnectionError::Protocol {
                            server: self.addr.clone(),
                            source,
                        }
                    })
                }
                Ok(None) => {}
                Err(source) => {
                    self.broken = true;
                    return Err(ConnectionError::Protocol {
                        server: self.addr.clone(),
                        source,
                    });
                }
            }
            self.read_more().await?;
        }
    }

    /// Whether a whole message is already buffered, so the next
    /// [`Connection::recv`] will not wait for the network.
    pub fn has_buffered_message(&self) -> bool {
        match self.decoder.header(&self.read_buf) {
            Ok(Some(h)) => self.read_buf.len() >= h.frame_len(),
            Ok(None) => false,
            // A bad header: the next recv says so without waiting.
            Err(_) => true,
        }
    }

    /// Hand the body of every complete CopyData at the front of the read
    /// buffer to `f`, by reference, and drop them from the buffer. Stops at
    /// the first message that is not CopyData or not complete; returns how
    /// many were handed over and their body bytes.
    pub(super) fn drain_copy_data<E: From<ConnectionError>>(
        &mut self,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(usize, usize), E> {
        let mut pos = 0;
        let mut frames = 0;
        let mut total = 0;
        let buf = &self.read_buf[..];
        loop {
            let header = match self.decoder.header(&buf[pos..]) {
                Ok(Some(h)) if h.tag == b'd' => h,
                Ok(_) => break,
                Err(source) => {
                    self.broken = true;
                    return Err(ConnectionError::Protocol {
                        server: self.addr.clone(),
                        source,
                    }
                    .into());
                }
            };
            let Some(body) = buf.get(pos + 5..pos + header.frame_len()) else {
                break;
            };
            f(body)?;
            frames += 1;
            total += body.len();
            pos += header.frame_len();
        }
        bytes::Buf::advance(&mut self.read_buf, pos);
        Ok((frames, total))
    }

    /// The front of the read buffer is a CopyData not yet complete (or
    /// nothing): more must be read before [`Connection::drain_copy_data`]
    /// can go on.
    pub(super) fn front_needs_more(&self) -> bool {
        match self.decoder.header(&self.read_buf) {
            Ok(None) => self.read_buf.first().is_none_or(|&t| t == b'd'),
            Ok(Some(h)) => h.tag == b'd' && self.read_buf.len() < h.frame_len(),
            // A bad header: draining reports it.
            Err(_) => false,
        }
    }

    /// Read more from the socket.
    pub(super) async fn fill(&mut self) -> Result<()> {
        if self.broken {
            return Err(self.broken_error());
        }
        self.read_more().await
    }

    /// Read once from the socket into the read buffer.
    async fn read_more(&mut self) -> Result<()> {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
            self.read_buf.reserve(READ_CHUNK);
        }
        match self.stream.read_buf(&mut self.read_buf).await {
            Ok(0) => {
                self.broken = true;
                Err(ConnectionError::Closed {
                    server: self.addr.clone(),
                    during: None,
                })
            }
            Ok(_) => Ok(()),
            Err(source) => {
                self.broken = true;
                Err(ConnectionError::Io {
                    server: self.addr.clone(),
                    action: "reading",
                    source,
                })
            }
        }
    }

    /// Read one raw byte (the answer to SSLRequest comes unframed).
    pub(super) async fn read_byte(stream: &mut TcpStream) -> std::io::Result<u8> {
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).await?;
        Ok(b[0])
    }

    /// Run one or more statements with the simple query protocol; return
    /// the rows of all of them, in order. An ErrorResponse is returned as
    /// an error after the server is ready again, so the connection stays
    /// usable.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<DataRow>> {
        frontend::query(sql, &mut self.write_buf);
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.recv().await? {
                Message::DataRow(row) => rows.push(row),
                Message::RowDescription(_)
                | Message::CommandComplete { .. }
                | Message::EmptyQueryResponse => {}
                Message::ErrorResponse(fields) => error = Some(self.server_error(fields)),
                Message::ReadyForQuery { .. } => break,
                Message::CopyInResponse(_) => {
                    frontend::copy_fail(
                        "pgdog: COPY FROM STDIN is not expected here",
                        &mut self.write_buf,
                    );
                    self.flush().await?;
                }
                Message::CopyOutResponse(_) | Message::CopyData(_) | Message::CopyDone => {}
                other => {
                    self.broken = true;
                    return Err(self.unexpected(&other, "running a query"));
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Run statements, ignoring any rows.
    pub async fn execute(&mut self, sql: &str) -> Result<()> {
        self.query(sql).await.map(|_| ())
    }

    /// [`Connection::query`] with a client-side deadline. On timeout the
    /// running statement is cancelled and the connection is marked broken.
    pub async fn query_timeout(&mut self, sql: &str, timeout: Duration) -> Result<Vec<DataRow>> {
        match tokio::time::timeout(timeout, self.query(sql)).await {
            Ok(r) => r,
            Err(_) => {
                self.broken = true;
                let _ = self.cancel().await;
                Err(ConnectionError::Timeout {
                    server: self.addr.clone(),
                    seconds: timeout.as_secs_f64(),
                    during: "running a query",
                })
            }
        }
    }

    /// Send a CancelRequest for whatever this connection is running, on a
    /// new socket, as the protocol requires.
    pub async fn cancel(&self) -> Result<()> {
        let Some((pid, key)) = &self.backend_key else {
            return Ok(());
        };
        let mut stream = open_stream(&self.options).await?;
        let mut buf = BytesMut::new();
        frontend::cancel_request(*pid, key, &mut buf);
        stream
            .write_all(&buf)
            .await
            .map_err(|source| ConnectionError::Io {
                server: self.addr.clone(),
                action: "sending a cancel request",
                source,
            })?;
        let _ = stream.shutdown().await;
        Ok(())
    }

    /// Say goodbye politely.
    pub async fn close(mut self) {
        if self.broken {
            return;
        }
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }

    pub(super) fn server_error(
        &self,
        fields: pgdog_protocol::backend::ErrorFields,
    ) -> ConnectionError {
        ConnectionError::Server(Box::new(ServerError {
            server: self.addr.clone(),
            fields,
        }))
    }

    pub(super) fn unexpected(&self, msg: &Message, during: &'static str) -> ConnectionError {
        ConnectionError::Unexpected {
            server: self.addr.clone(),
            got: msg.name(),
            during,
        }
    }

    pub(super) fn mark_broken(&mut self) {
        self.broken = true;
    }

    fn broken_error(&self) -> ConnectionError {
        ConnectionError::Closed {
            server: self.addr.clone(),
            during: Some("reusing a connection after an earlier error"),
        }
    }
}

/// TCP connect and, unless disabled, the SSLRequest exchange and handshake.
async fn open_stream(options: &ConnectOptions) -> Result<Stream> {
    let addr = options.addr();
    let tcp = TcpStream::connect((options.host.as_str(), options.port))
        .await
        .map_err(|source| ConnectionError::Io {
            server: addr.clone(),
            action: "connecting",
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &options.tls else {
        return Ok(Stream::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    let io_err = |source| ConnectionError::Io {
        server: addr.clone(),
        action: "negotiating TLS",
        source,
    };
    tcp.write_all(&buf).await.map_err(io_err)?;
    let answer = Connection::read_byte(&mut tcp)
        .await
        .map_err(|source| ConnectionError::Io {
            server: addr.clone(),
            action: "negotiating TLS",
            source,
        })?;
    match answer {
        b'S' => {}
        b'N' => {
            if tls.mode == super::tls::TlsMode::Prefer {
                debug!(server = %addr, "server does not offer TLS; continuing without it (tls mode prefer)");
                return Ok(Stream::Plain(tcp));
            }
            return Err(ConnectionError::Tls {
                server: addr,
                reason: format!(
                    "the server does not accept TLS connections, but the TLS mode is {:?}; enable ssl on the server or lower tls_verify",
                    tls.mode
                ),
            });
        }
        other => {
            return Err(ConnectionError::Tls {
                server: addr,
                reason: format!("unexpected answer 0x{other:02x} to SSLRequest"),
            })
        }
    }
    let name = rustls::pki_types::ServerName::try_from(options.host.clone()).map_err(|e| {
        ConnectionError::Tls {
            server: addr.clone(),
            reason: format!("invalid host name for TLS: {e}"),
        }
    })?;
    let connector = tokio_rustls::TlsConnector::from(tls.config());
    match connector.connect(name, tcp).await {
        Ok(s) => Ok(Stream::Tls(Box::new(s))),
        Err(e) => {
            warn!(server = %addr, "TLS handshake failed: {e}");
            Err(ConnectionError::Tls {
                server: addr,
                reason: format!("handshake failed: {e}"),
            })
        }
    }
}

/// "15.4 (Debian ...)" -> 150004; "9.6.3" -> 90603; "18beta1" -> 180000.
pub fn parse_server_version(text: &str) -> u32 {
    let mut parts = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if major >= 10 {
        // Only the leading number run belongs to the version.
        let leading: String = text
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut it = leading.split('.').filter(|s| !s.is_empty());
        let major = it.next().and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
        let minor = it.next().and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
        major * 10000 + minor
    } else {
        let patch = parts.next().unwrap_or(0);
        major * 10000 + minor * 100 + patch
    }
}

#[cfg(test)]
mod tests {
    use super::parse_server_version;

    #[test]
    fn server_versions() {
        assert_eq!(
            parse_server_version("15.18 (Debian 15.18-0+deb12u1)"),
            150018
        );
        assert_eq!(parse_server_version("17.2"), 170002);
        assert_eq!(parse_server_version("18beta1"), 180000);
        assert_eq!(parse_server_version("9.6.3"), 90603);
        assert_eq!(parse_server_version(""), 0);
    }
}
