//! REST/JSON on the gRPC port: the `google.api.http` routes of the served
//! methods. A request that is not gRPC and matches a route becomes the
//! method's request message (path variables, then the body, then query
//! parameters for the fields left, in the proto3 JSON mapping), is sent as
//! a gRPC call to the same router, so the method's pipeline (auth,
//! metrics, deadline, limits, validation, recovery) and handler run as for
//! any gRPC call, and the answer comes back as JSON: the response message,
//! or a `google.rpc.Status` with the usual HTTP status.
//!
//! A server-streaming method answers newline-delimited JSON (`{"result":
//! …}` a line per message, `{"error": …}` if the stream ends with one), or
//! Server-Sent Events when the client accepts `text/event-stream`. A route
//! of a client- or bidi-streaming method answers 501.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    ReflectMessage as _,
};
use serde_json::{Map, Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use crate::deadline::{GRPC_TIMEOUT, decode_timeout, encode_timeout};
use crate::metrics::Protocol;
use crate::policy::{HttpRoute, MethodKind, PathSegment, ServicePolicy};

/// One route, with the descriptors it needs, ready to match.
#[derive(Debug)]
struct Route {
    http: &'static HttpRoute,
    /// The gRPC path of its method (`/user.v1.UserService/GetUser`).
    grpc_path: &'static str,
    kind: MethodKind,
    input: MessageDescriptor,
    output: MessageDescriptor,
    /// Whether its `timeout` query parameter is the call's deadline: the
    /// request message has no field of that name.
    timeout_parameter: bool,
    /// Whether the request holds a `debug_redact` field (anywhere): then a
    /// request that does not decode is refused without the decoder's
    /// message, which may quote a value.
    sensitive: bool,
}

/// Every route of the served services.
#[derive(Debug)]
pub(crate) struct Routes {
    routes: Vec<Route>,
    /// How a request is read.
    reading: Reading,
}

/// How REST requests are read, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    /// The longest request body taken (`server.max_message_bytes`).
    pub(crate) max_body: usize,
    /// Whether fields the request message does not have are ignored rather than refused
    /// (`http.discard_unknown_fields`).
    pub(crate) discard_unknown: bool,
}

/// Why the routes could not be prepared: codegen's descriptors do not
/// describe the messages it named (a mismatched build).
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The descriptor set does not decode.
    #[error("the descriptors of {service}: {source}")]
    Descriptors {
        /// The service.
        service: &'static str,
        /// Why.
        source: prost_reflect::DescriptorError,
    },
    /// A message is not in them.
    #[error("{message} (of {service}) is not in its descriptors")]
    Missing {
        /// The service.
        service: &'static str,
        /// The message.
        message: &'static str,
    },
}

impl Routes {
    /// The routes of `services`; `None` when none has any.
    pub(crate) fn new(
        services: &[&'static ServicePolicy],
        reading: Reading,
    ) -> Result<Option<Arc<Routes>>, RestError> {
        let mut routes = Vec::new();
        let mut pools: Vec<(*const u8, DescriptorPool)> = Vec::new();
        for service in services {
            for method in service.methods {
                for http in method.http {
                    let key = http.descriptors.as_ptr();
                    let pool = match pools.iter().find(|(k, _)| *k == key) {
                        Some((_, pool)) => pool.clone(),
                        None => {
                            let pool =
                                DescriptorPool::decode(http.descriptors).map_err(|source| {
                                    RestError::Descriptors {
                                        service: service.name,
                                        source,
                                    }
                                })?;
                            pools.push((key, pool.clone()));
                            pool
                        }
                    };
                    let message = |name: &'static str| {
                        pool.get_message_by_name(name).ok_or(RestError::Missing {
                            service: service.name,
                            message: name,
                        })
                    };
                    let input = message(http.input)?;
                    routes.push(Route {
                        http,
                        grpc_path: method.path,
                        kind: method.kind,
                        timeout_parameter: field_named(&input, TIMEOUT).is_none(),
                        sensitive: has_redacted(&input, &mut Vec::new()),
                        input,
                        output: message(http.output)?,
                    });
                }
            }
        }
        Ok((!routes.is_empty()).then(|| Arc::new(Routes { routes, reading })))
    }

