use tonic::Code;

/// The `grpc_code` label value of a code, as go-grpc-prometheus writes it
/// (Go's `codes.Code.String()`: `OK`, `Canceled`, `NotFound`, …).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The `grpc-status` header name, pre-parsed: looking a header up by a
/// `&str` parses the name on every call.
pub(crate) static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The code in a `grpc-status` value; `Unknown` for anything unparsable, as
/// the gRPC spec says a client must treat it.
pub(crate) fn parse_status(value: &http::HeaderValue) -> Code {
    Code::from_bytes(value.as_bytes())
}
