//! Who may log in. The startup packet is checked first (connection limit,
//! TLS, database name, a password being configured), then SCRAM-SHA-256
//! (or -PLUS over TLS) runs against `[admin] user` / `[admin] password`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth, SCRAM_ITERATIONS};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::error::PgWireResult;

use super::error::{sqlstate, AdminError, CommandError};
use crate::config::Config;

/// The startup handler: SCRAM over the admin login.
pub type Authenticator = SASLAuthStartupHandler<DefaultServerParameterProvider>;

/// The one admin login, kept as SCRAM's salted password so the cleartext
/// is not needed after start-up.
struct AdminLogin {
    user: String,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
    /// Answered for any other user name, so the exchange runs to its end
    /// and fails the same way a wrong password does (as PostgreSQL does:
    /// a client cannot probe which names exist).
    decoy: Vec<u8>,
}

impl std::fmt::Debug for AdminLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminLogin")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AuthSource for AdminLogin {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let secret = if login.user() == Some(self.user.as_str()) {
            &self.salted_password
        } else {
            &self.decoy
        };
        Ok(Password::new(Some(self.salt.clone()), secret.clone()))
    }
}

/// The SCRAM authenticators: for plain connections, and (with a
/// certificate) for TLS ones, which offer SCRAM-SHA-256-PLUS too, bound to
/// that certificate. libpq refuses a server that offers -PLUS without TLS,
/// so the offer depends on the connection.
#[derive(Clone)]
pub struct Authenticators {
    pub plain: Arc<Authenticator>,
    pub tls: Option<Arc<Authenticator>>,
}

impl Authenticators {
    pub fn new(config: &Config) -> Result<Authenticators, AdminError> {
        let login = Arc::new(AdminLogin::new(config)?);
        let tls = match &config.general.tls_certificate {
            Some(cert) => {
                let pem = std::fs::read(cert).map_err(|e| {
                    AdminError::Tls(format!("{}: cannot read: {e}", cert.display()))
                })?;
                Some(Arc::new(authenticator(login.clone(), Some(&pem)).map_err(
                    |e| AdminError::Tls(format!("{}: {e}", cert.display())),
                )?))
            }
            None => None,
        };
        Ok(Authenticators {
            plain: Arc::new(
                authenticator(login, None).map_err(|e| AdminError::Auth(e.to_string()))?,
            ),
            tls,
        })
    }

    /// The one for a connection.
    pub fn for_connection(&self, secure: bool) -> Arc<Authenticator> {
        match (&self.tls, secure) {
            (Some(tls), true) => tls.clone(),
            _ => self.plain.clone(),
        }
    }
}

impl AdminLogin {
    fn new(config: &Config) -> Result<AdminLogin, AdminError> {
        // Salt and decoy: random per process.
        let mut random = [0u8; 48];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut random)
            .map_err(|_| AdminError::Auth("no secure random numbers for the SCRAM salt".into()))?;
        let (salt, decoy) = random.split_at(16);
        Ok(AdminLogin {
            user: config.admin.user.clone(),
            salt: salt.to_vec(),
            salted_password: gen_salted_password(&config.admin.password, salt, SCRAM_ITERATIONS),
            decoy: decoy.to_vec(),
        })
    }
}

/// One SCRAM authenticator; with a certificate, -PLUS is offered too.
fn authenticator(login: Arc<AdminLogin>, cert_pem: Option<&[u8]>) -> PgWireResult<Authenticator> {
    let mut scram = ScramAuth::new(login);
    scram.set_iterations(SCRAM_ITERATIONS);
    if let Some(pem) = cert_pem {
        scram.configure_certificate(pem)?;
    }
    let mut params = DefaultServerParameterProvider::default();
    // psql reads the major version from this for its own features.
    params.server_version = format!("16.0 (pgdog {})", env!("CARGO_PKG_VERSION"));
    params.is_superuser = false;
    Ok(SASLAuthStartupHandler::new(Arc::new(params)).with_scram(scram))
}

/// What a session can be refused for before authentication.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// The connection is over `[general] max_admin_connections`.
    pub over_limit: bool,
    /// It negotiated TLS.
    pub secure: bool,
}