    /// The index of the route `method` and `path` match, with the values of
    /// its variables.
    fn find(&self, method: &Method, path: &str) -> Option<(usize, Vec<(&'static str, String)>)> {
        self.routes.iter().enumerate().find_map(|(index, route)| {
            if route.http.method != method.as_str() {
                return None;
            }
            let path = path.strip_prefix('/')?;
            let path = match route.http.verb {
                Some(verb) => path.strip_suffix(verb)?.strip_suffix(':')?,
                None => path,
            };
            let parts: Vec<&str> = path.split('/').collect();
            let mut vars = Vec::new();
            matches(route.http.path, &parts, &mut vars).then_some((index, vars))
        })
    }
}

/// Whether `pattern` matches all of `parts`, collecting variables.
fn matches(
    pattern: &'static [PathSegment],
    parts: &[&str],
    vars: &mut Vec<(&'static str, String)>,
) -> bool {
    let Some((first, rest)) = pattern.split_first() else {
        return parts.is_empty();
    };
    match first {
        PathSegment::Literal(literal) => {
            parts.first() == Some(literal) && matches(rest, &parts[1..], vars)
        }
        PathSegment::Single => {
            parts.first().is_some_and(|p| !p.is_empty()) && matches(rest, &parts[1..], vars)
        }
        // `**` is last: the rest of the path.
        PathSegment::Rest => true,
        PathSegment::Variable {
            field,
            pattern: inner,
        } => {
            let taken = match inner.last() {
                Some(PathSegment::Rest) => parts.len(),
                _ => inner.len(),
            };
            if taken > parts.len() || taken == 0 && !inner.is_empty() {
                return false;
            }
            let (value, after) = parts.split_at(taken);
            let mut ignored = Vec::new();
            if !matches(inner, value, &mut ignored) {
                return false;
            }
            vars.push((field, percent_decode(&value.join("/"))));
            matches(rest, after, vars)
        }
    }
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The service of requests that are not gRPC: those matching a route are
/// transcoded into calls of the router, the others answered 404.
#[derive(Clone, Debug)]
pub(crate) struct Rest<S> {
    routes: Arc<Routes>,
    inner: S,
}

impl<S> Rest<S> {
    pub(crate) fn new(routes: Arc<Routes>, inner: S) -> Self {
        Rest { routes, inner }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<Request<Body>> for Rest<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// Only requests that are not gRPC come here: the connection's service
    /// sends gRPC calls straight to the router.
    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let found = self.routes.find(request.method(), request.uri().path());
        let Some((index, vars)) = found else {
            // No route: a REST client's mistake, answered as one.
            let message = format!("no route for {} {}", request.method(), request.uri().path());
            return Box::pin(std::future::ready(Ok(json_response(
                StatusCode::NOT_FOUND,
                status_json(Code::NotFound, &message, Vec::new()),
            ))));
        };
        let routes = self.routes.clone();
        // Take the readied service; the clone is readied next time.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let route = &routes.routes[index];
            Ok(transcode(route, vars, request, inner, routes.reading)
                .await
                .unwrap_or_else(|refused| refused))
        })
    }
}

/// Runs one REST call through the gRPC router.
async fn transcode<S>(
    route: &Route,
    vars: Vec<(&'static str, String)>,
    request: Request<Body>,
    mut inner: S,
    reading: Reading,
) -> Result<Response<Body>, Response<Body>>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    if matches!(
        route.kind,
        MethodKind::ClientStreaming | MethodKind::BidiStreaming
    ) {
        return Err(error(
            Code::Unimplemented,
            "this route's method takes a stream of requests, which REST does not carry",
        ));
    }
    let events = request
        .headers()
        .get(header::ACCEPT)
        .is_some_and(|a| a.as_bytes().windows(17).any(|w| w == b"text/event-stream"));
    let (parts, body) = request.into_parts();
    let max_body = reading.max_body;
    let body = match Limited::new(body, max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                status_json(
                    Code::ResourceExhausted,
                    &format!("the body is over the limit of {max_body} bytes"),
                    Vec::new(),
                ),
            ));
        }
        Err(e) => {
            return Err(error(
                Code::InvalidArgument,
                &format!("reading the body: {e}"),
            ));
        }
    };
    let (message, query_timeout) = request_message(
        route,
        &vars,
        parts.uri.query(),
        &body,
        reading.discard_unknown,
    )
    .map_err(|problem| error(Code::InvalidArgument, &problem))?;
    let timeout = requested_timeout(&parts.headers, query_timeout)
        .map_err(|problem| error(Code::InvalidArgument, &problem))?;

    let mut frame = BytesMut::with_capacity(5 + message.encoded_len());
    frame.put_u8(0);
    frame.put_u32(message.encoded_len() as u32);
    message
        .encode(&mut frame)
        .map_err(|e| error(Code::Internal, &e.to_string()))?;
    let mut call = Request::builder()
        .method(Method::POST)
        .uri(route.grpc_path)
        .version(http::Version::HTTP_2);
    if let Some(headers) = call.headers_mut() {
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                headers.append(name, value.clone());
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        // The shorter of the two, as the pipeline reads `grpc-timeout`.
        if let Some(timeout) = timeout {
            let given = headers.get(&GRPC_TIMEOUT).and_then(decode_timeout);
            if given.is_none_or(|given| timeout < given) {
                headers.insert(&GRPC_TIMEOUT, encode_timeout(timeout));
            }
        }
    }
    let Ok(mut call) = call.body(Body::from(frame.freeze())) else {
        return Err(error(Code::Internal, "building the call"));
    };
    // The connection's address and certificates, for auth and rate limits.
    *call.extensions_mut() = parts.extensions;
    call.extensions_mut().insert(Protocol::Rest);
    let Ok(answer) = inner.call(call).await;
    let (answer_parts, answer_body) = answer.into_parts();
    if route.kind == MethodKind::ServerStreaming {
        // Refused before any message (auth, limits): a status alone.
        if let Some(status) = tonic::Status::from_header_map(&answer_parts.headers)
            && status.code() != Code::Ok
        {
            return Err(status_response(&status));
        }
        return Ok(stream(route.output.clone(), answer_body, events));
    }
    let collected = answer_body
        .collect()
        .await
        .map_err(|e| error(Code::Internal, &format!("reading the answer: {e}")))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let status = tonic::Status::from_header_map(&answer_parts.headers)
        .or_else(|| tonic::Status::from_header_map(&trailers))
        .unwrap_or_else(|| tonic::Status::unknown("the method answered without a status"));
    if status.code() != Code::Ok {
        return Err(status_response(&status));
    }
    let payload = data
        .get(5..)
        .ok_or_else(|| error(Code::Internal, "no response message"))?;
    let answer = DynamicMessage::decode(route.output.clone(), payload)
        .map_err(|e| error(Code::Internal, &format!("decoding the answer: {e}")))?;
    let mut value = serde_json::to_value(&answer)
        .map_err(|e| error(Code::Internal, &format!("the answer as JSON: {e}")))?;
    if let Some(field) = route.http.response_body
        && let Some(field) = route.output.get_field_by_name(field)
    {
        value = value
            .get_mut(field.json_name())
            .map(Value::take)
            .unwrap_or(Value::Null);
    }
    Ok(json_response(StatusCode::OK, value))
}

