//! The standard health service (`grpc.health.v1.Health`), as the health
//! protocol describes it.
//!
//! tonic-health answers `Watch` of a service it does not know with a
//! `NOT_FOUND` status, which ends the stream; the protocol (and grpc-go) send
//! `SERVICE_UNKNOWN` on a stream that stays open and reports the service's
//! status once it is set. Watchers that need a dependency to be ready before
//! they route to a process rely on that, so Keel serves its own.
//!
//! Its calls are behind no pipeline, so [`Arrived`] gives their requests
//! the pipeline's `server.request_body_timeout`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{self, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::observe::Arriving;

/// The serving status of each name a [`Server`](super::Server) reports
/// (each service, and `""` for the whole server): a cheap handle, cloned
/// wherever a status changes.
///
/// [`Server::health`](super::Server::health) gives the server's own, so that
/// a process can report names of its own (a dependency's readiness, say) to
/// the standard health service.
///
/// ```
/// use keel_rpc::serve::Health;
/// use tonic_health::pb::health_check_response::ServingStatus;
///
/// let health = Health::default();
/// assert_eq!(health.status("db"), None);
/// health.set("db", ServingStatus::Serving);
/// assert_eq!(health.status("db"), Some(ServingStatus::Serving));
/// ```
#[derive(Clone, Debug)]
pub struct Health {
    statuses: watch::Sender<BTreeMap<String, ServingStatus>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            statuses: watch::Sender::new(BTreeMap::new()),
        }
    }
}

impl Health {
    /// Sets the status reported for `name`; `Watch` streams of `name` get it
    /// at once when it differs from the last one they sent.
    pub fn set(&self, name: &str, status: ServingStatus) {
        self.statuses.send_if_modified(|statuses| {
            let old = statuses.insert(name.to_owned(), status);
            old != Some(status)
        });
    }

    /// The status of `name`, or `None` when none was ever set.
    pub fn status(&self, name: &str) -> Option<ServingStatus> {
        self.statuses.borrow().get(name).copied()
    }

    /// The `grpc.health.v1.Health` service answering from these statuses.
    pub(crate) fn service(&self, request_body_timeout: Duration) -> Arrived<HealthServer<Self>> {
        Arrived {
            inner: HealthServer::new(self.clone()),
            limit: request_body_timeout,
        }
    }
}

/// The health service, whose requests must arrive within
/// `server.request_body_timeout` as a pipeline's unary calls' do: `Check`
/// and `Watch` both take one message, and the service is behind no
/// pipeline, so without it an HTTP/2 stream that sends its headers alone
/// would hold a call open (and its connection busy) for good.
#[derive(Clone, Debug)]
pub(crate) struct Arrived<S> {
    inner: S,
    limit: Duration,
}

impl<S: NamedService> NamedService for Arrived<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Arrived<S>
where
    S: tower::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let limit = self.limit;
        self.inner
            .call(request.map(|body| tonic::body::Body::new(Arriving::new(body, limit))))
    }
}

/// Responses of one `Watch` call.
type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl health_server::Health for Health {
    /// The status of the named service; `NOT_FOUND` for a name never set,
    /// as the protocol says.
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let name = &request.get_ref().service;
        match self.status(name) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service {name:?}"))),
        }
    }

    type WatchStream = Statuses;

    /// The status now (`SERVICE_UNKNOWN` for a name never set), then each
    /// change of it, until the client goes away or the server drains.
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Statuses>, Status> {
        let name = request.into_inner().service;
        let mut last = None;
        let changes = WatchStream::new(self.statuses.subscribe()).filter_map(move |statuses| {
            let status = statuses
                .get(&name)
                .copied()
                .unwrap_or(ServingStatus::ServiceUnknown);
            // Other names' changes wake the stream too; only this one's are sent.
            (last.replace(status) != Some(status)).then(|| Ok(response(status)))
        });
        Ok(Response::new(Box::pin(changes)))
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_server::Health as _;

    fn request(name: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: name.to_owned(),
        })
    }

    fn status_of(item: Option<Result<HealthCheckResponse, Status>>) -> ServingStatus {
        let response = item.expect("a message").expect("not an error");
        ServingStatus::try_from(response.status).expect("a known status")
    }

    #[tokio::test]
    async fn check_of_an_unknown_name_is_not_found() {
        let health = Health::default();
        let error = health.check(request("nope")).await.expect_err("unknown");
        assert_eq!(error.code(), tonic::Code::NotFound);
        health.set("nope", ServingStatus::NotServing);
        let reply = health.check(request("nope")).await.expect("known now");
        assert_eq!(reply.get_ref().status(), ServingStatus::NotServing);
    }

    #[tokio::test]
    async fn watch_sends_each_change_of_its_name_once() {
        let health = Health::default();
        let mut stream = health
            .watch(request("a"))
            .await
            .expect("watch")
            .into_inner();
        assert_eq!(
            status_of(stream.next().await),
            ServingStatus::ServiceUnknown
        );
        health.set("b", ServingStatus::Serving);
        health.set("a", ServingStatus::Serving);
        assert_eq!(status_of(stream.next().await), ServingStatus::Serving);
        health.set("a", ServingStatus::Serving);
        health.set("a", ServingStatus::NotServing);
        assert_eq!(status_of(stream.next().await), ServingStatus::NotServing);
        // Another name's change sends nothing (and a status set again
        // unchanged, above, sent nothing either).
        health.set("b", ServingStatus::NotServing);
        let next = tokio::time::timeout(std::time::Duration::from_millis(50), stream.next());
        assert!(next.await.is_err(), "no message for another name's change");
    }
}
