//! The pipeline's stream limits step, for streaming methods whose policy
//! sets `max_stream_duration`, `stream_idle_timeout` or
//! `max_stream_messages`: each ends the call when it is passed, whatever
//! the handler does, as the method's deadline does
//! (`pipeline/deadline.rs`). Other calls pay nothing: the limits live in
//! the call's boxed [`Limits`](super::call::Limits), made only for methods
//! with limits.
//!
//! - past `max_stream_duration`, `UNAVAILABLE`: the stream is recycled, as
//!   a connection past `server.max_connection_age` is, and the client opens
//!   a new one (perhaps on another replica);
//! - after `stream_idle_timeout` without a message either way,
//!   `DEADLINE_EXCEEDED`;
//! - past `max_stream_messages` from the client, `RESOURCE_EXHAUSTED`: the
//!   request stream fails (the handler reading it sees the status) and the
//!   call ends with it.
//!
//! The idle timer is not reset by every message: it fires at the first
//! deadline, and then looks at when the last message went by, sleeping
//! again for the rest if one did.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::clock;
use crate::observe::StreamActivity;
use crate::policy::StreamLimits;

pin_project! {
    /// The stream limits of one call.
    pub(super) struct StreamTimers {
        #[pin]
        ends: Option<Sleep>,
        max_duration: Duration,
        #[pin]
        idle: Option<Sleep>,
        idle_timeout: Duration,
        activity: Arc<StreamActivity>,
    }
}

impl StreamTimers {
    /// The timers of a call of a method with `limits`, and what its
    /// request body reports to.
    #[cold]
    #[inline(never)]
    pub(super) fn start(limits: &StreamLimits) -> (Self, Arc<StreamActivity>) {
        let activity = StreamActivity::new(limits.max_messages);
        let timers = StreamTimers {
            ends: limits.max_duration.map(tokio::time::sleep),
            max_duration: limits.max_duration.unwrap_or_default(),
            idle: limits.idle_timeout.map(tokio::time::sleep),
            idle_timeout: limits.idle_timeout.unwrap_or_default(),
            activity: activity.clone(),
        };
        (timers, activity)
    }

    /// A response message went by.
    pub(super) fn touch(&self) {
        if self.idle.is_some() {
            self.activity.touch();
        }
    }

    /// The status the call ends with, once a limit is passed (registering
    /// for the wake-ups until then).
    pub(super) fn poll_passed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Option<tonic::Status> {
        let mut this = self.project();
        if let Some(refused) = this.activity.exceeded() {
            return Some(refused);
        }
        if let Some(ends) = this.ends.as_pin_mut()
            && ends.poll(cx).is_ready()
        {
            return Some(tonic::Status::unavailable(format!(
                "the stream reached its max_stream_duration of {:?}; open a new one",
                this.max_duration
            )));
        }
        let mut idle = this.idle.as_mut().as_pin_mut()?;
        while idle.as_mut().poll(cx).is_ready() {
            let quiet = clock::since(this.activity.last());
            let Some(left) = this
                .idle_timeout
                .checked_sub(quiet)
                .filter(|l| !l.is_zero())
            else {
                return Some(tonic::Status::deadline_exceeded(format!(
                    "no message either way for the stream's stream_idle_timeout of {:?}",
                    this.idle_timeout
                )));
            };
            idle.as_mut().reset(tokio::time::Instant::now() + left);
        }
        None
    }
}
