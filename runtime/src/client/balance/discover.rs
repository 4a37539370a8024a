//! The balancer's view of a resolver: a [`tower::discover`] stream of
//! `Change::Insert`/`Remove`, fed by a task of its own ([`drive`]) that
//! resolves the target every `client.dns.refresh`, and soon after a
//! connection to a replica fails or ends (its server sent `GOAWAY`: it
//! drains, or recycles connections), as its [`Connector`] notes.

use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tower::discover::Change;

use super::Shared;
use super::eject::Replica;
use crate::client::resolve::Resolver;

/// What the driver tells the balancer.
pub(super) enum Update {
    /// A replica in or out.
    Change(Change<String, Replica>),
    /// Nothing changed, but [`Shared`] did (the first resolution failed):
    /// wakes the balancer, so that calls waiting for a replica fail.
    Wake,
}

/// The stream [`tower::balance::p2c::Balance`] discovers replicas from.
pub(super) struct Changes {
    pub(super) updates: UnboundedReceiver<Update>,
}

impl Stream for Changes {
    type Item = Result<Change<String, Replica>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.updates.poll_recv(cx) {
                Poll::Ready(Some(Update::Change(change))) => return Poll::Ready(Some(Ok(change))),
                Poll::Ready(Some(Update::Wake)) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// How often the driver resolves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    /// `client.dns.refresh`.
    pub(super) refresh: Duration,
    /// `client.dns.min_refresh`: also the pause after a failed resolution.
    pub(super) min_refresh: Duration,
}

/// Resolves `resolver`'s target again and again, sending the balancer what
/// changed, until the balancer is gone (every clone of the client dropped).
pub(super) async fn drive(
    resolver: Resolver,
    shared: Arc<Shared>,
    updates: UnboundedSender<Update>,
    schedule: Schedule,
) {
    let mut current: HashSet<String> = HashSet::new();
    loop {
        let started = tokio::time::Instant::now();
        let resolved = resolver.resolve().await;
        let ok = resolved.is_ok();
        match resolved {
            Ok(found) => {
                shared.metrics.resolved.inc();
                let keys: HashSet<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
                // Out before in: the set never holds more than both.
                for gone in current.iter().filter(|key| !keys.contains(key.as_str())) {
                    tracing::info!(target: "keel_rpc::client", client_target = %shared.target, replica = %gone, "a replica left the set");
                    let _ = updates.send(Update::Change(Change::Remove(gone.clone())));
                }
                current.retain(|key| keys.contains(key.as_str()));
                for (key, endpoint) in found {
                    if current.contains(&key) {
                        continue;
                    }
                    tracing::debug!(target: "keel_rpc::client", client_target = %shared.target, replica = %key, "a replica joined the set");
                    let connector = Connector::new(shared.clone());
                    let channel = endpoint.connect_with_connector_lazy(connector);
                    let replica = Replica::new(channel, key.clone(), shared.clone());
                    current.insert(key.clone());
                    let _ = updates.send(Update::Change(Change::Insert(key, replica)));
                }
                shared.resolved(current.len());
            }
            Err(error) => {
                shared.metrics.failed.inc();
                match current.is_empty() {
                    true => {
                        tracing::warn!(target: "keel_rpc::client", client_target = %shared.target, %error, "resolving failed, and there is no replica to call yet");
                        shared.fail(format!("{}: no replica to call: {error}", shared.target));
                        let _ = updates.send(Update::Wake);
                    }
                    false => {
                        tracing::warn!(target: "keel_rpc::client", client_target = %shared.target, %error, "resolving failed; the last set of replicas stays");
                    }
                }
            }
        }
        if ok && !resolver.changes() {
            // A list: nothing more to find.
            updates.closed().await;
            return;
        }
        let next = match ok {
            true => schedule.refresh,
            // Failed: try again sooner.
            false => schedule.min_refresh,
        };
        tokio::select! {
            _ = updates.closed() => return,
            _ = tokio::time::sleep(next) => {}
            // A replica's connection failed: resolve again, though not
            // sooner than `min_refresh` after the last resolution started.
            _ = shared.nudge.notified() => tokio::select! {
                _ = updates.closed() => return,
                _ = tokio::time::sleep_until(started + schedule.min_refresh) => {}
            },
        }
    }
}

/// A replica's connector: hyper's, set as tonic sets its own (TLS and the
/// connect timeout are tonic's, around it). Each connection after the
/// first means the last one ended, by a failure or the server's `GOAWAY`:
/// the set may have changed, so it asks the driver to resolve again soon.
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    connected: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Connector {
    fn new(shared: Arc<Shared>) -> Self {
        let mut http = HttpConnector::new();
        // The scheme is tonic's business (it adds TLS for `https`).
        http.enforce_http(false);
        http.set_nodelay(true);
        Connector {
            http,
            connected: Arc::new(AtomicBool::new(false)),
            shared,
        }
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = <HttpConnector as tower::Service<http::Uri>>::Response;
    type Error = <HttpConnector as tower::Service<http::Uri>>::Error;
    type Future = <HttpConnector as tower::Service<http::Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        if self.connected.swap(true, Ordering::Relaxed) {
            self.shared.nudge.notify_one();
        }
        self.http.call(uri)
    }
}
