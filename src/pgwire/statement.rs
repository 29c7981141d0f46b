//! What stops a running statement: a CancelRequest from another
//! connection, `statement_timeout`, or the client going away. pgwire's own
//! cancel covers only the planning call; DataFusion executes while the
//! rows stream out, so the row stream is guarded here too, and dropping it
//! stops the plan's tasks. A stopped statement answers 57014, as
//! PostgreSQL does.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::results::{QueryResponse, Response};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::PgWireResult;
use pgwire::messages::cancel::CancelRequest;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, Sleep};

use super::connection::{Activity, Busy};
use super::{map_pg_error, to_pg_error};
use crate::error::Error;

/// Statements longer than this are parsed and planned with the worker
/// thread handed over ([`in_place`]): planning grows faster than the text
/// (a wide select list is quadratic), and a worker busy for seconds would
/// stall every connection and the accept loop scheduled on it.
pub const HEAVY_STATEMENT_BYTES: usize = 16 << 10;

/// Runs `work` to its end; a `heavy` one on this thread while the runtime
/// moves the worker's other tasks to another thread (`block_in_place`),
/// so new connections and other sessions are served meanwhile.
pub async fn in_place<F: Future>(heavy: bool, work: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let handle = Handle::current();
    if heavy && handle.runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| handle.block_on(work))
    } else {
        work.await
    }
}

/// How often a running statement checks that its client is still there.
const PEER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where datafusion-postgres keeps a session's `SET statement_timeout`.
const TIMEOUT_METADATA_KEY: &str = "statement_timeout_ms";

type Key = (i32, Bytes);

/// Every connection's control, by its cancel key (pid, secret).
#[derive(Default)]
pub struct Cancels {
    by_key: Mutex<HashMap<Key, Weak<Control>>>,
}

impl Cancels {
    fn cancel(&self, key: &Key) -> bool {
        let control = self
            .by_key
            .lock()
            .ok()
            .and_then(|m| m.get(key).and_then(Weak::upgrade));
        match control {
            Some(c) => {
                c.generation.send_modify(|g| *g += 1);
                true
            }
            None => false,
        }
    }
}

/// Answers CancelRequests: the statement running on the connection the key
/// names stops (ours), and so does pgwire's planning call (its own).
pub struct CancelRouter {
    pub cancels: Arc<Cancels>,
    pub manager: Arc<ConnectionManager>,
}

#[async_trait]
impl CancelHandler for CancelRouter {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes());
        if self.cancels.cancel(&key) {
            tracing::info!(pid = request.pid, "statement canceled on request");
        }
        self.manager.cancel(request.pid, &request.secret_key).await;
    }
}

/// One connection's statement control.
pub struct Control {
    cancels: Arc<Cancels>,
    key: OnceLock<Key>,
    /// Bumped by each CancelRequest for this connection.
    generation: watch::Sender<u64>,
    /// A second handle on the client's socket, to notice it has gone.
    peer: Option<Arc<std::net::TcpStream>>,
    default_timeout: Option<Duration>,
}

impl Drop for Control {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut map)) = (self.key.get(), self.cancels.by_key.lock()) {
            map.remove(key);
        }
    }
}

impl Control {
    pub fn new(
        cancels: Arc<Cancels>,
        peer: Option<std::net::TcpStream>,
        default_timeout: Option<Duration>,
    ) -> Arc<Control> {
        Arc::new(Control {
            cancels,
            key: OnceLock::new(),
            generation: watch::channel(0).0,
            peer: peer.map(Arc::new),
            default_timeout,
        })
    }

    /// Starts watching a statement of `client`'s session.
    pub fn begin<C: ClientInfo + ?Sized>(self: &Arc<Self>, client: &C) -> Watch {
        self.key.get_or_init(|| {
            let (pid, secret) = client.pid_and_secret_key();
            let key = (pid, secret.to_bytes());
            if let Ok(mut map) = self.cancels.by_key.lock() {
                map.insert(key.clone(), Arc::downgrade(self));
            }
            key
        });
        let timeout = client
            .metadata()
            .get(TIMEOUT_METADATA_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis)
            .or(self.default_timeout)
            .filter(|d| !d.is_zero());
        Watch {
            control: self.clone(),
            deadline: timeout.map(|t| Instant::now() + t),
        }
    }
}

