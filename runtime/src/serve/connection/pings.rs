//! [`Pings`]: keepalive enforcement, as grpc-go's `EnforcementPolicy`: a
//! client that pings more often than `server.keepalive_min_ping_interval`
//! while no call goes either way is sent `GOAWAY` `ENHANCE_YOUR_CALM` with
//! "too_many_pings" at its third such ping, and the connection is closed.
//! grpc-go's and Java's clients double their keepalive time when they get
//! it; others at least stop.
//!
//! hyper answers pings itself and shows none of them, nor can it send a
//! `GOAWAY` with a code, so this watches the connection's bytes: it reads
//! the 9-byte header of each HTTP/2 frame that goes by (never a payload),
//! both ways, and writes its `GOAWAY` between two of hyper's frames. A
//! connection that does not start with the HTTP/2 preface (HTTP/1.1) is
//! only passed through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Pings too soon in a row before the connection is closed (grpc-go's
/// `maxPingStrikes`, 2: the third is refused).
const STRIKES: u8 = 2;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const TOO_MANY_PINGS: &[u8] = b"too_many_pings";

/// A connection's stream, watching its frames for pings; see the module
/// docs.
pub(super) struct Pings<IO> {
    io: IO,
    read: Frames,
    written: Frames,
    policy: Policy,
}

/// What the pings of one connection have been, against the policy.
struct Policy {
    /// `server.keepalive_min_ping_interval`; zero: not enforced.
    min_interval: Duration,
    /// When the last ping came, and whether a call's frame went by since.
    last_ping: Option<Instant>,
    busy_since_ping: bool,
    strikes: u8,
    /// The highest stream the client opened, for the `GOAWAY`.
    last_stream: u32,
    calm: Calm,
    /// `keel_server_connections_closed_total{reason="too_many_pings"}`.
    closed: IntCounter,
}

/// Where a stream of bytes is in its frames.
#[derive(Default)]
struct Frames {
    /// Bytes of the preface still to see (reads only).
    preface: usize,
    /// The preface did not match: not HTTP/2, nothing to watch.
    off: bool,
    /// The frame header being read, and how much of it is in.
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
}

enum Calm {
    /// Nothing to say.
    No,
    /// A `GOAWAY` to write at the next frame boundary, and how much of it
    /// is written.
    Sending { frame: Vec<u8>, written: usize },
    /// Written: the connection is over.
    Sent,
}

impl<IO> Pings<IO> {
    pub(super) fn new(io: IO, min_interval: Duration, closed: IntCounter) -> Self {
        Pings {
            io,
            read: Frames {
                preface: PREFACE.len(),
                ..Frames::default()
            },
            written: Frames::default(),
            policy: Policy {
                min_interval,
                last_ping: None,
                busy_since_ping: false,
                strikes: 0,
                last_stream: 0,
                calm: Calm::No,
                closed,
            },
        }
    }

    fn watching(&self) -> bool {
        !self.policy.min_interval.is_zero() && !self.read.off
    }
}

impl Policy {
    /// A frame came from the client.
    fn received(&mut self, head: &[u8; 9]) {
        let (kind, flags, stream) = (head[3], head[4], stream_id(head));
        match kind {
            DATA | HEADERS => {
                self.busy_since_ping = true;
                if kind == HEADERS {
                    self.last_stream = self.last_stream.max(stream);
                }
            }
            PING if flags & ACK == 0 => self.pinged(),
            _ => {}
        }
    }

    /// A frame went to the client: a call's frames reset the count, as
    /// grpc-go's server does when it sends data or headers.
    fn sent(&mut self, head: &[u8; 9]) {
        if matches!(head[3], DATA | HEADERS) {
            self.busy_since_ping = true;
            self.strikes = 0;
        }
    }

    fn pinged(&mut self) {
        let now = Instant::now();
        let too_soon = self
            .last_ping
            .is_some_and(|last| now.duration_since(last) < self.min_interval);
        if too_soon && !self.busy_since_ping {
            self.strikes += 1;
        }
        self.last_ping = Some(now);
        self.busy_since_ping = false;
        if self.strikes > STRIKES && matches!(self.calm, Calm::No) {
            self.closed.inc();
            tracing::debug!(
                "connection closed: GOAWAY ENHANCE_YOUR_CALM, pings more often than server.keepalive_min_ping_interval without calls"
            );
            self.calm = Calm::Sending {
                frame: goaway(self.last_stream),
                written: 0,
            };
        }
    }
}

