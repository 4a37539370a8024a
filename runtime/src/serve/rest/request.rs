//! The request side of a REST call: the gRPC call it becomes, with its
//! method's request message (path variables, then the body, then query
//! parameters, in the proto3 JSON mapping) in one frame, the REST
//! request's headers and its `timeout` as the call's `grpc-timeout`.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};
use tonic::Code;

use super::response::{error, json_response, status_json};
use super::routes::Route;
use crate::metrics::Protocol;
use crate::policy::MethodKind;
use crate::wire::{GRPC_TIMEOUT, decode_timeout, encode_message, encode_timeout};

/// How REST requests are read, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reading {
    /// The longest request body taken (`server.max_message_bytes`).
    pub(super) max_body: usize,
    /// Whether fields the request message does not have are ignored rather than refused
    /// (`http.discard_unknown_fields`).
    pub(super) discard_unknown: bool,
}

/// The gRPC call of one REST request of `route`, whose path bound `vars`,
/// and whether its client accepts Server-Sent Events; or, when the request
/// is refused before the call, the answer.
pub(super) async fn grpc_call(
    route: &Route,
    vars: Vec<(&'static str, String)>,
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

    let frame = encode_message(&message).map_err(|e| error(Code::Internal, &e.to_string()))?;
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
    let Ok(mut call) = call.body(Body::from(frame)) else {
        return Err(error(Code::Internal, "building the call"));
    };
    // The connection's address and certificates, for auth and rate limits.
    *call.extensions_mut() = parts.extensions;
    call.extensions_mut().insert(Protocol::Rest);
    Ok((call, events))
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
            other => return Err(format!("{other:?} is not true or false")),
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