/// A server stream's answer: each message as it arrives, as an NDJSON line
/// or an SSE event, and the stream's error, if it ends with one.
fn stream(output: MessageDescriptor, body: Body, events: bool) -> Response<Body> {
    struct State {
        body: Body,
        buffer: BytesMut,
        output: MessageDescriptor,
        events: bool,
        done: bool,
    }
    let state = State {
        body,
        buffer: BytesMut::new(),
        output,
        events,
        done: false,
    };
    let line = |events: bool, kind: &str, value: Value| -> Bytes {
        match events {
            true if kind == "error" => format!("event: error\ndata: {value}\n\n").into(),
            true => format!("data: {value}\n\n").into(),
            false => format!("{}\n", json!({ kind: value })).into(),
        }
    };
    let chunks = futures_util::stream::unfold(state, move |mut state| async move {
        loop {
            if state.done {
                return None;
            }
            // A whole message in the buffer: send it.
            if let [_flag, a, b, c, d, ..] = state.buffer[..] {
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if state.buffer.len() >= 5 + len {
                    let frame = state.buffer.split_to(5 + len);
                    let value = DynamicMessage::decode(state.output.clone(), &frame[5..])
                        .map_err(|e| e.to_string())
                        .and_then(|m| serde_json::to_value(&m).map_err(|e| e.to_string()));
                    let chunk = match value {
                        Ok(value) => line(state.events, "result", value),
                        Err(e) => {
                            state.done = true;
                            let status =
                                tonic::Status::internal(format!("decoding a message: {e}"));
                            line(
                                state.events,
                                "error",
                                status_json(status.code(), status.message(), Vec::new()),
                            )
                        }
                    };
                    return Some((Ok::<Bytes, Infallible>(chunk), state));
                }
            }
            match state.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => state.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        state.done = true;
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let status = tonic::Status::from_header_map(&trailers);
                        match status.filter(|s| s.code() != Code::Ok) {
                            Some(status) => {
                                let value =
                                    status_json(status.code(), status.message(), Vec::new());
                                return Some((Ok(line(state.events, "error", value)), state));
                            }
                            None => return None,
                        }
                    }
                },
                Some(Err(e)) => {
                    state.done = true;
                    let value = status_json(
                        Code::Internal,
                        &format!("the stream broke: {e}"),
                        Vec::new(),
                    );
                    return Some((Ok(line(state.events, "error", value)), state));
                }
                None => return None,
            }
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if events {
            "text/event-stream"
        } else {
            "application/x-ndjson"
        }),
    );
    response
}

