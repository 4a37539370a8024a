//! The audit log of the methods annotated `(user.v1.audit)` in user.proto:
//! a layer of the service's own inside Keel's pipeline, which records who
//! called which audited method and how it ended, and nothing for the others.
//!
//! A call is recorded when its response starts, not when it arrives: the
//! layer runs before the request message is decoded and validated (by the
//! server under it), so a call recorded on arrival could be one that
//! validation then refused. Its `outcome` is the code of a response that is
//! a status alone (validation's `INVALID_ARGUMENT`, the handler's errors),
//! or `OK` once the handler's answer goes out (the audited methods answer
//! one message; a method streaming its answer would be recorded as it
//! starts, `OK`, which is why none is audited).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use keel_rpc::pipeline::{CalledMethod, OptionTable};
use tower::{Layer, Service};

use crate::user_v1::{Audit, USER_SERVICE_POLICY};

/// The most entries [`AuditLog`] keeps (the oldest give way).
const KEPT: usize = 1024;

/// One audited call, as its response started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The option's `action` (`user.create`).
    pub action: String,
    /// The method's path.
    pub method: &'static str,
    /// The verified token's subject.
    pub subject: Option<String>,
    /// How it ended: the gRPC code's name (`OK`, `INVALID_ARGUMENT`, …).
    pub outcome: &'static str,
}

/// The latest audited calls, also logged (target `audit`, `INFO`).
#[derive(Clone, Debug, Default)]
pub struct AuditLog(Arc<Mutex<VecDeque<Entry>>>);

impl AuditLog {
    /// The entries kept, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        let entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().cloned().collect()
    }

    fn record(&self, entry: Entry) {
        tracing::info!(
            target: "audit",
            action = %entry.action,
            method = entry.method,
            subject = entry.subject.as_deref().unwrap_or("-"),
            outcome = entry.outcome,
            "audited call"
        );
        let mut entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() == KEPT {
            entries.pop_front();
        }
        entries.push_back(entry);
    }
}

/// Audits the calls of `UserService`'s methods that carry `(user.v1.audit)`.
#[derive(Clone, Debug)]
pub struct AuditLayer {
    audits: Arc<OptionTable<Audit>>,
    log: AuditLog,
}

impl AuditLayer {
    /// A layer recording into `log`; fails when the policy table's options
    /// do not decode as `Audit` (they come from the same proto).
    pub fn new(log: AuditLog) -> Result<Self, keel_rpc::Error> {
        let audits = OptionTable::new(&USER_SERVICE_POLICY, "user.v1.audit")?;
        Ok(AuditLayer {
            audits: Arc::new(audits),
            log,
        })
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audited {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`AuditLayer`].
#[derive(Clone, Debug)]
pub struct Audited<S> {
    inner: S,
    layer: AuditLayer,
}

impl<S, B, ResBody> Service<http::Request<B>> for Audited<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    // tonic's servers answer with a boxed future.
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AuditFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // A table lookup by the method's index: nothing is parsed per call.
        let pending = match CalledMethod::of(&request) {
            Some(called) => self.layer.audits.get(called).map(|audit| Pending {
                log: self.layer.log.clone(),
                action: audit.action.clone(),
                method: called.policy().path,
                subject: (request.extensions().get::<keel_rpc::auth::Caller>())
                    .map(|caller| caller.0.sub.clone()),
            }),
            None => None,
        };
        AuditFuture {
            inner: self.inner.call(request),
            pending,
        }
    }
}

/// An audited call until its response starts.
#[derive(Debug)]
struct Pending {
    log: AuditLog,
    action: String,
    method: &'static str,
    subject: Option<String>,
}

/// The future of [`Audited`]: the server's, recording an audited call
/// with its outcome when the response comes (see the [module docs](self)).
#[derive(Debug)]
pub struct AuditFuture<F> {
    inner: F,
    /// `None` for a method that is not audited, and once recorded.
    pending: Option<Pending>,
}

impl<F, ResBody, E> Future for AuditFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let result = ready!(Pin::new(&mut self.inner).poll(cx));
        if let Some(pending) = self.pending.take() {
            let outcome = match &result {
                // A status alone (trailers-only), or the answer going out.
                Ok(response) => tonic::Status::from_header_map(response.headers())
                    .map_or(tonic::Code::Ok, |status| status.code()),
                Err(_) => tonic::Code::Internal,
            };
            pending.log.record(Entry {
                action: pending.action,
                method: pending.method,
                subject: pending.subject,
                outcome: code_name(outcome),
            });
        }
        Poll::Ready(result)
    }
}

impl<F> Drop for AuditFuture<F> {
    /// Dropped before the response: the client went away, or the deadline
    /// passed, while the handler may have run.
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.log.record(Entry {
                action: pending.action,
                method: pending.method,
                subject: pending.subject,
                outcome: code_name(tonic::Code::Cancelled),
            });
        }
    }
}

/// The canonical name of a gRPC code, as the gRPC spec writes it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
