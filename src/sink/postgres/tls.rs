//! TLS to a PostgreSQL target with rustls (the server's own TLS stack):
//! `sslmode=require`, `verify-ca` or `verify-full` in the location encrypt
//! the connection and verify the server's certificate and host name
//! against `sslrootcert` (a PEM file) or the system's roots. Unlike
//! libpq's `require`, an unverified certificate is never accepted: the
//! sink sends a password and rows to that server.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pgwire::tokio::tokio_rustls::client::TlsStream as RustlsStream;
use pgwire::tokio::tokio_rustls::rustls::pki_types::ServerName;
use pgwire::tokio::tokio_rustls::rustls::{ClientConfig, RootCertStore};
use pgwire::tokio::tokio_rustls::TlsConnector;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::error::{Error, Result};

/// Makes verified TLS connections for tokio-postgres.
#[derive(Clone)]
pub struct Rustls {
    config: Arc<ClientConfig>,
}

impl Rustls {
    /// Trusting the certificates in `root_cert` (PEM), else the system's.
    pub fn new(root_cert: Option<&str>) -> Result<Rustls> {
        let mut roots = RootCertStore::empty();
        match root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        Error::ConnectionFailure(format!(
                            "sslrootcert '{path}' cannot be read: {e}"
                        ))
                    })?;
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        Error::ConnectionFailure(format!("sslrootcert '{path}': {e}"))
                    })?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system root rustls cannot parse is skipped, as
                    // every rustls client does.
                    let _ = roots.add(cert);
                }
            }
        }
        // The provider is named, not taken from the process default (more
        // than one is compiled in).
        let provider =
            Arc::new(pgwire::tokio::tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS client: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Rustls {
            config: Arc::new(config),
        })
    }
}

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Connect {
            connector: TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

pub struct Connect {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = self.connector.connect(self.name, stream).await?;
            Ok(Stream(tls))
        })
    }
}

/// A TLS connection to the target.
pub struct Stream<S>(RustlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (tokio-postgres's default
        // `channel_binding = prefer` then uses plain SCRAM-SHA-256).
        ChannelBinding::none()
    }
}
