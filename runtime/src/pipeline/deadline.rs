//! The pipeline's deadline step, for calls that carry a `grpc-timeout` and
//! for methods whose policy sets `timeout` or `max_timeout`: the call ends
//! `DEADLINE_EXCEEDED` at the deadline, whether its handler has answered
//! or its response stream still runs. Other calls get no timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::policy::MethodPolicy;
use crate::wire::{CallHeaders, decode_timeout};

pin_project! {
    /// When a call of a method with its own deadline rules must end.
    pub(super) struct Timer {
        #[pin]
        sleep: Sleep,
        after: Duration,
    }
}

impl Timer {
    /// The timer of a call of `method` with `headers`, when it has a
    /// deadline.
    #[inline]
    pub(super) fn of(method: &MethodPolicy, headers: &CallHeaders<'_>) -> Option<Self> {
        if headers.grpc_timeout.is_none() && !method.enforces_deadline() {
            return None;
        }
        Self::start(method, headers)
    }

    #[cold]
    #[inline(never)]
    fn start(method: &MethodPolicy, headers: &CallHeaders<'_>) -> Option<Self> {
        let requested = headers.grpc_timeout.and_then(decode_timeout);
        let after = method.deadline(requested)?;
        Some(Timer {
            sleep: tokio::time::sleep(after),
            after,
        })
    }

    /// Ready once the deadline has passed; registers for the wake-up.
    pub(super) fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }

    /// The status of a call cut at this deadline.
    #[cold]
    pub(super) fn exceeded(&self) -> tonic::Status {
        tonic::Status::deadline_exceeded(format!("deadline of {:?} exceeded", self.after))
    }
}
