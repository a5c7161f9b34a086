//! TLS for connections to Postgres: the `sslmode` ladder with rustls, and
//! the certificate hash that SCRAM channel binding needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::Digest;

/// How hard to insist on TLS, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, no certificate checks.
    #[default]
    Prefer,
    /// TLS or fail; no certificate checks.
    Require,
    /// TLS, certificate chain checked against the CA; host name not checked.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl TlsMode {
    pub fn parse(text: &str) -> Option<TlsMode> {
        Some(match text.replace('_', "-").as_str() {
            "disable" | "disabled" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }
}

/// TLS settings for outgoing connections.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub mode: TlsMode,
    /// PEM file of the CA(s) that sign the servers' certificates; required
    /// for `verify-ca` and `verify-full`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for `cert` authentication.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A ready rustls config, built once and shared by every connection.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    pub mode: TlsMode,
    config: Arc<ClientConfig>,
}

impl TlsConnector {
    /// Build from options. Errors say which file is wrong and why.
    pub fn new(opts: &TlsOptions) -> Result<Option<TlsConnector>, String> {
        if opts.mode == TlsMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let verifier: Arc<dyn ServerCertVerifier> = if opts.mode.verifies() {
            let Some(ca_file) = &opts.ca_file else {
                return Err(format!(
                    "TLS mode {:?} needs a CA certificate file to verify the server; set tls_server_ca_certificate",
                    opts.mode
                ));
            };
            let roots = load_roots(ca_file)?;
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("{}: {e}", ca_file.display()))?;
            if opts.mode == TlsMode::VerifyFull {
                inner
            } else {
                Arc::new(Lenient {
                    chain: Some(inner),
                    provider,
                })
            }
        } else {
            Arc::new(Lenient {
                chain: None,
                provider,
            })
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &opts.client_cert {
            Some((cert, key)) => {
                let certs = load_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: cannot read private key: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("{}: {e}", cert.display()))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Some(TlsConnector {
            mode: opts.mode,
            config: Arc::new(config),
        }))
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// A rustls server config for our own listener (the admin console) from a
/// PEM certificate chain and key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: cannot read private key: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: certificate and key do not fit: {e}", cert.display()))?;
    Ok(Arc::new(config))
}

/// Check that a certificate and key load and match.
pub fn check_server_identity(cert: &Path, key: &Path) -> Result<(), String> {
    server_config(cert, key).map(|_| ())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read certificates: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a valid PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate found in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The modes that check less than rustls does by default. `prefer` and
/// `require` (no `chain`): encryption without authentication of the server,
/// as libpq does. `verify-ca` (a `chain`): the chain must be good, the name
/// may be anything. Either way the handshake signature is checked, so the
/// peer holds the key of the certificate it sent (channel binding relies on
/// it).
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The `tls-server-end-point` channel binding data of RFC 5929: a hash of
/// the server's certificate, with the certificate's own signature hash, or
/// SHA-256 where that is MD5 or SHA-1. `None` when the signature algorithm
/// has no such hash (Ed25519, RSA-PSS), in which case SCRAM-SHA-256-PLUS
/// cannot be used.
pub fn server_end_point_hash(cert_der: &[u8]) -> Option<Vec<u8>> {
    let oid = signature_algorithm_oid(cert_der)?;
    // OIDs in DER content form.
    const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    const SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    const SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    const MD5_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    match oid {
        o if o == SHA384_RSA || o == ECDSA_SHA384 => Some(sha2::Sha384::digest(cert_der).to_vec()),
        o if o == SHA512_RSA || o == ECDSA_SHA512 => Some(sha2::Sha512::digest(cert_der).to_vec()),
        o if o == SHA256_RSA
            || o == ECDSA_SHA256
            || o == SHA1_RSA
            || o == MD5_RSA
            || o == ECDSA_SHA1 =>
        {
            Some(sha2::Sha256::digest(cert_der).to_vec())
        }
        _ => None,
    }
}

/// Read `Certificate.signatureAlgorithm.algorithm` from a DER certificate:
/// SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, ... }, ... }.
fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after_tbs) = der_element(cert)?;
    let (tag, alg, _) = der_element(after_tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der_element(alg)?;
    (tag == 0x06).then_some(oid)
}

/// One DER element: (tag, contents, rest). Bounds-checked; `None` on
/// anything malformed.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let contents = input.get(header..end)?;
    Some((tag, contents, &input[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_cert() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/server.pem");
        load_certs(&path).unwrap()[0].to_vec()
    }

    #[test]
    fn end_point_hash_of_ecdsa_sha256_cert_is_sha256() {
        let der = server_cert();
        let hash = server_end_point_hash(&der).unwrap();
        assert_eq!(hash, sha2::Sha256::digest(&der).to_vec());
    }

    #[test]
    fn der_walker_survives_garbage() {
        assert_eq!(server_end_point_hash(&[]), None);
        assert_eq!(
            server_end_point_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        let der = server_cert();
        for cut in 0..der.len().min(64) {
            let _ = server_end_point_hash(&der[..cut]);
        }
    }

    #[test]
    fn modes_parse_like_libpq_and_pgdog() {
        assert_eq!(TlsMode::parse("verify_full"), Some(TlsMode::VerifyFull));
        assert_eq!(TlsMode::parse("verify-ca"), Some(TlsMode::VerifyCa));
        assert_eq!(TlsMode::parse("disabled"), Some(TlsMode::Disable));
        assert_eq!(TlsMode::parse("allow"), None);
    }

    #[test]
    fn verify_modes_need_a_ca() {
        let err = TlsConnector::new(&TlsOptions {
            mode: TlsMode::VerifyFull,
            ca_file: None,
            client_cert: None,
        })
        .unwrap_err();
        assert!(err.contains("tls_server_ca_certificate"), "{err}");
        let err = TlsConnector::new(&TlsOptions {
            mode: TlsMode::VerifyCa,
            ca_file: Some("/nonexistent/ca.pem".into()),
            client_cert: None,
        })
        .unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
