//! The accept loop: one HTTP/1 connection per accepted socket, with a deadline for request
//! headers, a cap on open connections, and a graceful stop.
//!
//! `axum::serve` has no header deadline, so a client that trickles its headers (slowloris)
//! would hold a socket for ever; this loop drives hyper's connection builder directly instead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Largest request head (request line and headers) accepted; larger ones get 431.
///
/// Claude Code's heads are a few KiB, its `anthropic-beta` list included; this leaves room
/// for long cookies or tokens added by a reverse proxy in front.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Pause after an accept failure that is not about the one connection, such as running out
/// of file descriptors, so that the loop does not spin while the cause persists.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

/// How connections are held to account.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a complete request head, idle keep-alive time included.
    pub header_timeout: Duration,
    /// Connections open at once; further clients wait in the listen backlog.
    pub max_connections: u32,
}

/// Accept and serve connections with `app` until `shutdown` completes; return the watcher of
/// the connections still open, which the caller drains.
pub async fn accept_until(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> GracefulShutdown {
    let watcher = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    tokio::pin!(shutdown);

    loop {
        // Take a slot before accepting, so that a full server leaves new clients queued by
        // the kernel rather than accepting sockets it will not serve.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "every connection slot is in use; new clients wait until one closes"
                );
                tokio::select! {
                    () = &mut shutdown => break,
                    slot = Arc::clone(&slots).acquire_owned() => {
                        slot.expect("the connection semaphore is never closed")
                    }
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if !is_per_connection(&err) {
                        tracing::warn!(error = %err, "could not accept a connection; pausing before the next attempt");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
        };
        // Small SSE writes must leave at once, not wait for the client's delayed ACK.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY on a connection");
        }

        let connection = http.serve_connection(
            TokioIo::new(tcp),
            PeerService {
                app: app.clone(),
                peer,
            },
        );
        let connection = watcher.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            drop(slot);
        });
    }
    watcher
}

/// Tell whether an accept error concerns only the connection being accepted.
fn is_per_connection(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    )
}

/// The router as one connection from `peer` sees it; handlers read the peer as
/// `ConnectInfo`, which the rate limits key on.
#[derive(Debug, Clone)]
struct PeerService {
    app: Router,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for PeerService {
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        // A router is always ready, and cloning it only clones an `Arc`.
        tower_service::Service::call(&mut self.app.clone(), request)
    }
}
