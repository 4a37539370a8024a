//! The request side of a REST call: the gRPC call it becomes, with its
//! method's request message (path variables, then the body, then query
//! parameters, in the proto3 JSON mapping) in one frame, the REST
//! request's headers and its `timeout` as the call's `grpc-timeout`.
//!
//! What is checked before the body is read: a method that needs a token
//! gets a request without an `authorization` header as a call without a
//! message, which its pipeline refuses (`UNAUTHENTICATED`, counted); the
//! body must be declared JSON (415 otherwise). The body must arrive within
//! `server.request_body_timeout` (408 otherwise, with `connection: close`
//! on HTTP/1.1, as the rest of it is never read). The body is parsed once,
//! strictly (a key given twice is refused); a request that does not make
//! the message is explained in the caller's terms (which field, what it
//! must be), quoting nothing unbounded.

use std::fmt;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use prometheus::IntCounter;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};
use tonic::Code;

use super::response::{bounded, error, quoted, refuse};
use super::routes::{Bound, Route};
use crate::metrics::Protocol;
use crate::policy::MethodKind;
use crate::wire::{GRPC_TIMEOUT, decode_timeout, encode_message, encode_timeout};

/// How REST requests are read, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reading {
    /// The longest request body taken (`server.max_message_bytes`).
    pub(super) max_body: usize,
    /// How long the body has to arrive (`server.request_body_timeout`).
    pub(super) body_timeout: Duration,
    /// Whether fields the request message does not have are ignored rather than refused
    /// (`http.discard_unknown_fields`).
    pub(super) discard_unknown: bool,
}

/// The gRPC call of one REST request of `route`, whose path bound `vars`,
/// and whether its client accepts Server-Sent Events; or, when the request
/// is refused before the call, the answer.
pub(super) async fn grpc_call(
    route: &Route,
    vars: Bound,
    request: Request<Body>,
    reading: Reading,
) -> Result<(Request<Body>, bool), Response<Body>> {
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
    // Auth before the body: without a token, a method that needs one gets
    // a call without a message (the body is never read), which its
    // pipeline refuses, UNAUTHENTICATED, as any call without a token, and
    // counts. (Only a missing header: whatever else the header holds is the
    // pipeline's to judge. Were the call ever let through, it would still
    // carry no message, which tonic refuses.)
    if route.needs_token && !parts.headers.contains_key(header::AUTHORIZATION) {
        return Ok((
            call(route, parts, Body::empty(), None).map_err(|e| *e)?,
            events,
        ));
    }
    let vars = vars.map_err(|problem| error(Code::InvalidArgument, &problem))?;
    let body = match route.http.body {
        // A route without a body reads none.
        None => Bytes::new(),
        Some(_) => {
            json_body(&parts.headers, &body).map_err(|problem| {
                refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    Code::InvalidArgument,
                    &format!("{problem}: send the body as content-type: application/json"),
                )
            })?;
            read_body(body, reading, parts.version, route.late.as_ref()).await?
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

    let frame = encode_message(&message).map_err(|e| error(Code::Internal, &e.to_string()))?;
    Ok((
        call(route, parts, Body::from(frame), timeout).map_err(|e| *e)?,
        events,
    ))
}

/// The gRPC call of `route` with the REST request's `parts` (its headers
/// but those of HTTP itself, its extensions), `body`, and the shorter of
/// `timeout` and its `grpc-timeout`; or the answer when it cannot be built.
fn call(
    route: &Route,
    parts: http::request::Parts,
    body: Body,
    timeout: Option<Duration>,
) -> Result<Request<Body>, Box<Response<Body>>> {
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
    let Ok(mut call) = call.body(body) else {
        return Err(Box::new(error(Code::Internal, "building the call")));
    };
    // The connection's address and certificates, for auth and rate limits.
    *call.extensions_mut() = parts.extensions;
    call.extensions_mut().insert(Protocol::Rest);
    Ok(call)
}

/// The body, up to `reading.max_body` bytes (413 past them), within
/// `reading.body_timeout` (408 past it, counted in `late`; an HTTP/1
/// connection is then closed, as what is left of the body is not read).
async fn read_body(
    body: Body,
    reading: Reading,
    version: http::Version,
    late: Option<&IntCounter>,
) -> Result<Bytes, Response<Body>> {
    let max_body = reading.max_body;
    let collected = Limited::new(body, max_body).collect();
    let Ok(collected) = tokio::time::timeout(reading.body_timeout, collected).await else {
        if let Some(late) = late {
            late.inc();
        }
        let mut answer = refuse(
            StatusCode::REQUEST_TIMEOUT,
            Code::DeadlineExceeded,
            &format!(
                "the request body was not received within server.request_body_timeout ({:?})",
                reading.body_timeout
            ),
        );
        if version < http::Version::HTTP_2 {
            (answer.headers_mut()).insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Err(answer);
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            &format!("the body is over the limit of {max_body} bytes"),
        )),
        Err(e) => Err(error(
            Code::InvalidArgument,
            &format!("reading the body: {e}"),
        )),
    }
}