/// The query parameter and header of a REST call's deadline.
const TIMEOUT: &str = "timeout";

/// The deadline a REST client asked for: the `timeout` header, else the
/// `timeout` query parameter (`query`, as [`request_message`] found it), as
/// a number of seconds or with a unit: `250ms`, `1.5s`, `2m`.
fn requested_timeout(
    headers: &http::HeaderMap,
    query: Option<String>,
) -> Result<Option<Duration>, String> {
    let text = match headers.get(TIMEOUT) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| "the timeout header is not text".to_owned())?
                .to_owned(),
        ),
        None => query,
    };
    text.map(|text| {
        parse_timeout(text.trim())
            .ok_or_else(|| format!("timeout: {text:?} is not a duration such as 500ms, 1.5s or 2m"))
    })
    .transpose()
}

/// `text` as a duration: a non-negative number, in seconds or with one of
/// the units `ns`, `us`, `ms`, `s`, `m`, `h`.
fn parse_timeout(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ns" => number / 1e9,
        "us" | "µs" => number / 1e6,
        "ms" => number / 1e3,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// Headers of the REST request not passed to the gRPC call.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "accept",
    TIMEOUT,
];

/// The method's request message from the path variables, the body and the
/// query, in that order of precedence for a field set twice; and the
/// `timeout` query parameter, when it is the deadline rather than a field.
/// With `discard_unknown`, fields the message does not have are left out.
fn request_message(
    route: &Route,
    vars: &[(&'static str, String)],
    query: Option<&str>,
    body: &Bytes,
    discard_unknown: bool,
) -> Result<(DynamicMessage, Option<String>), String> {
    let mut json = match route.http.body {
        None => Map::new(),
        Some(body_field) => {
            let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Object(Map::new())
            } else {
                serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?
            };
            match body_field {
                "*" => match value {
                    Value::Object(map) => map,
                    _ => return Err("the body must be a JSON object".to_owned()),
                },
                field => Map::from_iter([(field.to_owned(), value)]),
            }
        }
    };
    let mut bound: Vec<String> = Vec::new();
    for (path, value) in vars {
        // The template's variables are fields (codegen checked them).
        set(&mut json, &route.input, path, value, false, false)?;
        bound.push((*path).to_owned());
    }
    let mut timeout = None;
    if let Some(query) = query {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if route.timeout_parameter && key == TIMEOUT {
                timeout = Some(value.into_owned());
                continue;
            }
            if route.http.body == Some("*") {
                return Err(
                    "this route takes the whole request in its body: no query parameters"
                        .to_owned(),
                );
            }
            if bound.iter().any(|b| *b == key) {
                return Err(format!("{key}: set by the path already"));
            }
            set(&mut json, &route.input, &key, &value, true, discard_unknown)?;
        }
    }
    let options = DeserializeOptions::new().deny_unknown_fields(!discard_unknown);
    let message = DynamicMessage::deserialize_with_options(
        route.input.clone(),
        Value::Object(json),
        &options,
    )
    .map_err(|e| match route.sensitive {
        true => format!(
            "invalid request: not a {} in the JSON mapping (a field that is not there, or a \
             value of the wrong type)",
            route.input.full_name()
        ),
        false => format!("invalid request: {e}"),
    })?;
    Ok((message, timeout))
}