/// One statement's limits, from its start.
pub struct Watch {
    control: Arc<Control>,
    deadline: Option<Instant>,
}

impl Watch {
    /// Runs `work` unless the statement is stopped first.
    pub async fn run<T>(&self, work: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
        let mut stop = self.stop();
        tokio::select! {
            done = work => done,
            why = stop.stopped() => Err(to_pg_error(why)),
        }
    }

    /// Guards the row streams of `responses`, and gives their errors our
    /// SQLSTATEs (53200 for a query over the memory limit).
    /// The connection counts as busy (for shutdown and the idle timeout)
    /// until each stream ends.
    pub fn guard(&self, responses: Vec<Response>, activity: &Arc<Activity>) -> Vec<Response> {
        responses
            .into_iter()
            .map(|r| self.guard_one(r, activity))
            .collect()
    }

    pub fn guard_one(&self, response: Response, activity: &Arc<Activity>) -> Response {
        match response {
            Response::Query(query) => Response::Query(
                self.guard_rows(super::text_format::postgres_text(query), activity.enter()),
            ),
            other => other,
        }
    }

    fn guard_rows(&self, mut query: QueryResponse, busy: Busy) -> QueryResponse {
        let data_rows = std::mem::replace(query.data_rows(), Box::pin(futures::stream::empty()));
        let state = Some((data_rows, self.stop(), busy));
        let rows = futures::stream::unfold(state, |state| async move {
            let (mut rows, mut stop, busy) = state?;
            tokio::select! {
                row = rows.next() => match row {
                    Some(Ok(row)) => Some((Ok(row), Some((rows, stop, busy)))),
                    Some(Err(e)) => Some((Err(map_pg_error(e)), None)),
                    None => None,
                },
                why = stop.stopped() => Some((Err(to_pg_error(why)), None)),
            }
        });
        *query.data_rows() = Box::pin(rows);
        query
    }

    fn stop(&self) -> Stop {
        let mut tick = tokio::time::interval(PEER_CHECK_INTERVAL);
        tick.reset();
        Stop {
            cancel: self.control.generation.subscribe(),
            deadline: self.deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            peer: self.control.peer.clone(),
            tick,
        }
    }
}

/// The futures a statement waits on besides its work; kept across polls so
/// a row costs no timer registration.
struct Stop {
    cancel: watch::Receiver<u64>,
    deadline: Option<Pin<Box<Sleep>>>,
    peer: Option<Arc<std::net::TcpStream>>,
    tick: Interval,
}

impl Stop {
    async fn stopped(&mut self) -> Error {
        let deadline = async {
            match self.deadline.as_mut() {
                Some(sleep) => sleep.await,
                None => std::future::pending().await,
            }
        };
        let peer = self.peer.clone();
        let tick = &mut self.tick;
        let gone = async move {
            loop {
                tick.tick().await;
                if peer.as_deref().is_some_and(peer_closed) {
                    return;
                }
            }
        };
        tokio::select! {
            changed = self.cancel.changed() => match changed {
                Ok(()) => Error::Canceled("canceling statement due to user request".into()),
                Err(_) => std::future::pending().await,
            },
            _ = deadline => Error::Canceled("canceling statement due to statement timeout".into()),
            _ = gone => {
                tracing::info!("client disconnected; canceling its statement");
                Error::Canceled("canceling statement: the client disconnected".into())
            }
        }
    }
}

/// Whether the client closed its end: a peek (non-blocking, like the
/// socket) reads end-of-stream or an error; pending input means alive.
fn peer_closed(socket: &std::net::TcpStream) -> bool {
    match socket.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}