/// Whether the body of a request with `headers` may be read as JSON:
/// declared `application/json` or a `+json` type (any parameters; a
/// charset, UTF-8), or not declared on a body known to be empty; else what
/// is wrong, for a 415 before the body is read. (`text/plain`, forms and
/// multipart are what a page of any origin may send without a CORS
/// preflight, and a body is not guessed to be JSON.)
fn json_body(headers: &HeaderMap, body: &Body) -> Result<(), String> {
    let mut declared = headers.get_all(header::CONTENT_TYPE).iter();
    let problem = match (declared.next(), declared.next()) {
        (None, _) if body.size_hint().exact() == Some(0) => return Ok(()),
        (None, _) => "the body has no content-type".to_owned(),
        (Some(_), Some(_)) => "the request has more than one content-type".to_owned(),
        (Some(value), None) => match value.to_str().map(json_type) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(problem)) => problem,
            Err(_) => "the content-type is not text".to_owned(),
        },
    };
    Err(problem)
}

/// Whether the content type `value` is JSON: `application/json` or a
/// `+json` type, with any parameters, a charset only UTF-8 (JSON's own).
fn json_type(value: &str) -> Result<(), String> {
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim();
    let json = media.eq_ignore_ascii_case("application/json")
        || media.split_once('/').is_some_and(|(kind, subtype)| {
            !kind.is_empty()
                && subtype.len() > 5
                && subtype.as_bytes()[subtype.len() - 5..].eq_ignore_ascii_case(b"+json")
        });
    if !json {
        return Err(format!("{} is not JSON", quoted(media)));
    }
    for parameter in parts {
        let Some((name, charset)) = parameter.split_once('=') else {
            continue;
        };
        let charset = charset.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset")
            && !(charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8"))
        {
            return Err(format!("JSON is UTF-8, not charset={}", bounded(charset)));
        }
    }
    Ok(())
}

/// The query parameter and header of a REST call's deadline.
pub(super) const TIMEOUT: &str = "timeout";

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
        parse_timeout(text.trim()).ok_or_else(|| {
            format!(
                "timeout: {} is not a duration such as 500ms, 1.5s or 2m",
                quoted(&text)
            )
        })
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
    let (json, timeout) = request_json(route, vars, query, body, discard_unknown)?;
    let options = DeserializeOptions::new().deny_unknown_fields(!discard_unknown);
    match DynamicMessage::deserialize_with_options(
        route.input.clone(),
        Value::Object(json),
        &options,
    ) {
        Ok(message) => Ok((message, timeout)),
        // The JSON was taken by the attempt: the explanation reads the
        // request again (only a request that is refused pays for it).
        Err(e) => Err(explain(route, vars, query, body, discard_unknown)
            .unwrap_or_else(|| refusal(route, &e))),
    }
}

