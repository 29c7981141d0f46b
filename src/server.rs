//! Start and stop of all services: binds the listeners (port 0 allowed),
//! spawns the pgwire and HTTP servers and the retention task, and on
//! shutdown stops accepting, lets log writers commit what is queued and
//! closes every log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::Result;
use crate::{http, pgwire};

/// A running server.
pub struct Server {
    pub pg_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub engine: Arc<Engine>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Opens the data dir, binds both ports and starts serving.
pub async fn start(config: Config) -> Result<Server> {
    // A bad password file stops the start before anything listens.
    let security = pgwire::Security {
        verifiers: config
            .auth
            .password_file
            .as_deref()
            .map(pgwire::Verifiers::from_password_file)
            .transpose()?
            .map(Arc::new),
        tls: config.tls.as_ref().map(pgwire::tls_acceptor).transpose()?,
        require_tls: config.tls.as_ref().is_some_and(|t| t.require),
    };
    let pg_listener = TcpListener::bind(config.pg_addr).await?;
    let http_listener = TcpListener::bind(config.http_addr).await?;
    let pg_addr = pg_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let engine = tokio::task::spawn_blocking(move || Engine::open(config))
        .await
        .map_err(|e| crate::error::Error::Internal(e.to_string()))??;
    if let Some(verifiers) = &security.verifiers {
        verifiers.attach(engine.clone());
    }
    engine.start_pipelines().await?;
    engine.open_tables().await?;
    engine.start_sinks().await?;
    let (shutdown, rx) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(pgwire::serve(
            pg_listener,
            engine.clone(),
            security,
            rx.clone(),
        )),
        tokio::spawn(http::serve(http_listener, engine.clone(), rx.clone())),
        tokio::spawn(retention_loop(engine.clone(), rx)),
    ];
    tracing::info!(%pg_addr, %http_addr, data_dir = %engine.config.data_dir.display(), "sluice is serving");
    Ok(Server {
        pg_addr,
        http_addr,
        engine,
        shutdown,
        tasks,
    })
}

impl Server {
    /// Stops accepting, waits for the servers to stop, then closes the
    /// logs: every append already queued is committed and fsynced.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.engine.close().await;
        tracing::info!("sluice stopped");
    }
}

async fn retention_loop(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let interval = Duration::from_millis(engine.config.limits.retention_check_interval_ms.max(10));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let engine = engine.clone();
        if let Ok(deleted) = tokio::task::spawn_blocking(move || engine.enforce_retention()).await {
            if deleted > 0 {
                tracing::info!(segments = deleted, "retention deleted expired segments");
            }
        }
    }
}

/// Runs until SIGINT or SIGTERM, then shuts down cleanly.
pub async fn run(config: Config) -> Result<()> {
    let server = start(config).await?;
    // Scripts and tests read the bound addresses (ports may be 0) from here.
    println!(
        "sluice listening pg={} http={}",
        server.pg_addr, server.http_addr
    );
    wait_for_signal().await;
    tracing::info!("shutdown requested");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
