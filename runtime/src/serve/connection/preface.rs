//! [`Preface`]: notes when a connection's client has sent the HTTP/2
//! preface, for the handshake timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface of HTTP/2 (RFC 9113 §3.4) is 24 bytes.
const PREFACE_LEN: usize = 24;

/// A connection's stream that counts the bytes it reads until the preface
/// is in, then sets `arrived` and only passes reads through.
pub(super) struct Preface<IO> {
    io: IO,
    /// Bytes still to read before the preface is in; 0 from then on.
    missing: usize,
    arrived: Arc<AtomicBool>,
}

impl<IO> Preface<IO> {
    pub(super) fn new(io: IO, arrived: Arc<AtomicBool>) -> Self {
        Preface {
            io,
            missing: PREFACE_LEN,
            arrived,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Preface<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.missing > 0 {
            let read = buf.filled().len() - before;
            self.missing = self.missing.saturating_sub(read);
            if self.missing == 0 {
                self.arrived.store(true, Ordering::Release);
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Preface<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