/// The JSON object of the request message: the body (the whole of it, or
/// one field's), then the path variables over it, then the query
/// parameters for the fields left; and the deadline's `timeout` parameter.
fn request_json(
    route: &Route,
    vars: &[(&'static str, String)],
    query: Option<&str>,
    body: &Bytes,
    discard_unknown: bool,
) -> Result<(Map<String, Value>, Option<String>), String> {
    let mut json = match route.http.body {
        None => Map::new(),
        Some(body_field) => {
            let value = match body.iter().all(u8::is_ascii_whitespace) {
                true => Value::Object(Map::new()),
                false => parse_json(body)?,
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
                return Err(format!("{}: set by the path already", bounded(&key)));
            }
            set(&mut json, &route.input, &key, &value, true, discard_unknown)?;
        }
    }
    Ok((json, timeout))
}

/// The body as JSON, parsed once and strictly: a key given twice in an
/// object is refused, naming it (the proto3 JSON mapping and protojson
/// refuse it; serde_json's `Value` keeps the last, so two readers of one
/// request could read different messages).
///
/// The check is part of the one parse: [`Strict`] builds the `Value` as
/// serde_json's own `Deserialize` does, and the `entry` it inserts each key
/// with tells a key already there at no extra cost, so no second pass over
/// the body or the tree. (A `RawValue` pass would scan the text twice; a
/// descriptor-driven parse would duplicate prost-reflect's mapping.) Its
/// recursion is serde_json's, with serde_json's depth limit.
fn parse_json(body: &[u8]) -> Result<Value, String> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    Strict { at: None }
        .deserialize(&mut reader)
        .and_then(|value| reader.end().map(|()| value))
        .map_err(|e| match e.classify() {
            // Strict's own refusal, which says what it is.
            serde_json::error::Category::Data => e.to_string(),
            _ => format!("the body is not JSON: {e}"),
        })
}

/// Where in the body a value is: the key or index in its parent, and the
/// parent's place (only read to name a key given twice).
#[derive(Clone, Copy)]
struct At<'a> {
    step: Step<'a>,
    parent: Option<&'a At<'a>>,
}

#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

impl fmt::Display for At<'_> {
    /// The JSON path, as `a.b[0].c`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}")?;
        }
        match (self.step, self.parent) {
            (Step::Key(key), None) => f.write_str(key),
            (Step::Key(key), Some(_)) => write!(f, ".{key}"),
            (Step::Index(index), _) => write!(f, "[{index}]"),
        }
    }
}

