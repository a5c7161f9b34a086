//! The authentication exchange: trust, cleartext, MD5, SCRAM-SHA-256 and
//! SCRAM-SHA-256-PLUS. The hashing is `postgres-protocol`'s; the messages
//! are ours.

use pgdog_protocol::backend::{Authentication, Message};
use pgdog_protocol::frontend;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ScramSha256};

use super::connection::Connection;
use super::error::{ConnectionError, Result};
use super::options::{ChannelBinding, ConnectOptions};
use super::tls::server_end_point_hash;

impl Connection {
    /// Answer authentication requests until AuthenticationOk.
    pub(super) async fn authenticate(&mut self, options: &ConnectOptions) -> Result<()> {
        let conn = self;
        let mut used_channel_binding = false;
        loop {
            let msg = conn.recv().await?;
            let auth = match msg {
                Message::Authentication(a) => a,
                Message::ErrorResponse(fields) => return Err(conn.server_error(fields)),
                other => return Err(conn.unexpected(&other, "authenticating")),
            };
            match auth {
                Authentication::Ok => {
                    if options.channel_binding == ChannelBinding::Require && !used_channel_binding {
                        return Err(auth_error(
                        conn,
                        "channel binding is required but the server did not use SCRAM-SHA-256-PLUS; \
                         connect with TLS to a server that offers it, or relax channel_binding",
                    ));
                    }
                    return Ok(());
                }
                Authentication::CleartextPassword => {
                    let password = need_password(conn, options, "cleartext password")?;
                    frontend::password(password.as_bytes(), conn.buffer());
                    conn.flush().await?;
                }
                Authentication::Md5Password { salt } => {
                    let password = need_password(conn, options, "MD5")?;
                    let hashed = md5_hash(options.user.as_bytes(), password.as_bytes(), salt);
                    frontend::password(hashed.as_bytes(), conn.buffer());
                    conn.flush().await?;
                }
                Authentication::Sasl { mechanisms } => {
                    let password = need_password(conn, options, "SCRAM-SHA-256")?.to_string();
                    used_channel_binding = scram(conn, options, &password, &mechanisms).await?;
                }
                Authentication::SaslContinue { .. } | Authentication::SaslFinal { .. } => {
                    return Err(auth_error(conn, "server sent a SASL message out of order"));
                }
                Authentication::Unsupported { code } => {
                    return Err(auth_error(
                    conn,
                    &format!(
                        "the server asks for an authentication method pgdog does not support (code {code}: Kerberos, GSSAPI or SSPI); \
                         use scram-sha-256, md5, password or trust in pg_hba.conf for this user"
                    ),
                ));
                }
            }
        }
    }
}

/// Run the SCRAM exchange; returns whether channel binding was used.
async fn scram(
    conn: &mut Connection,
    options: &ConnectOptions,
    password: &str,
    mechanisms: &[pgdog_protocol::Str],
) -> Result<bool> {
    let offers = |m: &str| mechanisms.iter().any(|x| x.as_str() == m);
    let cert_hash = conn
        .stream()
        .peer_certificate()
        .and_then(|der| server_end_point_hash(&der));
    let (mechanism, binding, plus) = if conn.is_tls()
        && options.channel_binding != ChannelBinding::Disable
        && offers(sasl::SCRAM_SHA_256_PLUS)
    {
        match cert_hash {
            Some(hash) => (
                sasl::SCRAM_SHA_256_PLUS,
                sasl::ChannelBinding::tls_server_end_point(hash),
                true,
            ),
            None => (
                sasl::SCRAM_SHA_256,
                sasl::ChannelBinding::unrequested(),
                false,
            ),
        }
    } else if conn.is_tls() && options.channel_binding != ChannelBinding::Disable {
        // We could bind, the server did not offer it.
        (
            sasl::SCRAM_SHA_256,
            sasl::ChannelBinding::unrequested(),
            false,
        )
    } else {
        (
            sasl::SCRAM_SHA_256,
            sasl::ChannelBinding::unsupported(),
            false,
        )
    };
    if !offers(mechanism) {
        let offered: Vec<&str> = mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(auth_error(
            conn,
            &format!("server offers SASL mechanisms {offered:?}, none of which pgdog supports"),
        ));
    }
    if options.channel_binding == ChannelBinding::Require && !plus {
        return Err(auth_error(
            conn,
            "channel binding is required but cannot be used: it needs TLS and a server offering SCRAM-SHA-256-PLUS",
        ));
    }
    let mut scram = ScramSha256::new(password.as_bytes(), binding);
    frontend::sasl_initial_response(mechanism, scram.message(), conn.buffer()).map_err(
        |source| ConnectionError::Protocol {
            server: conn.addr().clone(),
            source,
        },
    )?;
    conn.flush().await?;

    let data = match conn.recv().await? {
        Message::Authentication(Authentication::SaslContinue { data }) => data,
        Message::ErrorResponse(fields) => return Err(conn.server_error(fields)),
        other => return Err(conn.unexpected(&other, "authenticating with SCRAM")),
    };
    scram
        .update(&data)
        .map_err(|e| auth_error(conn, &format!("SCRAM: {e}")))?;
    frontend::sasl_response(scram.message(), conn.buffer());
    conn.flush().await?;

    let data = match conn.recv().await? {
        Message::Authentication(Authentication::SaslFinal { data }) => data,
        Message::ErrorResponse(fields) => return Err(conn.server_error(fields)),
        other => return Err(conn.unexpected(&other, "authenticating with SCRAM")),
    };
    scram.finish(&data).map_err(|e| {
        auth_error(
            conn,
            &format!(
                "SCRAM: the server's proof does not verify ({e}); it may not know this password"
            ),
        )
    })?;
    Ok(plus)
}

fn need_password<'a>(
    conn: &Connection,
    options: &'a ConnectOptions,
    method: &str,
) -> Result<&'a str> {
    options.password.as_deref().ok_or_else(|| {
        auth_error(
            conn,
            &format!(
                "the server asks user \"{}\" for a password ({method}) but none is configured; set password in users.toml",
                options.user
            ),
        )
    })
}

fn auth_error(conn: &Connection, reason: &str) -> ConnectionError {
    ConnectionError::Auth {
        server: conn.addr().clone(),
        reason: reason.to_string(),
    }
}