/// Whether `message`, or a message it holds, has a `debug_redact` field.
fn has_redacted(message: &MessageDescriptor, seen: &mut Vec<String>) -> bool {
    if seen.iter().any(|s| s == message.full_name()) {
        return false;
    }
    seen.push(message.full_name().to_owned());
    message.fields().any(|field| {
        let options = field.options();
        let redacted = options
            .descriptor()
            .get_field_by_name("debug_redact")
            .is_some_and(|f| options.get_field(&f).as_bool() == Some(true));
        redacted || matches!(field.kind(), Kind::Message(inner) if has_redacted(&inner, seen))
    })
}

/// Sets the field at `path` (dotted, proto or JSON names) of `json` to the
/// text `value`, as its type reads it; a repeated field gets one more item.
/// A path naming no field is an error, or, with `discard_unknown`, left out.
fn set(
    json: &mut Map<String, Value>,
    message: &MessageDescriptor,
    path: &str,
    value: &str,
    repeat: bool,
    discard_unknown: bool,
) -> Result<(), String> {
    // The fields the path names, found before anything is set, so that a
    // path left out sets nothing on its way.
    let mut fields = Vec::new();
    let mut message = message.clone();
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Some(field) = field_named(&message, part) else {
            return match discard_unknown {
                true => Ok(()),
                false => Err(format!(
                    "{path}: no field {part:?} in {}",
                    message.full_name()
                )),
            };
        };
        if i + 1 < parts.len() {
            let Kind::Message(inner) = field.kind() else {
                return Err(format!("{path}: {part:?} is not a message field"));
            };
            message = inner;
        }
        fields.push(field);
    }
    let Some((field, parents)) = fields.split_last() else {
        return Ok(());
    };
    let mut object = json;
    for (parent, part) in parents.iter().zip(&parts) {
        let entry = object
            .entry(parent.name().to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = entry else {
            return Err(format!("{path}: {part:?} is set twice"));
        };
        object = next;
    }
    let item = scalar(field, value).map_err(|problem| format!("{path}: {problem}"))?;
    let key = field.name().to_owned();
    if field.is_list() {
        match object
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(item),
            _ => return Err(format!("{path}: set twice")),
        }
    } else if repeat && object.contains_key(&key) {
        return Err(format!("{path}: given twice, and it is not repeated"));
    } else {
        object.insert(key, item);
    }
    Ok(())
}