/// A JSON value that has no key twice in any of its objects (see
/// [`parse_json`]), at `at` in the body.
struct Strict<'a> {
    at: Option<&'a At<'a>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            let at = At {
                step: Step::Index(items.len()),
                parent: self.at,
            };
            match seq.next_element_seed(Strict { at: Some(&at) })? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = {
                let at = At {
                    step: Step::Key(&key),
                    parent: self.at,
                };
                map.next_value_seed(Strict { at: Some(&at) })?
            };
            match object.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(value);
                }
                Entry::Occupied(entry) => {
                    let at = At {
                        step: Step::Key(entry.key()),
                        parent: self.at,
                    };
                    return Err(de::Error::custom(format_args!(
                        "the key {} is given twice in the body",
                        quoted(&at.to_string())
                    )));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// The refusal of a request that does not make the message when
/// [`explain`] found no field to blame (fields of one oneof set together,
/// say): the decoder's message, bounded; for a request holding a
/// `debug_redact` field, none, since it may quote a value.
fn refusal(route: &Route, e: &serde_json::Error) -> String {
    match route.sensitive {
        true => format!(
            "invalid request: not a {} in the JSON mapping (a field that is not there, or a \
             value of the wrong type)",
            route.input.full_name()
        ),
        false => format!("invalid request: {}", bounded(&e.to_string())),
    }
}

/// Why the request does not make `route`'s message, in the caller's terms:
/// the field (as the caller spelt it: its path variable, its place in the
/// body, its query parameter) and what it must be, never the value. Each
/// source is tried on its own, so the one to blame is named.
fn explain(
    route: &Route,
    vars: &[(&'static str, String)],
    query: Option<&str>,
    body: &Bytes,
    discard_unknown: bool,
) -> Option<String> {
    let input = &route.input;
    let judge = Judge {
        options: DeserializeOptions::new().deny_unknown_fields(!discard_unknown),
        discard_unknown,
        redact: route.sensitive,
    };
    // A path variable or a query parameter: text, so what it must be.
    let alone = |name: &str, value: &str, repeat: bool| {
        let mut json = Map::new();
        set(&mut json, input, name, value, repeat, discard_unknown).ok()?;
        let problem = judge.wrong_in(input, &json, "")?;
        Some(match problem.what {
            What::Wrong { expected, .. } => format!("{}: expected {expected}", bounded(name)),
            What::NoField(..) => problem.to_string(),
        })
    };
    for (name, value) in vars {
        if let Some(problem) = alone(name, value, false) {
            return Some(problem);
        }
    }
    if let Some(body_field) = route.http.body
        && !body.iter().all(u8::is_ascii_whitespace)
        && let Ok(value) = parse_json(body)
    {
        let json = match (body_field, value) {
            ("*", Value::Object(json)) => json,
            (field, value) => Map::from_iter([(field.to_owned(), value)]),
        };
        if let Some(problem) = judge.wrong_in(input, &json, "") {
            return Some(problem.to_string());
        }
    }
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !(route.timeout_parameter && key == TIMEOUT)
            && let Some(problem) = alone(&key, &value, true)
        {
            return Some(problem);
        }
    }
    None
}

/// A field of the request that is wrong, and how.
struct Problem {
    /// Where: `a.b[0]`, as the caller spelt the keys.
    path: String,
    what: What,
}

enum What {
    /// The message (full name) has no field of the last key.
    NoField(String, String),
    /// A value of the wrong type, or out of range: what the field takes,
    /// and what was given.
    Wrong { expected: String, got: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = bounded(&self.path);
        match &self.what {
            What::NoField(key, message) => {
                write!(f, "{path}: no field {} in {message}", quoted(key))
            }
            What::Wrong { expected, got } => write!(f, "{path}: expected {expected}, got {got}"),
        }
    }
}

/// How [`explain`] tries the request's fields.
struct Judge {
    options: DeserializeOptions,
    discard_unknown: bool,
    /// Whether map keys are left out of paths (the request holds a
    /// `debug_redact` field, which they could be part of).
    redact: bool,
}

impl Judge {
    /// The first field of `object` (a `message`, at `path`) that does not
    /// deserialize, and why; `None` when each does on its own. A field of
    /// message type is looked into; any other is tried alone in its message.
    fn wrong_in(
        &self,
        message: &MessageDescriptor,
        object: &Map<String, Value>,
        path: &str,
    ) -> Option<Problem> {
        for (key, value) in object {
            let here = match path {
                "" => key.clone(),
                _ => format!("{path}.{key}"),
            };
            let Some(field) = field_named(message, key) else {
                if self.discard_unknown || message.get_extension_by_json_name(key).is_some() {
                    continue;
                }
                return Some(Problem {
                    path: here,
                    what: What::NoField(key.clone(), message.full_name().to_owned()),
                });
            };
            // `null` is the field's default (or a `google.protobuf.Value`'s null).
            if value.is_null() {
                continue;
            }
            if let Some(problem) = self.wrong_field(message, &field, key, value, here) {
                return Some(problem);
            }
        }
        None
    }

    /// Why `value` (at `here`, under `key` of `message`) is not one of
    /// `field`'s, if it is not.
    fn wrong_field(
        &self,
        message: &MessageDescriptor,
        field: &FieldDescriptor,
        key: &str,
        value: &Value,
        here: String,
    ) -> Option<Problem> {
        // Whether `value` as the field's fails to deserialize, alone in its message.
        let fails = |value: Value| {
            let alone = Map::from_iter([(key.to_owned(), value)]);
            DynamicMessage::deserialize_with_options(
                message.clone(),
                Value::Object(alone),
                &self.options,
            )
            .is_err()
        };
        let wrong = |path: String, kind: &Kind, expected: String, value: &Value| Problem {
            path,
            what: What::Wrong {
                got: given(value, takes(kind, value)),
                expected,
            },
        };
        let kind = field.kind();
        if field.is_map() {
            let Value::Object(entries) = value else {
                return Some(wrong(here, &kind, expected_field(field), value));
            };
            let Kind::Message(entry) = kind else {
                return None;
            };
            let value_kind = entry.map_entry_value_field().kind();
            for (entry_key, entry_value) in entries {
                let one = Map::from_iter([(entry_key.clone(), entry_value.clone())]);
                if !fails(Value::Object(one)) {
                    continue;
                }
                let at = match self.redact {
                    true => format!("{here}[…]"),
                    false => format!("{here}[{entry_key}]"),
                };
                if let (Some(inner), Value::Object(fields)) = (object_of(&value_kind), entry_value)
                    && let Some(problem) = self.wrong_in(&inner, fields, &at)
                {
                    return Some(problem);
                }
                let expected = format!(
                    "{}, under a key that is {}",
                    expected(&value_kind),
                    expected(&entry.map_entry_key_field().kind())
                );
                return Some(wrong(at, &value_kind, expected, entry_value));
            }
            return None;
        }
        if field.is_list() {
            let Value::Array(items) = value else {
                return Some(wrong(here, &kind, expected_field(field), value));
            };
            for (index, item) in items.iter().enumerate() {
                let at = format!("{here}[{index}]");
                if let (Some(inner), Value::Object(fields)) = (object_of(&kind), item) {
                    if let Some(problem) = self.wrong_in(&inner, fields, &at) {
                        return Some(problem);
                    }
                } else if fails(Value::Array(vec![item.clone()])) {
                    return Some(wrong(at, &kind, expected(&kind), item));
                }
            }
            return None;
        }
        match (object_of(&kind), value) {
            (Some(inner), Value::Object(fields)) => self.wrong_in(&inner, fields, &here),
            (Some(_), _) => Some(wrong(here, &kind, expected(&kind), value)),
            (None, _) => fails(value.clone()).then(|| wrong(here, &kind, expected(&kind), value)),
        }
    }
}

/// The message a value of `kind` is an object of, looked into field by
/// field; `None` for any other kind, and for the well-known types.
fn object_of(kind: &Kind) -> Option<MessageDescriptor> {
    match kind {
        Kind::Message(inner) if !well_known(inner) => Some(inner.clone()),
        _ => None,
    }
}

/// Whether `message` has a JSON form of its own (`google.protobuf.*`: a
/// Timestamp is a string, a Struct any object), so is judged whole.
fn well_known(message: &MessageDescriptor) -> bool {
    message.package_name() == "google.protobuf"
}

/// The kind a wrapper (`google.protobuf.Int32Value`, …) wraps: its JSON
/// form is its value's.
fn wrapped(message: &MessageDescriptor) -> Option<Kind> {
    let wrapper = well_known(message) && message.full_name().ends_with("Value");
    let value = message.get_field_by_name("value").filter(|_| wrapper)?;
    // (`google.protobuf.Value` is no wrapper: it has no `value` field.)
    Some(value.kind())
}

/// What a field takes, in the JSON mapping's terms.
fn expected_field(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Message(entry) if field.is_map() => format!(
            "an object of {} (a map)",
            expected(&entry.map_entry_value_field().kind())
        ),
        kind if field.is_list() => format!("an array of {}", expected(&kind)),
        kind => expected(&kind),
    }
}

/// What a value of `kind` is in the JSON mapping.
fn expected(kind: &Kind) -> String {
    match kind {
        Kind::Double | Kind::Float => "a number".to_owned(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "a 32-bit integer".to_owned(),
        Kind::Uint32 | Kind::Fixed32 => "an unsigned 32-bit integer".to_owned(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            "a 64-bit integer (a number, or a string of one)".to_owned()
        }
        Kind::Uint64 | Kind::Fixed64 => {
            "an unsigned 64-bit integer (a number, or a string of one)".to_owned()
        }
        Kind::Bool => "true or false".to_owned(),
        Kind::String => "a string".to_owned(),
        Kind::Bytes => "a base64 string".to_owned(),
        Kind::Enum(e) => {
            let names: Vec<String> = e.values().map(|v| v.name().to_owned()).take(9).collect();
            match names.len() {
                0..=8 => format!("one of {} (or its number)", names.join(", ")),
                _ => format!("the name of a {} value (or its number)", e.full_name()),
            }
        }
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => {
                "an RFC 3339 timestamp such as \"2025-01-02T03:04:05Z\"".to_owned()
            }
            "google.protobuf.Duration" => "a duration such as \"1.5s\"".to_owned(),
            "google.protobuf.FieldMask" => "a field mask such as \"name,email\"".to_owned(),
            "google.protobuf.Struct" => "an object".to_owned(),
            "google.protobuf.ListValue" => "an array".to_owned(),
            "google.protobuf.Value" => "a JSON value".to_owned(),
            "google.protobuf.Any" => "an object with an \"@type\"".to_owned(),
            "google.protobuf.Empty" => "an empty object".to_owned(),
            name => match wrapped(m) {
                Some(value) => expected(&value),
                None => format!("an object (a {name})"),
            },
        },
    }
}

/// Whether the JSON type of `value` is one `kind` takes (so it was its
/// content that was wrong: a number out of range, a string not a date).
fn takes(kind: &Kind, value: &Value) -> bool {
    match (kind, value) {
        (Kind::Bool, Value::Bool(_)) => true,
        (Kind::String | Kind::Bytes, Value::String(_)) => true,
        (Kind::Enum(_), Value::String(_) | Value::Number(_)) => true,
        (Kind::Bool | Kind::String | Kind::Bytes | Kind::Enum(_), _) => false,
        (Kind::Message(m), value) => match m.full_name() {
            "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask" => value.is_string(),
            "google.protobuf.ListValue" => value.is_array(),
            "google.protobuf.Value" => true,
            _ => match wrapped(m) {
                Some(inner) => takes(&inner, value),
                None => value.is_object(),
            },
        },
        // Numbers: a number, or a string of one.
        (_, value) => value.is_number() || value.is_string(),
    }
}

/// What `value` is, as a caller would say it; `taken`: of a type the field
/// takes, so "… that is not one".
fn given(value: &Value, taken: bool) -> String {
    let noun = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    match taken {
        true => format!("{noun} that is not one"),
        false => noun.to_owned(),
    }
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
                    "{}: no field {} in {}",
                    bounded(path),
                    quoted(part),
                    message.full_name()
                )),
            };
        };
        if i + 1 < parts.len() {
            let Kind::Message(inner) = field.kind() else {
                return Err(format!(
                    "{}: {} is not a message field",
                    bounded(path),
                    quoted(part)
                ));
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
            return Err(format!("{}: {} is set twice", bounded(path), quoted(part)));
        };
        object = next;
    }
    let item = scalar(field, value).map_err(|problem| format!("{}: {problem}", bounded(path)))?;
    let key = field.name().to_owned();
    if field.is_list() {
        match object
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(item),
            _ => return Err(format!("{}: set twice", bounded(path))),
        }
    } else if repeat && object.contains_key(&key) {
        return Err(format!(
            "{}: given twice, and it is not repeated",
            bounded(path)
        ));
    } else {
        object.insert(key, item);
    }
    Ok(())
}

