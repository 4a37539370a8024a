//! A server-streaming method's answer over REST: each message as it
//! arrives, as a newline-delimited JSON line or a Server-Sent Event, and the
//! stream's final status as the last one when it is an error.

use std::convert::Infallible;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, header};
use http_body_util::BodyExt;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use serde_json::{Value, json};
use tonic::Code;

use super::response::status_json;
use crate::wire::split_message;

/// A server stream's answer: each message as it arrives, as an NDJSON line
/// or an SSE event, and the stream's error, if it ends with one.
pub(super) fn stream(output: MessageDescriptor, body: Body, events: bool) -> Response<Body> {
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
            if let Some(message) = split_message(&mut state.buffer) {
                let value = DynamicMessage::decode(state.output.clone(), &message[..])
                    .map_err(|e| e.to_string())
                    .and_then(|m| serde_json::to_value(&m).map_err(|e| e.to_string()));
                let chunk = match value {
                    Ok(value) => line(state.events, "result", value),
                    Err(e) => {
                        state.done = true;
                        // The server's fault, not the caller's: the detail
                        // goes to the log.
                        tracing::warn!(error = %e, "a REST stream's message does not decode");
                        let status = tonic::Status::internal(format!(
                            "a message of the stream is not a {}",
                            state.output.full_name()
                        ));
                        line(
                            state.events,
                            "error",
                            status_json(status.code(), status.message(), Vec::new()),
                        )
                    }
                };
                return Some((Ok::<Bytes, Infallible>(chunk), state));
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
