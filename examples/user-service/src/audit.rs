//! The audit log of the methods annotated `(user.v1.audit)` in user.proto:
//! a layer of the service's own inside Keel's pipeline, which records who
//! called which audited method, and nothing for the others.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use keel_rpc::pipeline::{CalledMethod, OptionTable};
use tower::{Layer, Service};

use crate::user_v1::{Audit, USER_SERVICE_POLICY};

/// The most entries [`AuditLog`] keeps (the oldest give way).
const KEPT: usize = 1024;

/// One audited call, as it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The option's `action` (`user.create`).
    pub action: String,
    /// The method's path.
    pub method: &'static str,
    /// The verified token's subject.
    pub subject: Option<String>,
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

impl<S, B> Service<http::Request<B>> for Audited<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // A table lookup by the method's index: nothing is parsed per call.
        if let Some(called) = CalledMethod::of(&request)
            && let Some(audit) = self.layer.audits.get(called)
        {
            let subject = (request.extensions().get::<keel_rpc::auth::Caller>())
                .map(|caller| caller.0.sub.clone());
            self.layer.log.record(Entry {
                action: audit.action.clone(),
                method: called.policy().path,
                subject,
            });
        }
        self.inner.call(request)
    }
}