pub(super) fn field_named(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
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
            other => return Err(format!("{} is not true or false", quoted(other))),
        },
        // Numbers, enums (by name), bytes (base64), Timestamps and the
        // like are strings in the JSON mapping.
        _ => Value::String(value.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_refused_where_it_is() {
        let value = parse_json(br#"{"a": [1, {"b": {"c": null}}], "d": 1.5}"#).unwrap();
        assert_eq!(value["a"][1]["b"]["c"], Value::Null);
        assert_eq!(value["d"], 1.5);
        for (body, path) in [
            (r#"{"a": 1, "a": 2}"#, r#""a""#),
            (r#"{"a": {"b": 1, "b": 1}}"#, r#""a.b""#),
            (r#"[{"x": 1}, {"x": 1, "x": 1}]"#, r#""[1].x""#),
            (r#"{"a": [[{"b": 1, "b": 2}]]}"#, r#""a[0][0].b""#),
        ] {
            let refused = parse_json(body.as_bytes()).unwrap_err();
            assert!(
                refused.starts_with(&format!("the key {path} is given twice")),
                "{body}: {refused}"
            );
        }
        let refused = parse_json(b"{\"a\": 1} {}").unwrap_err();
        assert!(refused.starts_with("the body is not JSON"), "{refused}");
    }

    #[test]
    fn json_is_application_json_or_a_json_suffix() {
        for json in [
            "application/json",
            "APPLICATION/JSON;charset=UTF-8",
            "application/problem+json",
            "application/vnd.a+json; charset=\"utf-8\"; v=1",
        ] {
            assert_eq!(json_type(json), Ok(()), "{json}");
        }
        for other in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/xml",
            "application/jsonp",
            "+json",
            "/+json",
            "application/json; charset=iso-8859-1",
        ] {
            assert!(json_type(other).is_err(), "{other}");
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
}
