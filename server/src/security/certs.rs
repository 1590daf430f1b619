//! Certificates for `deeb certs`, `deeb dev --secure` and the tests: a
//! certificate authority and the node and user certificates it signs
//! (rcgen). Production deployments may use any CA instead.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA: its certificate and signing key.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Authority {
    /// A new CA named `name`, valid for ten years.
    ///
    /// # Errors
    /// rcgen's.
    pub fn new(name: &str) -> Result<Authority, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, 10);
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        let key_pem = key.serialize_pem();
        Ok(Authority { issuer: Issuer::new(params, key), cert_pem, key_pem })
    }

    /// A CA that `deeb certs` made earlier (its name is read from the
    /// certificate; the same key and name sign as the original did).
    ///
    /// # Errors
    /// A certificate without a common name or a key rcgen cannot read.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Authority, String> {
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map(|der: rustls::pki_types::CertificateDer<'_>| der.to_vec())
            .map_err(|error| format!("CA certificate: {error}"))?;
        let name = super::tls::common_name(&der).ok_or("the CA certificate has no common name")?;
        let key = KeyPair::from_pem(key_pem).map_err(|error| format!("CA key: {error}"))?;
        let mut params = CertificateParams::new(Vec::new()).map_err(|error| error.to_string())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Authority { issuer: Issuer::new(params, key), cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() })
    }

    /// The CA's certificate (PEM): what `--tls-ca`, `--tls-client-ca` and
    /// `--peer-tls-ca` name.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for `name` (its common name: a node, or a user whose
    /// client certificate names it) valid for `hosts` (DNS names or IP
    /// addresses), for both serving and connecting, valid for two years.
    ///
    /// # Errors
    /// rcgen's (a malformed host name, say).
    pub fn issue(&self, name: &str, hosts: &[String]) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, 2);
        let key = KeyPair::generate()?;
        let cert_pem = params.signed_by(&key, &self.issuer)?.pem();
        Ok(Issued { cert_pem, key_pem: key.serialize_pem() })
    }
}

/// From the start of this year until `years` later.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let year = 1970 + i32::try_from(seconds / 31_556_952).unwrap_or(0);
    params.not_before = date_time_ymd(year, 1, 1);
    params.not_after = date_time_ymd(year + years, 1, 1);
}

/// Writes `contents` to `path`, readable by its owner only when it is a key.
///
/// # Errors
/// The file cannot be written.
pub fn write_pem(path: &Path, contents: &str, private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = private;
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loaded_authority_signs_like_the_original() {
        let original = Authority::new("deeb test CA").expect("ca");
        let loaded = Authority::load(original.cert_pem(), original.key_pem()).expect("loads");
        let issued = loaded.issue("node1", &["127.0.0.1".into()]).expect("issued");
        // The chain verifies against the original CA: a server config
        // that requires client certificates from it accepts the files.
        let dir = tempfile::tempdir().expect("dir");
        let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("n.pem"), dir.path().join("n-key.pem"));
        write_pem(&ca, original.cert_pem(), false).expect("write");
        write_pem(&cert, &issued.cert_pem, false).expect("write");
        write_pem(&key, &issued.key_pem, true).expect("write");
        let files = super::super::tls::TlsFiles { cert, key, ca: Some(ca) };
        super::super::tls::server_config(&files).expect("usable");
        assert!(Authority::load(original.cert_pem(), "not a key").is_err());
    }
}
