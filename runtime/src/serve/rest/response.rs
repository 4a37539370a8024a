//! The response side of a REST call: the gRPC answer (a message, or a
//! status from the headers or the trailers) as JSON, and each gRPC code as
//! its HTTP status.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use prost_reflect::DynamicMessage;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use super::routes::Route;
use super::stream::stream;
use crate::policy::MethodKind;
use crate::wire::single_message;

/// The REST answer of the gRPC `answer` to a call of `route`: the JSON of
/// its message, or of its status; for a server stream, [`stream`] of its
/// messages (as SSE when `events`).
pub(super) async fn answer(
    route: &Route,
    answer: Response<Body>,
    events: bool,
) -> Result<Response<Body>, Response<Body>> {
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
    let payload =
        single_message(&data).ok_or_else(|| error(Code::Internal, "no response message"))?;
    let answer = DynamicMessage::decode(route.output.clone(), payload).map_err(|e| {
        // The server's fault, not the caller's: the detail goes to the log.
        tracing::warn!(path = route.grpc_path, error = %e, "a REST answer does not decode");
        error(
            Code::Internal,
            &format!("the method's answer is not a {}", route.output.full_name()),
        )
    })?;
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

/// A refusal before the call: `code` and `message` as a Status JSON.
pub(super) fn error(code: Code, message: &str) -> Response<Body> {
    refuse(http_status(code), code, message)
}

/// What a REST request was refused with before it became a call, in the
/// answer's extensions: the call that never ran is counted under its
/// method with this code, as a gRPC call refused by the pipeline is.
#[derive(Clone, Copy, Debug)]
pub(super) struct Refusal(pub(super) Code);

/// The answer refusing a request with `code`, as HTTP `status`.
pub(super) fn refuse(status: StatusCode, code: Code, message: &str) -> Response<Body> {
    let mut response = json_response(status, status_json(code, message, Vec::new()));
    response.extensions_mut().insert(Refusal(code));
    response
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
    let mut retry_after = None;
    if let Some(retry) = details.retry_info()
        && let Some(delay) = retry.retry_delay
    {
        listed.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{}s", delay.as_secs_f64()),
        }));
        // `Retry-After` is whole seconds (RFC 9110 §10.2.3): rounded up, so
        // a client that waits it is not refused again, and at least 1.
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        retry_after = Some(seconds.max(1));
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
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The longest a name or value from the request is quoted in an answer, in
/// characters (`…` included): what a refusal says stays small whatever the
/// request held.
const QUOTED_CHARS: usize = 128;

/// `text` from the request as an answer may quote it: whole when short,
/// else its first characters (cut on a character boundary) and `…`.
pub(super) fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(QUOTED_CHARS - 1) {
        // More than `QUOTED_CHARS` when one more follows the last kept.
        Some((cut, _)) if text[cut..].chars().nth(1).is_some() => {
            format!("{}…", &text[..cut]).into()
        }
        _ => text.into(),
    }
}

/// `text` from the request in quotes, [`bounded`].
pub(super) fn quoted(text: &str) -> String {
    format!("{:?}", bounded(text))
}

pub(super) fn status_json(code: Code, message: &str, details: Vec<Value>) -> Value {
    json!({ "code": code as i32, "message": message, "details": details })
}

pub(super) fn json_response(status: StatusCode, body: Value) -> Response<Body> {
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

    #[test]
    fn quoted_text_is_bounded_on_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let exact = "é".repeat(QUOTED_CHARS);
        assert_eq!(bounded(&exact), exact.as_str());
        let long = "é".repeat(QUOTED_CHARS + 1);
        let cut = bounded(&long);
        assert_eq!(cut.chars().count(), QUOTED_CHARS);
        assert_eq!(cut, format!("{}…", "é".repeat(QUOTED_CHARS - 1)));
        assert_eq!(quoted("a\"b"), r#""a\"b""#);
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
