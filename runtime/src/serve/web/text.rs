//! The body of a gRPC-Web text call (`application/grpc-web-text`), made
//! one base64 text before tonic-web decodes it.
//!
//! The gRPC-Web spec lets a client base64-encode its body in pieces, each
//! padded on its own (`base64(frame 1) + base64(frame 2)`), so `=` may end
//! any 4-character group, not only the last. tonic-web decodes the body
//! as one base64 text and refuses such a body (`INTERNAL`, "malformed
//! base64"). So this body reads each group of four characters on its own
//! (padding drops the bits that pad: a group of `xx==` is one byte, `xxx=`
//! two) and writes the bits out again as one continuous base64 text,
//! padded only at its end, which tonic-web then reads (the `base64` crate
//! both ways, as tonic-web uses it). Text mode is for old browsers, and
//! rare, so the second pass is not worth avoiding.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Why a text body could not be re-encoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TextError {
    /// A group of four characters is not base64.
    #[error("malformed base64 request: a group of four characters is not base64")]
    Malformed,
    /// The body ended within a group.
    #[error("malformed base64 request: it ends within a group of four characters")]
    Truncated,
    /// The body's own error.
    #[error(transparent)]
    Body(axum::BoxError),
}

/// The re-encoder: each group of four characters decoded on its own, the
/// bytes written out again as one continuous base64 text.
#[derive(Debug, Default)]
struct Requantizer {
    /// Characters of the group being read.
    group: [u8; 4],
    in_group: usize,
    /// Bytes decoded and not yet written out: fewer than three, which
    /// would need padding if the text ended here.
    pending: Vec<u8>,
}

impl Requantizer {
    /// Reads `text`, appending the characters it makes to `out`.
    fn feed(&mut self, text: &[u8], out: &mut BytesMut) -> Result<(), TextError> {
        for &c in text {
            self.group[self.in_group] = c;
            self.in_group += 1;
            if self.in_group == 4 {
                self.in_group = 0;
                let mut bytes = [0u8; 3];
                // 3 bytes, 2 (`xxx=`) or 1 (`xx==`).
                let n = STANDARD
                    .decode_slice(self.group, &mut bytes)
                    .map_err(|_| TextError::Malformed)?;
                self.pending.extend_from_slice(&bytes[..n]);
            }
        }
        // Every whole three bytes out, unpadded; the rest waits.
        let whole = self.pending.len() - self.pending.len() % 3;
        self.encode(whole, out);
        Ok(())
    }

    /// The end of the text: its last bytes, padded.
    fn finish(&mut self, out: &mut BytesMut) -> Result<(), TextError> {
        if self.in_group != 0 {
            return Err(TextError::Truncated);
        }
        self.encode(self.pending.len(), out);
        Ok(())
    }

    /// Writes the first `n` pending bytes out as base64.
    fn encode(&mut self, n: usize, out: &mut BytesMut) {
        if n > 0 {
            out.extend_from_slice(STANDARD.encode(&self.pending[..n]).as_bytes());
            self.pending.drain(..n);
        }
    }
}

pin_project! {
    /// A gRPC-Web text body whose pieces may each be padded, as one base64
    /// text; see the [module docs](self).
    pub(crate) struct Requantized<B> {
        #[pin]
        inner: B,
        requantizer: Requantizer,
        done: bool,
    }
}

impl<B> Requantized<B> {
    pub(crate) fn new(inner: B) -> Self {
        Requantized {
            inner,
            requantizer: Requantizer::default(),
            done: false,
        }
    }
}

impl<B> Body for Requantized<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = TextError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TextError>>> {
        let mut this = self.project();
        while !*this.done {
            let mut out = BytesMut::new();
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.requantizer.feed(&data, &mut out)?,
                    // Trailers, which a text body cannot have: tonic-web
                    // refuses them.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(error)) => return Poll::Ready(Some(Err(TextError::Body(error.into())))),
                None => {
                    *this.done = true;
                    this.requantizer.finish(&mut out)?;
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// Standard base64 with padding, for the tests' inputs.
    fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    /// The text of `pieces`, each base64 with its own padding, sent in
    /// chunks of `chunk` bytes, after re-encoding.
    async fn through(pieces: &[&[u8]], chunk: usize) -> Result<String, TextError> {
        let text: String = pieces.iter().map(|p| encode(p)).collect();
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (text.as_bytes())
            .chunks(chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let collected = Requantized::new(body).collect().await?.to_bytes();
        Ok(String::from_utf8(collected.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn pieces_padded_each_become_one_text() {
        let pieces: [&[u8]; 4] = [
            b"\0\0\0\0\x02",
            b"hi",
            b"\x80\0\0\0\x0f",
            b"grpc-status:0\r\n",
        ];
        let whole = encode(&pieces.concat());
        for chunk in [1, 3, 4, 5, 7, 1000] {
            assert_eq!(
                through(&pieces, chunk).await.unwrap(),
                whole,
                "chunks of {chunk}"
            );
        }
        assert_eq!(through(&[b"abc", b"d"], 2).await.unwrap(), encode(b"abcd"));
        assert_eq!(
            through(&[b"a", b"b", b"c"], 1).await.unwrap(),
            encode(b"abc")
        );
        assert_eq!(through(&[], 2).await.unwrap(), "");
    }

    #[test]
    fn what_is_not_base64_is_refused() {
        for text in [&b"QQ=Q"[..], b"Q===", b"Q!==", b"QQ\n="] {
            let mut requantizer = Requantizer::default();
            let fed = requantizer.feed(text, &mut BytesMut::new());
            assert!(matches!(fed, Err(TextError::Malformed)), "{text:?}");
        }
        let mut requantizer = Requantizer::default();
        requantizer.feed(b"QQ==QU", &mut BytesMut::new()).unwrap();
        let finished = requantizer.finish(&mut BytesMut::new());
        assert!(matches!(finished, Err(TextError::Truncated)));
    }
}
