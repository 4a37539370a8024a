//! The gRPC port's connections, served by Keel's own accept loop over
//! hyper (as tonic's server does, with what it lacks): a listen backlog of
//! `server.listen_backlog` (not std's and tokio's 128), at most
//! `server.max_connections` open (one more is closed as it is accepted),
//! `server.handshake_timeout` for a new connection's TLS handshake and
//! HTTP/2 preface, `GOAWAY` after `server.idle_timeout` without calls and
//! at `server.max_connection_age` (its calls get
//! `server.max_connection_age_grace`), TCP keepalive (HTTP/2 pings when `server.keepalive_interval` is set), and the
//! shutdown phases of [`Phases`]. A call in progress is not idle: the time
//! its request has to arrive is `server.request_body_timeout`, which the
//! pipeline, REST and the health service apply. Each
//! connection runs in a task of its own, so a slow client holds up no
//! other.
//!
//! Its requests go through the connection's service (`service.rs`), which
//! gives them the connection's address and certificates, counts them for the
//! idle timeout, sends those that are not gRPC to REST, and ends what still
//! runs at the drain deadline.

mod pings;
mod preface;
mod service;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;

use crate::config::ServerConfig;
use crate::metrics::ConnectionMetrics;
use crate::serve::rest::HttpService;
use pings::Pings;
use preface::Preface;
pub(crate) use service::Phases;
use service::{Calls, ConnectInfo, Drain};

/// How long connections get to close after the drain deadline ended their
/// calls, before they are dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The kernel probes a connection silent this long, every
/// `TCP_KEEPALIVE_INTERVAL` (as Go's servers do), so that a peer that is
/// gone is found without a cost per frame.
const TCP_KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Looks at a connection's calls this many times per `idle_timeout`: it is
/// closed between one and 1.25 idle timeouts after its last call.
const IDLE_LOOKS: u32 = 4;

/// What every connection of the port needs.
pub(crate) struct Port {
    router: axum::Router,
    /// Requests that are not gRPC, when a service has REST routes.
    http: Option<HttpService>,
    phases: Phases,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    /// How long a connection sent `GOAWAY` for idleness gets to close
    /// (`server.keepalive_timeout`: what a client gets to answer a ping,
    /// which the graceful close waits for) before it is dropped.
    goaway_grace: Duration,
    max_connection_age: Option<Duration>,
    /// `server.max_connection_age_grace`; `Duration::MAX` when unset.
    max_connection_age_grace: Duration,
    /// `server.keepalive_min_ping_interval`.
    min_ping_interval: Duration,
    max_connections: usize,
    listen_backlog: u32,
    metrics: ConnectionMetrics,
}

