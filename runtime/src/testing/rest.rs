//! REST calls to a [`TestServer`](super::TestServer) over HTTP/1.1, as curl
//! or a browser's `fetch` makes them: the `google.api.http` routes, with a
//! bearer token, JSON bodies and the answer's status, headers and JSON.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long [`RestRequest::send`] waits for the whole answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A REST client of one [`TestServer`](super::TestServer):
/// [`TestServer::rest`](super::TestServer::rest).
///
/// ```no_run
/// # async fn run(server: keel_rpc::testing::TestServer, token: String)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
///
/// let rest = server.rest();
/// let created = rest
///     .post("/v1/users", &json!({"name": "Ada", "email": "ada@example.com"}))
///     .token(&token)
///     .send()
///     .await?;
/// assert_eq!(created.status, 200);
/// assert_eq!(created.json()?["name"], "Ada");
///
/// let refused = rest.get("/v1/users/u-1").send().await?; // no token
/// assert_eq!(refused.status, 401);
/// assert_eq!(refused.json()?["code"], 16); // google.rpc.Status: UNAUTHENTICATED
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Rest {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// One request being built: [`Rest::get`], [`Rest::post`], … then
/// [`send`](RestRequest::send).
#[derive(Debug)]
#[must_use = "a request does nothing until sent"]
pub struct RestRequest {
    client: Client<HttpConnector, Full<Bytes>>,
    request: Result<http::request::Builder, RestError>,
    body: Bytes,
}

/// The answer to a [`RestRequest`], read whole.
#[derive(Clone, Debug)]
pub struct RestResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, as sent.
    pub body: Bytes,
}

/// Why a REST request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The request could not be built (a bad path or header).
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    /// A header name or value is not valid HTTP.
    #[error("invalid header {0:?}")]
    Header(String),
    /// The server could not be reached, or the connection failed.
    #[error("sending the request: {0}")]
    Send(#[from] hyper_util::client::legacy::Error),
    /// The answer's body could not be read.
    #[error("reading the answer: {0}")]
    Body(#[from] hyper::Error),
    /// No whole answer within ten seconds.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Rest {
    pub(super) fn new(addr: SocketAddr) -> Rest {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Rest { addr, client }
    }

    /// A request with `method` to `path` (with its query, if any).
    pub fn request(&self, method: Method, path: &str) -> RestRequest {
        let uri = format!("http://{}{path}", self.addr);
        RestRequest {
            client: self.client.clone(),
            request: Ok(http::Request::builder().method(method).uri(uri)),
            body: Bytes::new(),
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> RestRequest {
        self.request(Method::GET, path)
    }

    /// `POST path` with `body` as JSON.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> RestRequest {
        self.request(Method::POST, path).json(body)
    }

    /// `PUT path` with `body` as JSON.
    pub fn put(&self, path: &str, body: &serde_json::Value) -> RestRequest {
        self.request(Method::PUT, path).json(body)
    }

    /// `PATCH path` with `body` as JSON.
    pub fn patch(&self, path: &str, body: &serde_json::Value) -> RestRequest {
        self.request(Method::PATCH, path).json(body)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> RestRequest {
        self.request(Method::DELETE, path)
    }
}

impl RestRequest {
    /// Adds `authorization: Bearer <token>`.
    pub fn token(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let parsed = (HeaderName::try_from(name), HeaderValue::try_from(value));
        self.request = match (self.request, parsed) {
            (Ok(request), (Ok(name), Ok(value))) => Ok(request.header(name, value)),
            (Err(e), _) => Err(e),
            (Ok(_), _) => Err(RestError::Header(name.to_owned())),
        };
        self
    }

    /// Sends `body` as the JSON body (`content-type: application/json`).
    pub fn json(self, body: &serde_json::Value) -> Self {
        self.body(body.to_string(), "application/json")
    }

    /// Sends `body` as it is, with `content_type` (to test what a server
    /// makes of bodies that are not JSON).
    pub fn body(mut self, body: impl Into<Bytes>, content_type: &str) -> Self {
        self.body = body.into();
        self.header("content-type", content_type)
    }

    /// Sends the request and reads the whole answer.
    pub async fn send(self) -> Result<RestResponse, RestError> {
        let request = self.request?.body(Full::new(self.body))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(RestResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(SEND_TIMEOUT, exchange)
            .await
            .map_err(|_| RestError::Timeout(SEND_TIMEOUT))?
    }
}

impl RestResponse {
    /// The body as JSON (Keel's answers, errors included, are JSON: an
    /// error is a `google.rpc.Status` with `code`, `message` and `details`).
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The value of header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
