//! TLS for pgwire with rustls: pgwire answers an SSLRequest (and direct
//! TLS, ALPN `postgresql`) with the acceptor built here from `[tls]`; with
//! `require = true` a client that stays in plaintext is refused at startup
//! (28000), so credentials never cross the network in the clear.

use std::sync::Arc;

use pgwire::tokio::tokio_rustls::rustls::ServerConfig;
use pgwire::tokio::TlsAcceptor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;
use crate::error::{Error, Result};

pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor> {
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::InvalidParameter(format!("tls.{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| bad("cert", &config.cert, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("cert", &config.cert, &e))?;
    if certs.is_empty() {
        return Err(bad("cert", &config.cert, &"holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| bad("key", &config.key, &e))?;
    let mut server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("key", &config.key, &e))?;
    server.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