impl Port {
    pub(crate) fn new(
        router: axum::Router,
        http: Option<HttpService>,
        phases: Phases,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
        settings: &ServerConfig,
        http1: bool,
        metrics: ConnectionMetrics,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if http1 {
            // gRPC-Web from browsers: HTTP/1.1 beside HTTP/2 (told apart by
            // the first bytes), with a bound on reading a request's head.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.handshake_timeout);
        } else {
            builder = builder.http2_only();
        }
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.max_concurrent_streams)
            .keep_alive_interval(settings.keepalive_interval)
            .keep_alive_timeout(settings.keepalive_timeout);
        Port {
            router,
            http,
            phases,
            tls: tls.map(TlsAcceptor::from),
            builder,
            handshake_timeout: settings.handshake_timeout,
            idle_timeout: settings.idle_timeout,
            goaway_grace: settings.keepalive_timeout,
            max_connection_age: settings.max_connection_age,
            max_connection_age_grace: settings.max_connection_age_grace.unwrap_or(Duration::MAX),
            min_ping_interval: settings.keepalive_min_ping_interval,
            max_connections: usize::try_from(settings.max_connections).unwrap_or(usize::MAX),
            listen_backlog: settings.listen_backlog,
            metrics,
        }
    }

    /// Accepts connections on `listener` until draining starts, then closes
    /// it at once (new connections are refused) and returns when every
    /// connection has closed.
    pub(crate) async fn serve(self, listener: TcpListener) {
        set_backlog(&listener, self.listen_backlog);
        let port = Arc::new(self);
        let slots = Arc::new(Semaphore::new(port.max_connections));
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = port.phases.draining.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                port.metrics.refused.inc();
                tracing::debug!(peer = ?tcp.peer_addr().ok(), "connection closed: server.max_connections reached");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(TCP_KEEPALIVE_TIME)
                .with_interval(TCP_KEEPALIVE_INTERVAL);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
            connections.spawn(port.clone().connection(tcp, slot));
        }
        drop(listener);
        connections.close();
        connections.wait().await;
    }

    /// Serves one connection: its TLS handshake, if any, then HTTP/2.
    async fn connection(self: Arc<Self>, tcp: TcpStream, _slot: OwnedSemaphorePermit) {
        let _open = self.metrics.open();
        let handshake_deadline = Instant::now() + self.handshake_timeout;
        let Some(acceptor) = &self.tls else {
            let info = ConnectInfo::Tcp(tcp.connect_info());
            return self.http2(tcp, info, handshake_deadline).await;
        };
        let peer = tcp.peer_addr().ok();
        let handshake = tokio::time::timeout_at(handshake_deadline, acceptor.accept(tcp));
        let tls = tokio::select! {
            // No call has been sent on it yet: nothing to drain.
            _ = self.phases.draining.cancelled() => return,
            handshake = handshake => handshake,
        };
        match tls {
            Ok(Ok(tls)) => {
                let info = ConnectInfo::Tls(tls.connect_info());
                self.http2(tls, info, handshake_deadline).await;
            }
            Ok(Err(error)) => tracing::debug!(?peer, %error, "TLS handshake failed"),
            Err(_) => self.closed(
                &self.metrics.handshake_timeout,
                peer,
                "TLS handshake timed out",
            ),
        }
    }

    /// Serves HTTP/2 on `io` until the connection ends; see the module docs
    /// for what ends it.
    async fn http2<IO>(&self, io: IO, info: ConnectInfo, handshake_deadline: Instant)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = match &info {
            ConnectInfo::Tcp(info) => info.remote_addr,
            ConnectInfo::Tls(info) => info.get_ref().remote_addr,
        };
        let prefaced = Arc::new(AtomicBool::new(false));
        let calls = Calls::new(
            self.router.clone(),
            self.http.clone(),
            self.phases.clone(),
            info,
        );
        let io = Preface::new(io, prefaced.clone());
        let io = TokioIo::new(Pings::new(
            io,
            self.min_ping_interval,
            self.metrics.too_many_pings.clone(),
        ));
        let conn = self.builder.serve_connection(io, Drain::new(calls.clone()));
        tokio::pin!(conn);

        let handshake = tokio::time::sleep_until(handshake_deadline);
        tokio::pin!(handshake);
        let mut handshaking = true;
        let look = self.idle_timeout / IDLE_LOOKS;
        let mut idle = tokio::time::interval_at(Instant::now() + look, look);
        let (mut quiet, mut seen) = (0, 0);
        let mut closing = false;
        // Once sent GOAWAY for idleness: when to drop it if it is still
        // open (a client that answers no ping never lets it close).
        let drop_idle = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drop_idle);
        let mut idle_closing = false;
        // `server.max_connection_age`, then its grace: one sleep, reset
        // when the first ends.
        let age = self.max_connection_age.map(jittered);
        let aged = tokio::time::sleep(age.unwrap_or(Duration::MAX));
        tokio::pin!(aged);
        let mut aging = age.is_some();
        let mut aged_out = false;
        // After the drain deadline (which ended its calls), a grace to close;
        // it comes after draining, so it is only polled once closing.
        let forced = async {
            self.phases.deadline.cancelled().await;
            tokio::time::sleep(CLOSE_GRACE).await;
        };
        tokio::pin!(forced);
        // Every branch below is polled each time the connection's task
        // wakes, which is several times per call: those that cannot fire
        // yet are switched off by their conditions.
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(?peer, %error, "connection ended with an error");
                    }
                    return;
                }
                _ = &mut handshake, if handshaking => {
                    if !prefaced.load(Ordering::Acquire) {
                        return self.closed(&self.metrics.handshake_timeout, peer, "no HTTP/2 preface in server.handshake_timeout");
                    }
                    handshaking = false;
                }
                _ = idle.tick(), if !closing => {
                    let started = calls.started();
                    if Calls::busy(&calls) || started != seen {
                        (quiet, seen) = (0, started);
                    } else {
                        quiet += 1;
                    }
                    if quiet == IDLE_LOOKS {
                        self.closed(&self.metrics.idle, peer, "GOAWAY: no call in server.idle_timeout");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        idle_closing = true;
                        drop_idle.as_mut().reset(Instant::now() + self.goaway_grace);
                    }
                }
                _ = &mut drop_idle, if idle_closing => {
                    // A call that started before the GOAWAY reached the
                    // client runs to its end.
                    if !Calls::busy(&calls) {
                        return;
                    }
                    drop_idle.as_mut().reset(Instant::now() + self.goaway_grace);
                }
                _ = &mut aged, if aging => match std::mem::replace(&mut aged_out, true) {
                    // Its calls in flight ran past the grace.
                    true => return,
                    // Already closing (idle, draining): that decides.
                    false if closing => aging = false,
                    false => {
                        self.closed(&self.metrics.aged, peer, "GOAWAY: server.max_connection_age");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        match Instant::now().checked_add(self.max_connection_age_grace) {
                            Some(end) => aged.as_mut().reset(end),
                            None => aging = false,
                        }
                    }
                },
                _ = self.phases.draining.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = &mut forced, if closing => return,
            }
        }
    }

    fn closed(&self, counter: &IntCounter, peer: Option<std::net::SocketAddr>, why: &str) {
        counter.inc();
        tracing::debug!(?peer, "connection closed: {why}");
    }
}

/// `age` ± 10 %, at random.
fn jittered(age: Duration) -> Duration {
    let unit = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
    age.mul_f64(0.9 + 0.2 * unit)
}

/// Gives `listener` a backlog of `backlog` connections, whoever bound it:
/// `listen(2)` again on a listening socket sets its backlog (Linux and the
/// BSDs; nginx does the same to sockets it inherits), where tokio's `bind`
/// (and std's) listen with 128, which a burst of connections overflows.
fn set_backlog(listener: &TcpListener, backlog: u32) {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    if let Err(error) = socket2::SockRef::from(listener).listen(backlog) {
        tracing::warn!(%error, backlog, "setting server.listen_backlog failed; the listener keeps its own");
    }
}

/// After a failed `accept`: a connection reset before it was accepted
/// concerns that connection only; running out of file descriptors (or
/// memory) does not end by retrying at once, so the loop pauses.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted
    ) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed; pausing for 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
