//! TLS certificates for both fronts (rustls): pgwire answers an
//! SSLRequest or direct TLS (ALPN `postgresql`) with [`Certificates::pg`],
//! the HTTP port serves HTTPS (ALPN `h2`, `http/1.1`) with
//! [`Certificates::http`]. `reload` re-reads the certificate and key
//! (SIGHUP) for connections accepted after it; a bad new pair leaves the
//! old one serving, so a botched renewal never takes the server down.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use pgwire::tokio::tokio_rustls::rustls::ServerConfig;
use pgwire::tokio::TlsAcceptor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;
use crate::error::{Error, Result};

/// The acceptors of the certificate in use; swapped whole on reload.
pub struct Certificates {
    config: TlsConfig,
    current: RwLock<Acceptors>,
}

#[derive(Clone)]
struct Acceptors {
    pg: TlsAcceptor,
    http: TlsAcceptor,
}

impl Certificates {
    pub fn load(config: &TlsConfig) -> Result<Arc<Certificates>> {
        Ok(Arc::new(Certificates {
            current: RwLock::new(acceptors(config)?),
            config: config.clone(),
        }))
    }

    /// Reads the files again; on any error the certificate in use stays.
    pub fn reload(&self) -> Result<()> {
        let fresh = acceptors(&self.config)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Whether plaintext connections are refused.
    pub fn required(&self) -> bool {
        self.config.require
    }

    pub fn pg(&self) -> TlsAcceptor {
        self.read().pg
    }

    pub fn http(&self) -> TlsAcceptor {
        self.read().http
    }

    fn read(&self) -> Acceptors {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn acceptors(config: &TlsConfig) -> Result<Acceptors> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::InvalidParameter(format!("tls.{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| bad("cert", &config.cert, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("cert", &config.cert, &e))?;
    if certs.is_empty() {
        return Err(bad("cert", &config.cert, &"holds no certificate"));
    }
    // A private key every local user can read is no longer private
    // (PostgreSQL refuses such a key file too).
    let mode = std::fs::metadata(&config.key)
        .map_err(|e| bad("key", &config.key, &e))?
        .permissions()
        .mode();
    if mode & 0o007 != 0 {
        return Err(bad(
            "key",
            &config.key,
            &format_args!(
                "is readable or writable by others (mode {:o}); chmod 600 it",
                mode & 0o777
            ),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| bad("key", &config.key, &e))?;
    // The provider is named, not taken from the process default: with more
    // than one rustls backend linked (object stores, Delta) there is none.
    let provider = Arc::new(pgwire::tokio::tokio_rustls::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("key", &config.key, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("key", &config.key, &e))?;
    let with_alpn = |protocols: &[&[u8]]| {
        let mut config = server.clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    };
    Ok(Acceptors {
        pg: with_alpn(&[b"postgresql"]),
        http: with_alpn(&[b"h2", b"http/1.1"]),
    })
}
