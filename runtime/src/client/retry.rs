//! Retries of unary calls, as gRPC's retry design (A6) has them: tonic
//! cannot retry through tower, as an `http::Request` is not `Clone`, so the
//! layer keeps the call's one request message and sends it again.
//!
//! Two kinds: a method's [`RetryPolicy`] retries the codes it names, with
//! backoff, up to its attempts; and every unary call is sent again at once
//! (A6's transparent retry) when no server processed it: its connection
//! could not be made, closed before the request was written, or the
//! server refused the stream (`REFUSED_STREAM`, or past the last stream a
//! `GOAWAY` accepts). The second is what lets servers recycle connections
//! (`server.max_connection_age`) and replicas drain without failing a
//! call, whatever the method's policy.
//!
//! Policy retries spend the service's retry budget
//! ([`RetryBudget`](super::dependency::RetryBudget)); transparent ones do
//! not, as they add no work to a server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use quanta::Instant;
use tonic::Code;
use tonic::body::Body;
use tower::{Service, ServiceExt};

use super::dependency::Dependency;
use super::layer::{BoxError, error_code};
use crate::clock;
use crate::metrics::MethodRetries;
use crate::policy::RetryPolicy;
use crate::wire::{GRPC_TIMEOUT, PUSHBACK, encode_timeout, status_code};

/// Transparent retries of one call, at most: a server refusing every
/// stream does not keep a call going round.
const TRANSPARENT: u32 = 3;

/// What the attempts of one call report to.
pub(super) struct Attempts {
    /// The method's policy, if it has one.
    pub(super) policy: Option<&'static RetryPolicy>,
    /// The method's retry counters.
    pub(super) retries: MethodRetries,
    /// The call's span, which records each retry as an event.
    pub(super) span: Option<tracing::Span>,
    /// When the call's deadline passes: no attempt starts after it.
    pub(super) expires: Instant,
    /// The service's retry budget: each attempt failing with a code the
    /// policy retries spends from it, and no retry is made once it is
    /// spent.
    pub(super) dependency: Arc<Dependency>,
}

/// Makes the call of `req` on `inner`, again while its outcome is
/// retryable: at once when no server processed it (at most
/// [`TRANSPARENT`] times); else when it is not committed (the call failed
/// before the response headers, or the server answered with a status
/// alone), its code is one of the policy's, attempts are left and the
/// pause ends before the deadline.
pub(super) async fn call<S, ResBody>(
    mut inner: S,
    req: Request<Body>,
    attempts: Attempts,
) -> Result<Response<ResBody>, BoxError>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    // The one request message of a unary call (counted as it is read
    // here, once, however often it is sent).
    let message = body
        .collect()
        .await
        .map_err(Into::<BoxError>::into)?
        .to_bytes();
    let mut attempt = 1;
    let mut transparent = 0;
    let mut first = true;
    loop {
        let outcome = match std::mem::take(&mut first) {
            // The service tonic polled ready, and the deadline as the
            // layer set it.
            true => inner
                .call(request(&parts, &message))
                .await
                .map_err(Into::into),
            false => {
                let req = again(&parts, &message, attempts.expires);
                let ready = inner.ready().await.map_err(Into::<BoxError>::into);
                match ready {
                    Ok(ready) => ready.call(req).await.map_err(Into::into),
                    Err(error) => Err(error),
                }
            }
        };
        let code = match &outcome {
            // A status alone: the call never got further.
            Ok(response) => status_code(response.headers()),
            Err(error) => Some(error_code(&**error)),
        };
        let Some(code) = code.filter(|code| *code != Code::Ok) else {
            return outcome;
        };
        if let Err(error) = &outcome
            && transparent < TRANSPARENT
            && unprocessed(&**error)
            && clock::now() < attempts.expires
        {
            transparent += 1;
            attempts.retries.transparent.inc();
            if let Some(span) = &attempts.span {
                tracing::debug!(
                    target: "keel_rpc::rpc",
                    parent: span,
                    error = %error,
                    "sending again: no server processed the call"
                );
            }
            continue;
        }
        let (Some(policy), Some(retries)) = (attempts.policy, &attempts.retries.policy) else {
            return outcome;
        };
        if !policy.retryable_codes.contains(&code) {
            return outcome;
        }
        // Counted whether or not attempts are left: the budget measures how
        // the service fails, not how this call does.
        if !attempts.dependency.budget.failed() {
            if attempt < policy.max_attempts
                && let Some(throttled) = &attempts.retries.throttled
            {
                throttled.inc();
            }
            return outcome;
        }
        if attempt >= policy.max_attempts {
            return outcome;
        }
        let pushback = outcome
            .as_ref()
            .ok()
            .and_then(|r| r.headers().get(PUSHBACK));
        let pause = match pushback {
            None => jitter(policy.backoff(attempt)),
            Some(value) => match value.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
                Some(ms) => Duration::from_millis(ms),
                // The server says not to retry.
                None => return outcome,
            },
        };
        if clock::now() + pause >= attempts.expires {
            return outcome;
        }
        retries.inc();
        if let Some(span) = &attempts.span {
            tracing::debug!(
                target: "keel_rpc::rpc",
                parent: span,
                attempt = attempt + 1,
                previous_code = ?code,
                pause_ms = pause.as_millis() as u64,
                "retrying"
            );
        }
        drop(outcome);
        tokio::time::sleep(pause).await;
        attempt += 1;
    }
}

/// Whether `error` says that no server processed the call (so sending it
/// again cannot do twice what a method does): the connection was never
/// made, hyper closed it before writing the request ("canceled"), or the
/// server refused the stream with `REFUSED_STREAM` or a `GOAWAY` whose
/// last stream is before it. A connection that breaks under a call sent
/// is none of these: the server may have run it.
fn unprocessed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// The request of the first attempt: the call's parts and message.
fn request(parts: &Parts, message: &Bytes) -> Request<Body> {
    let mut req = Request::new(Body::new(Full::new(message.clone())));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    req
}

/// The request of a later attempt: the call's parts and message, with what
/// is left of its deadline as `grpc-timeout`.
fn again(parts: &Parts, message: &Bytes, expires: Instant) -> Request<Body> {
    let mut req = request(parts, message);
    let left = expires.saturating_duration_since(clock::now());
    let timeout: HeaderValue = encode_timeout(left);
    req.headers_mut().insert(&GRPC_TIMEOUT, timeout);
    req
}

/// A random pause of at most `most` (gRPC's "full jitter"), so that the
/// clients of a failed server do not all come back at once.
fn jitter(most: Duration) -> Duration {
    let unit = getrandom::u64().unwrap_or(u64::MAX / 2) as f64 / u64::MAX as f64;
    most.mul_f64(unit)
}
