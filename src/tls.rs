//! TLS for the connections authgate makes to other hosts: the legacy backend (`https://`, its
//! socket.io server at `wss://`) and Redis (`rediss://`). One crypto provider, aws-lc-rs, the
//! one the token code already uses; ring is not built.
//!
//! Server certificates are checked against the Mozilla roots (webpki-roots, compiled in: the
//! container image has no system store) or, when the configuration names a CA file
//! (`backend.ca_file`, `store.ca_file`), against that CA alone: an internal service's private
//! CA, and nothing a public CA signed for the same name. This module reads certificates,
//! never keys or secrets.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// The process's one crypto provider.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes aws-lc-rs the process-wide default provider (idempotent). authgate's own clients
/// are given their provider explicitly; this is for code that asks rustls for the default:
/// reqwest built without a provider of its own, the Redis and WebSocket clients.
pub fn install_default_provider() {
    // Err only when one is installed already: by an earlier call, which is the same one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The PEM certificates of a CA file: at least one, each a certificate the root store takes.
/// The message names the file and what is wrong with it, never its contents.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| format!("{} holds an unusable certificate: {e}", path.display()))?;
    }
    Ok(certs)
}

/// A client config trusting `ca_file` alone, or the Mozilla roots without one. `alpn`: the
/// protocols to offer (HTTP/1.1 for the backend; none for Redis).
pub fn client_config(ca_file: Option<&Path>, alpn: &[&[u8]]) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate_and_errors_name_the_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = read_ca_file(&missing).unwrap_err();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here: hunter2\n").unwrap();
        let e = read_ca_file(&empty).unwrap_err();
        assert!(
            e.contains("no PEM certificate") && !e.contains("hunter2"),
            "{e}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_ca_file(&garbage).is_err());
        assert!(client_config(None, &[b"http/1.1"]).is_ok());
    }
}
