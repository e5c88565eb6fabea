//! TLS for PostgreSQL connections with libpq's `sslmode` meanings (rustls through tokio-postgres-rustls).
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and no certificate parameters, so
//! `sslmode` and `sslrootcert` are taken out of the connection URL first and applied here:
//! - `disable`: plaintext;
//! - `allow`, `prefer` (libpq's default): TLS when the server offers it, plaintext otherwise;
//! - `require`: TLS or no connection;
//! - `verify-ca`: TLS, and the server's chain must lead to `sslrootcert`;
//! - `verify-full`: that, and the certificate must name the host connected to.
//!
//! As in libpq, `prefer` and `require` check nothing about the certificate unless `sslrootcert` is
//! given (then they check the chain, like `verify-ca`): they protect against eavesdropping, not
//! against an impostor. libpq's fallback to `~/.postgresql/root.crt` is not followed: the verifying
//! modes need `sslrootcert` named. Client certificates (`sslcert`, `sslkey`) are refused.

use std::path::Path;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::plugin::DbError;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS part of a connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    pub mode: TlsMode,
    /// `sslrootcert`: a PEM file with the CA certificates to trust.
    pub root_cert: Option<String>,
}

/// Splits the TLS parameters off a connection URL (`postgres[ql]://...?...` or libpq's
/// `key=value` form); returns the URL without them, for tokio-postgres to parse.
pub fn take_tls_params(text: &str) -> Result<(String, TlsParams), DbError> {
    let mut params = TlsParams { mode: TlsMode::Prefer, root_cert: None };
    let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
    // (original text of the parameter, key, value as meant)
    let parts: Vec<(String, String, String)> = if is_url {
        let Some((_, query)) = text.split_once('?') else { return Ok((text.to_owned(), params)) };
        query
            .split('&')
            .filter(|part| !part.is_empty())
            .map(|part| {
                let (key, value) = part.split_once('=').unwrap_or((part, ""));
                (part.to_owned(), key.to_owned(), percent_decode_str(value).decode_utf8_lossy().into_owned())
            })
            .collect()
    } else {
        key_value_params(text)
    };
    let mut kept = Vec::new();
    for (part, key, value) in parts {
        match key.as_str() {
            "sslmode" => {
                params.mode = match value.as_str() {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(DbError::invalid_config(format!(
                            "unknown PostgreSQL sslmode {other:?}: use disable, allow, prefer, require, verify-ca or verify-full"
                        )))
                    }
                }
            }
            "sslrootcert" => params.root_cert = Some(value).filter(|path| !path.is_empty()),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(DbError::invalid_config(format!(
                    "PostgreSQL client certificates ({key}) are not supported; authenticate with a password"
                )))
            }
            _ => kept.push(part),
        }
    }
    if matches!(params.mode, TlsMode::VerifyCa | TlsMode::VerifyFull) && params.root_cert.is_none() {
        return Err(DbError::invalid_config(
            "PostgreSQL sslmode=verify-ca and verify-full need sslrootcert=<path to the CA certificates (PEM)>",
        ));
    }
    let stripped = if is_url {
        let head = text.split_once('?').map_or(text, |(head, _)| head);
        if kept.is_empty() {
            head.to_owned()
        } else {
            format!("{head}?{}", kept.join("&"))
        }
    } else {
        kept.join(" ")
    };
    Ok((stripped, params))
}

/// libpq's `key = value` form, with `'...'` quoting and backslash escapes inside quotes.
fn key_value_params(text: &str) -> Vec<(String, String, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut params = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == '=') {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                value.push(chars[i]);
                i += 1;
            }
        }
        if !key.is_empty() {
            params.push((chars[start..i.min(chars.len())].iter().collect(), key, value));
        }
    }
    params
}

impl TlsParams {
    /// What tokio-postgres should do, and the connector that checks what the mode asks for.
    pub fn connector(&self) -> Result<(SslMode, MakeRustlsConnect), DbError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| DbError::invalid_config(format!("cannot set up TLS: {e}")))?;
        let roots = self.root_cert.as_deref().map(load_roots).transpose()?;
        let config = match (self.mode, roots) {
            (TlsMode::VerifyFull, Some((roots, _))) => builder.with_root_certificates(roots).with_no_client_auth(),
            (_, roots) => {
                let chain = roots
                    .map(|(roots, trusted)| {
                        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                            .build()
                            .map(|inner| (inner, trusted))
                            .map_err(|e| DbError::invalid_config(format!("cannot use sslrootcert: {e}")))
                    })
                    .transpose()?;
                let verifier = LibpqVerifier { provider, chain };
                builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
            }
        };
        let ssl_mode = match self.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        };
        Ok((ssl_mode, MakeRustlsConnect::new(config)))
    }
}

