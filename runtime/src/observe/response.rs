//! The response side: what each polled frame of a response body means for
//! the call it answers.

use std::task::Poll;

use bytes::Bytes;
use http_body::Frame;
use tonic::Code;

use crate::wire::status_code;

/// What a polled response frame means for the call it answers.
pub(crate) enum Progress<'a> {
    /// Nothing yet, or a frame that is neither data nor trailers.
    Nothing,
    /// A data frame went by.
    Data(&'a Bytes),
    /// The response ended: with the code its trailers' `grpc-status` says
    /// (`None` when they say none, or the body ended without trailers), or
    /// `INTERNAL` for a body error; the trailers when it was them.
    End(Option<Code>, Option<&'a http::HeaderMap>),
}

/// What `polled`, a response body's poll, means for its call.
#[inline]
pub(crate) fn progress<E>(polled: &Poll<Option<Result<Frame<Bytes>, E>>>) -> Progress<'_> {
    match polled {
        Poll::Pending => Progress::Nothing,
        Poll::Ready(Some(Ok(frame))) => match (frame.data_ref(), frame.trailers_ref()) {
            (Some(data), _) => Progress::Data(data),
            (None, Some(trailers)) => Progress::End(status_code(trailers), Some(trailers)),
            (None, None) => Progress::Nothing,
        },
        Poll::Ready(None) => Progress::End(None, None),
        Poll::Ready(Some(Err(_))) => Progress::End(Some(Code::Internal), None),
    }
}