/// `GOAWAY` `ENHANCE_YOUR_CALM` "too_many_pings", after `last_stream`.
fn goaway(last_stream: u32) -> Vec<u8> {
    let length = 8 + TOO_MANY_PINGS.len();
    let mut frame = Vec::with_capacity(9 + length);
    frame.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&last_stream.to_be_bytes());
    frame.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    frame.extend_from_slice(TOO_MANY_PINGS);
    frame
}

fn stream_id(head: &[u8; 9]) -> u32 {
    u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff
}

impl Frames {
    /// Goes over `bytes`, calling `frame` with each frame header completed.
    fn scan(&mut self, mut bytes: &[u8], mut frame: impl FnMut(&[u8; 9])) {
        if self.off {
            return;
        }
        if self.preface > 0 {
            let seen = PREFACE.len() - self.preface;
            let take = self.preface.min(bytes.len());
            if bytes[..take] != PREFACE[seen..seen + take] {
                self.off = true;
                return;
            }
            self.preface -= take;
            bytes = &bytes[take..];
        }
        while !bytes.is_empty() {
            if self.skip > 0 {
                let skipped = self.skip.min(bytes.len());
                self.skip -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            let take = (9 - self.have).min(bytes.len());
            self.head[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == 9 {
                self.have = 0;
                self.skip =
                    u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]) as usize;
                frame(&self.head);
            }
        }
    }

    /// Between two frames.
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.skip == 0
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Pings<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if matches!(self.policy.calm, Calm::Sent) {
            // Over: the end of the stream, for hyper to close.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if self.watching() {
            let this = &mut *self;
            let policy = &mut this.policy;
            this.read
                .scan(&buf.filled()[before..], |head| policy.received(head));
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> Pings<IO> {
    /// Writes the `GOAWAY` due, if any, when between two frames: ready once
    /// there is none to write.
    fn poll_calm(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.written.at_boundary() {
            return Poll::Ready(Ok(()));
        }
        let Calm::Sending { frame, written } = &mut self.policy.calm else {
            return Poll::Ready(Ok(()));
        };
        while *written < frame.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &frame[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.policy.calm = Calm::Sent;
        Poll::Ready(Ok(()))
    }

    fn over() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, "too_many_pings")
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Pings<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_calm(cx))?;
        if matches!(self.policy.calm, Calm::Sent) {
            return Poll::Ready(Err(Self::over()));
        }
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        if self.watching() {
            let this = &mut *self;
            let policy = &mut this.policy;
            this.written.scan(&buf[..n], |head| policy.sent(head));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_calm(cx))?;
        if matches!(self.policy.calm, Calm::Sent) {
            return Poll::Ready(Err(Self::over()));
        }
        let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, bufs))?;
        if self.watching() {
            let this = &mut *self;
            let policy = &mut this.policy;
            let mut left = n;
            for buf in bufs {
                let take = left.min(buf.len());
                this.written.scan(&buf[..take], |head| policy.sent(head));
                left -= take;
                if left == 0 {
                    break;
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_calm(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_calm(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut bytes = (payload as u32).to_be_bytes()[1..].to_vec();
        bytes.extend_from_slice(&[kind, flags]);
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.resize(9 + payload, 7);
        bytes
    }

    #[test]
    fn frame_headers_are_found_across_reads_and_payloads_skipped() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, 4, 1, 30));
        bytes.extend(frame(DATA, 1, 1, 100));
        bytes.extend(frame(PING, 0, 0, 8));
        let mut frames = Frames {
            preface: PREFACE.len(),
            ..Frames::default()
        };
        let mut seen = Vec::new();
        for piece in bytes.chunks(5) {
            frames.scan(piece, |head| seen.push((head[3], stream_id(head))));
        }
        assert_eq!(seen, [(HEADERS, 1), (DATA, 1), (PING, 0)]);
        assert!(frames.at_boundary());
    }

    #[test]
    fn what_is_not_http2_is_not_watched() {
        let mut frames = Frames {
            preface: PREFACE.len(),
            ..Frames::default()
        };
        let mut seen = 0;
        frames.scan(b"PUT /v1/users HTTP/1.1\r\n", |_| seen += 1);
        frames.scan(&frame(PING, 0, 0, 8), |_| seen += 1);
        assert_eq!((frames.off, seen), (true, 0));
    }

    #[test]
    fn the_goaway_says_enhance_your_calm_after_the_last_stream() {
        let frame = goaway(7);
        assert_eq!(frame.len(), 9 + 8 + TOO_MANY_PINGS.len());
        assert_eq!(frame[3], GOAWAY);
        assert_eq!(&frame[9..13], &7u32.to_be_bytes());
        assert_eq!(&frame[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
        assert_eq!(&frame[17..], TOO_MANY_PINGS);
    }
}
