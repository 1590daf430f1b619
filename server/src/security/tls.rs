//! TLS settings read from PEM files: the listeners' rustls configurations
//! and the channels' settings for calls between nodes. Each is read at
//! start and again on SIGHUP ([`Reloadable`]); a file that fails to load
//! then leaves the previous settings in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use deeb_client::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

/// A certificate chain, its key, and optionally the CA that the other
/// side's certificate must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    pub path: String,
    pub message: String,
}

fn error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError { path: path.display().to_string(), message: message.to_string() }
}

/// A value swapped in place when its files are read again.
#[derive(Debug)]
pub struct Reloadable<T>(RwLock<Arc<T>>);

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Reloadable<T> {
        Reloadable(RwLock::new(Arc::new(value)))
    }

    /// The value as last loaded.
    pub fn current(&self) -> Arc<T> {
        self.0.read().expect("reloadable lock").clone()
    }

    pub fn replace(&self, value: T) {
        *self.0.write().expect("reloadable lock") = Arc::new(value);
    }
}

/// The certificates in the PEM file at `path` (at least one).
///
/// # Errors
/// An unreadable file, bad PEM, or no certificate in it.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, e))?;
    if certs.is_empty() {
        return Err(error(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The error names the file, never its contents.
    PrivateKeyDer::from_pem_file(path).map_err(|_| error(path, "no readable private key in the file"))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| error(path, e))?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's TLS settings: `files.cert` and `files.key` presented to
/// callers; with `files.ca`, callers must present a certificate that
/// chains to it.
///
/// # Errors
/// A file that cannot be read or used, or a key that does not match.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(&files.cert, e))?;
    let builder = match &files.ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(|e| error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| error(&files.key, format!("does not go with {}: {e}", files.cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A channel's TLS settings: trust `ca` (if given, else the system's
/// roots are not consulted and every server is refused), and present
/// `identity` (cert and key files) if given.
///
/// # Errors
/// A file that cannot be read or holds no certificate or key.
pub fn channel_config(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<TlsConfig, TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| error(path, e));
    let ca = ca.map(|ca| load_certs(ca).and_then(|_| read(ca))).transpose()?;
    let identity = identity
        .map(|(cert, key)| {
            load_certs(cert)?;
            load_key(key)?;
            Ok::<_, TlsError>((read(cert)?, read(key)?))
        })
        .transpose()?;
    Ok(tonic_config(ca, identity))
}

#[cfg(not(madsim))]
fn tonic_config(ca: Option<Vec<u8>>, identity: Option<(Vec<u8>, Vec<u8>)>) -> TlsConfig {
    use tonic::transport::{Certificate, Identity};
    let mut config = TlsConfig::new().assume_http2(true);
    if let Some(ca) = ca {
        config = config.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    config
}

/// The simulator's transport has no TLS: the files were checked, and that is all.
#[cfg(madsim)]
fn tonic_config(_ca: Option<Vec<u8>>, _identity: Option<(Vec<u8>, Vec<u8>)>) -> TlsConfig {
    TlsConfig
}

/// True if `cert` (DER) names `host` (a DNS name or an IP address) among
/// its subject alternative names.
pub fn names_host(cert: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(parsed) = ParsedCertificate::try_from(cert) else { return false };
    let Ok(name) = ServerName::try_from(host) else { return false };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
pub fn host_of(address: &str) -> &str {
    let address = address.trim_start_matches("https://").trim_start_matches("http://");
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The subject's common name of `cert` (DER), if it has one: with a
/// client CA, the user a client certificate names.
pub fn common_name(cert: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?,
    //   serial, signature, issuer, validity, subject, ... }, ... }
    let (certificate, _) = der::read(cert, der::SEQUENCE)?;
    let (mut tbs, _) = der::read(certificate, der::SEQUENCE)?;
    if tbs.first() == Some(&der::VERSION) {
        tbs = der::skip(tbs)?;
    }
    for _ in 0..4 {
        tbs = der::skip(tbs)?; // serial, signature, issuer, validity
    }
    let (subject, _) = der::read(tbs, der::SEQUENCE)?;
    // Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
    let mut sets = subject;
    while !sets.is_empty() {
        let (set, rest) = der::read(sets, der::SET)?;
        sets = rest;
        let (pair, _) = der::read(set, der::SEQUENCE)?;
        let (oid, value) = der::read(pair, der::OID)?;
        if oid == COMMON_NAME_OID {
            let (tag, text) = (value.first()?, der::read_any(value)?);
            return matches!(*tag, der::UTF8_STRING | der::PRINTABLE_STRING | der::IA5_STRING)
                .then(|| String::from_utf8(text.to_vec()).ok())
                .flatten();
        }
    }
    None
}

/// id-at-commonName, 2.5.4.3.
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];

/// Just enough DER to walk to a certificate's subject.
mod der {
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const OID: u8 = 0x06;
    pub const VERSION: u8 = 0xa0;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const IA5_STRING: u8 = 0x16;

    /// The contents of the element at the start of `input` if its tag is
    /// `tag`, and what follows it.
    pub fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        (*input.first()? == tag).then_some(())?;
        split(input)
    }

    /// The contents of the element at the start of `input`, whatever its tag.
    pub fn read_any(input: &[u8]) -> Option<&[u8]> {
        split(input).map(|(contents, _)| contents)
    }

    /// What follows the element at the start of `input`.
    pub fn skip(input: &[u8]) -> Option<&[u8]> {
        split(input).map(|(_, rest)| rest)
    }

    fn split(input: &[u8]) -> Option<(&[u8], &[u8])> {
        let first = *input.get(1)?;
        let (length, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let bytes = input.get(2..2 + count)?;
            (bytes.iter().fold(0usize, |length, byte| (length << 8) | usize::from(*byte)), 2 + count)
        };
        let end = header.checked_add(length)?;
        Some((input.get(header..end)?, input.get(end..)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::certs;

    #[test]
    fn a_client_certificate_names_its_user() {
        let ca = certs::Authority::new("test CA").expect("ca");
        let issued = ca.issue("reader", &[]).expect("issued");
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("pem");
        assert_eq!(common_name(&der), Some("reader".into()));
        // The issuer's name (the CA's) is not the subject's.
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("pem");
        assert_eq!(common_name(&ca_der), Some("test CA".into()));
        assert_eq!(common_name(&der[..der.len() / 2]), None);
        assert_eq!(common_name(b"\x30\x84\xff\xff\xff\xff"), None);
    }

    #[test]
    fn a_certificate_names_its_hosts_only() {
        let ca = certs::Authority::new("test CA").expect("ca");
        let issued = ca.issue("node1", &["127.0.0.1".into(), "db1.example".into()]).expect("issued");
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("pem");
        assert!(names_host(&der, "127.0.0.1"));
        assert!(names_host(&der, "db1.example"));
        assert!(!names_host(&der, "127.0.0.2"));
        assert!(!names_host(&der, "db2.example"));
    }

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:7101"), "127.0.0.1");
        assert_eq!(host_of("https://db1:7101"), "db1");
        assert_eq!(host_of("[::1]:7101"), "::1");
        assert_eq!(host_of("db1"), "db1");
    }
}
