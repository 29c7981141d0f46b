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
use crate::tls::Certificates;
use crate::{http, pgwire};

/// The stack of every runtime thread. Planning, optimising and evaluating
/// recurse over a statement's expression tree, whose depth
/// `sql::MAX_EXPRESSION_DEPTH` bounds; a tree that deep needs several
/// megabytes in the worst phases (more in debug builds). Only the pages a
/// thread touches are resident.
pub const WORKER_STACK_BYTES: usize = 16 << 20;

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
    // A bad password, key or certificate file stops the start before
    // anything listens.
    let tls = config.tls.as_ref().map(Certificates::load).transpose()?;
    let security = pgwire::Security {
        verifiers: config
            .auth
            .password_file
            .as_deref()
            .map(pgwire::Verifiers::from_password_file)
            .transpose()?
            .map(Arc::new),
        tls: tls.clone(),
    };
    let access_keys = http::AccessKeys::load(&config.auth)?;
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
    let mut tasks = vec![
        tokio::spawn(pgwire::serve(
            pg_listener,
            engine.clone(),
            security,
            rx.clone(),
        )),
        tokio::spawn(http::serve(
            http_listener,
            engine.clone(),
            http::Security {
                access_keys,
                tls: tls.clone(),
            },
            rx.clone(),
        )),
        tokio::spawn(retention_loop(engine.clone(), rx.clone())),
    ];
    if let Some(tls) = tls {
        tasks.push(tokio::spawn(reload_on_hangup(tls, rx)));
    }
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

/// Re-reads the TLS certificate and key on SIGHUP (a renewal without a
/// restart); a bad pair is logged and the old one keeps serving.
async fn reload_on_hangup(tls: Arc<Certificates>, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS certificates reload on restart only");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            got = hangups.recv() => if got.is_none() { return },
        }
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; the previous one stays")
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