fn field_named(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_name(name)
        .or_else(|| message.get_field_by_json_name(name))
}

/// A path or query value as the JSON its field reads.
fn scalar(field: &FieldDescriptor, value: &str) -> Result<Value, String> {
    if field.is_map() {
        return Err("a map field cannot be set from a path or query".to_owned());
    }
    Ok(match field.kind() {
        Kind::Bool => match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => return Err(format!("{other:?} is not true or false")),
        },
        // Numbers, enums (by name), bytes (base64), Timestamps and the
        // like are strings in the JSON mapping.
        _ => Value::String(value.to_owned()),
    })
}

/// A refusal before the call: `code` and `message` as a Status JSON.
fn error(code: Code, message: &str) -> Response<Body> {
    json_response(http_status(code), status_json(code, message, Vec::new()))
}

/// The JSON answer of a failed call, with its details.
fn status_response(status: &tonic::Status) -> Response<Body> {
    let details = status.get_error_details();
    let mut listed = Vec::new();
    if let Some(bad) = details.bad_request() {
        let violations: Vec<Value> = bad
            .field_violations
            .iter()
            .map(|v| json!({ "field": v.field, "description": v.description, "reason": v.reason }))
            .collect();
        listed.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": violations,
        }));
    }
    if let Some(retry) = details.retry_info()
        && let Some(delay) = retry.retry_delay
    {
        listed.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{}s", delay.as_secs_f64()),
        }));
    }
    let mut response = json_response(
        http_status(status.code()),
        status_json(status.code(), status.message(), listed),
    );
    if status.code() == Code::Unauthenticated {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn status_json(code: Code, message: &str, details: Vec<Value>) -> Value {
    json!({ "code": code as i32, "message": message, "details": details })
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The HTTP status of a gRPC code, as grpc-gateway and Google's APIs map them.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ROUTE: [PathSegment; 4] = [
        PathSegment::Literal("v1"),
        PathSegment::Variable {
            field: "name",
            pattern: &[PathSegment::Literal("users"), PathSegment::Single],
        },
        PathSegment::Literal("files"),
        PathSegment::Variable {
            field: "path",
            pattern: &[PathSegment::Rest],
        },
    ];

    #[test]
    fn templates_match_and_bind_their_variables() {
        let mut vars = Vec::new();
        let parts: Vec<&str> = "v1/users/u%2D1/files/a/b.txt".split('/').collect();
        assert!(matches(&ROUTE, &parts, &mut vars));
        assert_eq!(
            vars,
            vec![
                ("name", "users/u-1".to_owned()),
                ("path", "a/b.txt".to_owned())
            ]
        );
        for path in [
            "v1/groups/g/files/a",
            "v1/users/files/a",
            "v2/users/u/files/a",
        ] {
            let parts: Vec<&str> = path.split('/').collect();
            assert!(!matches(&ROUTE, &parts, &mut Vec::new()), "{path}");
        }
    }

    #[test]
    fn timeouts_read_as_seconds_or_with_a_unit() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("2", Some(ms(2000))),
            ("1.5s", Some(ms(1500))),
            ("250ms", Some(ms(250))),
            ("2m", Some(ms(120_000))),
            ("1h", Some(ms(3_600_000))),
            ("1500us", Some(ms(1) + Duration::from_micros(500))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            ("-1s", None),
            ("5 parsecs", None),
            ("1.2.3s", None),
            ("ms", None),
        ] {
            assert_eq!(parse_timeout(text), want, "{text:?}");
        }
    }

    #[test]
    fn codes_map_to_http_statuses() {
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