fn load_roots(path: &str) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), DbError> {
    let pem = std::fs::read(Path::new(path))
        .map_err(|e| DbError::invalid_config(format!("cannot read sslrootcert {path:?}: {e}")))?;
    let mut roots = RootCertStore::empty();
    let mut trusted = Vec::new();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| DbError::invalid_config(format!("sslrootcert {path:?} is not PEM: {e}")))?;
        roots.add(cert.clone()).map_err(|e| DbError::invalid_config(format!("sslrootcert {path:?}: {e}")))?;
        trusted.push(cert);
    }
    if roots.is_empty() {
        return Err(DbError::invalid_config(format!("sslrootcert {path:?} holds no certificate")));
    }
    Ok((roots, trusted))
}

/// Every mode but `verify-full` (which is rustls's own verifier). With `sslrootcert` (`verify-ca`,
/// and `require`/`prefer` given a root certificate), the chain must lead to a trusted root, whatever
/// host name the certificate carries; a self-signed server certificate that is itself in
/// `sslrootcert` (PostgreSQL's documented quick set-up makes a CA:TRUE one, which webpki refuses as
/// an end entity) is trusted, as libpq trusts it. Without it (`prefer`/`require`, as libpq): the
/// peer is not authenticated. Handshake signatures are always checked, so the session key belongs
/// to the certificate shown.
#[derive(Debug)]
struct LibpqVerifier {
    provider: Arc<CryptoProvider>,
    /// The chain check and the certificates `sslrootcert` holds, when it is given.
    chain: Option<(Arc<WebPkiServerVerifier>, Vec<CertificateDer<'static>>)>,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((inner, trusted)) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // rustls checks the chain before the name, so a name error means the chain was good.
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(_)))
                if trusted.iter().any(|root| root.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> (String, TlsParams) {
        take_tls_params(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn tls_parameters_come_out_of_both_url_forms() {
        let (rest, params) =
            split("postgresql://u:p@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5");
        assert_eq!(rest, "postgresql://u:p@h:5432/db?connect_timeout=5");
        assert_eq!(params, TlsParams { mode: TlsMode::VerifyFull, root_cert: Some("/etc/ca.pem".into()) });
        let (rest, params) = split("postgres://h/db?sslmode=require");
        assert_eq!((rest.as_str(), params.mode), ("postgres://h/db", TlsMode::Require));
        let (rest, params) = split("host=h dbname=db sslmode=verify-ca sslrootcert=/ca.pem user=u");
        assert_eq!(rest, "host=h dbname=db user=u");
        assert_eq!(params, TlsParams { mode: TlsMode::VerifyCa, root_cert: Some("/ca.pem".into()) });
        assert_eq!(split("postgresql://h/db").1.mode, TlsMode::Prefer, "libpq's default");
        assert_eq!(split("postgresql://h/db?sslmode=allow").1.mode, TlsMode::Prefer);
        assert_eq!(split("postgresql://h/db?sslmode=disable").1.mode, TlsMode::Disable);
        // Quoted values keep their spaces, and text inside them is never taken for a parameter.
        let (rest, params) =
            split("host=h password='a  sslmode=disable \\' b' sslmode = 'verify-ca' sslrootcert=/ca.pem");
        assert_eq!(rest, "host=h password='a  sslmode=disable \\' b'");
        assert_eq!(params.mode, TlsMode::VerifyCa);
    }

    #[test]
    fn unusable_tls_parameters_are_refused_clearly() {
        let err = take_tls_params("postgresql://h/db?sslmode=verify-full").expect_err("no root");
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        let err = take_tls_params("postgresql://h/db?sslmode=always").expect_err("unknown mode");
        assert!(err.to_string().contains("\"always\""), "{err}");
        let err = take_tls_params("postgresql://h/db?sslcert=/c.pem").expect_err("client cert");
        assert!(err.to_string().contains("sslcert"), "{err}");
        let params = TlsParams { mode: TlsMode::VerifyCa, root_cert: Some("/nonexistent/ca.pem".into()) };
        let err = params.connector().err().expect("missing file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert!(err.is_client_error());
    }
}
