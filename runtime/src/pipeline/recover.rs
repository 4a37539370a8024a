//! Turning a panicking handler into an `INTERNAL` status instead of a
//! dropped connection.
//!
//! A panic while the handler future runs (caught by the pipeline's future),
//! or while a streaming response is produced (caught here, per poll), is
//! logged inside the call's span, so with its trace id, and answered
//! `INTERNAL`; the connection and the server carry on, and metrics count the
//! call as `Internal`.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

use super::interruptible::Interruptible;

/// Polls `body`, catching a panic of the handler code producing it: the
/// panic is logged (with `path`, the method's) and the body ends with
/// `INTERNAL` trailers.
pub(crate) fn poll_guarded<B: Body<Data = Bytes>>(
    mut body: Pin<&mut Interruptible<B>>,
    path: Option<&str>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
    let Some(inner) = body.as_mut().inner() else {
        return Poll::Ready(None);
    };
    match catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
        Ok(polled) => polled,
        Err(panic) => {
            log_panic(path, panic.as_ref());
            body.interrupt(&internal())
        }
    }
}

/// The status of a call whose handler panicked.
#[cold]
pub(crate) fn internal() -> tonic::Status {
    tonic::Status::internal("internal error")
}

/// Logs the panic of the handler of `path` (inside the current span).
#[cold]
#[inline(never)]
pub(crate) fn log_panic(path: Option<&str>, panic: &(dyn Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)");
    let path = path.unwrap_or("(unknown method)");
    tracing::error!(path, panic = message, "handler panicked; answered INTERNAL");
}
