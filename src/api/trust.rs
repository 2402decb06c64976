//! Which servers the client trusts: the bundled web roots (webpki-roots), the operating system's
//! trust store (read by reqwest through rustls-native-certs, which also honours `SSL_CERT_FILE`
//! and `SSL_CERT_DIR`), and the certificates of `--ca-cert FILE` (PEM), e.g. the CA of a company's
//! TLS-inspecting proxy. This module reads and checks those files.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::error::Error;

/// The certificates of every `--ca-cert` file, checked to be X.509 certificates, in order.
pub(crate) fn load_ca_certs(
    files: &[impl AsRef<Path>],
) -> Result<Vec<reqwest::Certificate>, Error> {
    let mut certs = Vec::new();
    for file in files {
        certs.extend(load_file(file.as_ref())?);
    }
    Ok(certs)
}

/// One PEM file: one or more `-----BEGIN CERTIFICATE-----` sections.
fn load_file(path: &Path) -> Result<Vec<reqwest::Certificate>, Error> {
    let shown = path.display();
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io(format!("--ca-cert {shown}: cannot read the file"), e))?;
    let mut certs = Vec::new();
    for (n, section) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let der = section.map_err(|e| {
            Error::Config(format!(
                "--ca-cert {shown}: certificate {} is not valid PEM ({e})",
                n + 1
            ))
        })?;
        // The store parses the certificate as a trust anchor: garbage between valid PEM
        // markers is reported here, naming the file, instead of when the client is built.
        rustls::RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| {
                Error::Config(format!(
                    "--ca-cert {shown}: certificate {} is not a valid X.509 certificate ({e})",
                    n + 1
                ))
            })?;
        let cert = reqwest::Certificate::from_der(&der)
            .map_err(|e| Error::Config(format!("--ca-cert {shown}: {e}")))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "--ca-cert {shown}: no certificate found; expected PEM text with one or more \
             `-----BEGIN CERTIFICATE-----` sections (a binary DER file converts with \
             `openssl x509 -inform der -in {shown} -out ca.pem`)"
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_pem_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.der");
        std::fs::write(&path, [0x30u8, 0x82, 0x01, 0x0a, 0x02]).unwrap();
        let err = load_ca_certs(&[&path]).unwrap_err().to_string();
        assert!(err.contains("no certificate found"), "{err}");
        assert!(err.contains("ca.der"), "{err}");
    }

    #[test]
    fn garbage_inside_pem_markers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = load_ca_certs(&[&path]).unwrap_err().to_string();
        assert!(err.contains("certificate 1 is not a valid X.509"), "{err}");
    }

    #[test]
    fn a_missing_file_names_the_flag_and_the_file() {
        let err = load_ca_certs(&["/nonexistent/ca.pem"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ca-cert /nonexistent/ca.pem"), "{err}");
    }
}
