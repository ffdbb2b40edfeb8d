//! The HTTP/1.1 server loop: hyper connections with a request-head read timeout, at most
//! `max_connections` at once, every one serving the router.
//!
//! `axum::serve` offers neither limit, so a client that opens connections and never finishes
//! its headers (slowloris) held them forever. Here:
//! - a connection that has not sent a whole request head within `header_read_timeout` (after
//!   it opened, or after its previous response) is closed ([`Checked`]; hyper's own head
//!   timeout, twice as long, stays as a backstop);
//! - request bodies have their own limit (`body_read_timeout`, applied where bodies are read:
//!   `extract::ApiJson`);
//! - beyond `max_connections`, new connections are not accepted until one closes (they wait in
//!   the kernel's accept queue), so the process's tasks and sockets stay bounded.
//!
//! - every request head of a connection is checked before hyper sees it ([`Checked`]): one
//!   hyper would answer with a bare status line (malformed, `400`; too large, `431`; target
//!   too long, `414`) is answered with the error envelope instead, as is a head that starts
//!   but does not finish within `header_read_timeout` (`408`).

use std::sync::Arc;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::connection::Checked;
use crate::state::ApiConfig;

/// Serves `router` on `listener` until the listener fails for good or the future is dropped.
pub async fn run(listener: TcpListener, router: Router, config: &ApiConfig) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout.saturating_mul(2));
    let builder = Arc::new(builder);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: wait for connections to close.
                tracing::warn!(error = %e, "cannot accept a connection; retrying shortly");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let header_read_timeout = config.header_read_timeout;
        tokio::spawn(async move {
            let connection = Checked::new(stream, header_read_timeout);
            // No upgrades: `Checked` reads every byte as HTTP/1.1, and no route upgrades.
            let connection = builder.serve_connection(TokioIo::new(connection), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// Errors of one connection that failed while being accepted; the listener is fine.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