/// Check a startup packet's parameters; the error is sent as FATAL.
pub fn check_startup(
    config: &Config,
    params: &BTreeMap<String, String>,
    admission: Admission,
) -> Result<(), CommandError> {
    if admission.over_limit {
        return Err(CommandError::new(
            sqlstate::TOO_MANY_CONNECTIONS,
            format!(
                "too many admin connections: the limit is {}",
                config.general.max_admin_connections
            ),
        )
        .hint("close idle admin sessions, or raise [general] max_admin_connections"));
    }
    if config.general.tls_client_required && !admission.secure {
        return Err(CommandError::new(
            sqlstate::INVALID_AUTHORIZATION,
            "the admin console requires TLS ([general] tls_client_required = true)",
        )
        .hint("connect with sslmode=require (or verify-ca / verify-full)"));
    }
    // PostgreSQL's default: the database is named after the user.
    let user = params.get("user").map(String::as_str).unwrap_or("");
    let database = params
        .get("database")
        .map(String::as_str)
        .filter(|d| !d.is_empty())
        .unwrap_or(user);
    if database != config.admin.name {
        return Err(CommandError::new(
            sqlstate::INVALID_CATALOG_NAME,
            format!("database \"{database}\" does not exist"),
        )
        .detail(format!(
            "this is the pgdog admin console; it serves only the database \"{}\"",
            config.admin.name
        ))
        .hint(format!("connect with dbname={}", config.admin.name)));
    }
    if config.admin.password.is_empty() {
        return Err(CommandError::new(
            sqlstate::INVALID_AUTHORIZATION,
            "admin console logins are disabled: no admin password is configured",
        )
        .hint(format!(
            "set [admin] password in {} and restart pgdog",
            config.path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_strs(
            Path::new("pgdog.toml"),
            &format!("[general]\ntls_verify = \"disabled\"\n{extra}"),
            Path::new("users.toml"),
            "",
        )
        .unwrap()
    }

    fn params(user: &str, database: Option<&str>) -> BTreeMap<String, String> {
        let mut p = BTreeMap::new();
        p.insert("user".to_string(), user.to_string());
        if let Some(d) = database {
            p.insert("database".to_string(), d.to_string());
        }
        p
    }

    const OK: Admission = Admission {
        over_limit: false,
        secure: false,
    };

    #[test]
    fn startup_checks() {
        let c = config("[admin]\npassword = \"pw\"\n");
        check_startup(&c, &params("admin", Some("admin")), OK).unwrap();
        // No database: the user's name.
        check_startup(&c, &params("admin", None), OK).unwrap();
        let e = check_startup(&c, &params("bob", None), OK).unwrap_err();
        assert_eq!(e.code, "3D000");
        let e = check_startup(&c, &params("admin", Some("app")), OK).unwrap_err();
        assert_eq!(e.code, "3D000");
        assert!(e.detail.unwrap().contains("\"admin\""));
        let e = check_startup(
            &c,
            &params("admin", Some("admin")),
            Admission {
                over_limit: true,
                secure: true,
            },
        )
        .unwrap_err();
        assert_eq!(e.code, "53300");

        let no_pw = config("");
        let e = check_startup(&no_pw, &params("admin", Some("admin")), OK).unwrap_err();
        assert_eq!(e.code, "28000");
        assert!(e.hint.unwrap().contains("[admin] password"));
    }

    #[test]
    fn tls_required() {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        let c = config(&format!(
            "tls_certificate = \"{0}/server.pem\"\ntls_private_key = \"{0}/server.key\"\ntls_client_required = true\n[admin]\npassword = \"pw\"\n",
            certs.display()
        ));
        let e = check_startup(&c, &params("admin", None), OK).unwrap_err();
        assert_eq!(e.code, "28000");
        assert!(e.hint.unwrap().contains("sslmode=require"));
        check_startup(
            &c,
            &params("admin", None),
            Admission {
                over_limit: false,
                secure: true,
            },
        )
        .unwrap();
        // SCRAM-SHA-256-PLUS needs the certificate to load.
        let a = Authenticators::new(&c).unwrap();
        assert!(a.tls.is_some());
    }
}
