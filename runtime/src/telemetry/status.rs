//! How a call's end is recorded on its span: which codes are errors, and the
//! error's description (OpenTelemetry's gRPC semantic conventions).

use std::borrow::Cow;

use http::HeaderMap;
use tonic::Code;

use crate::metrics::{Side, code_name};

impl Side {
    /// Whether a call ending with `code` marks the span as failed. A client
    /// span fails on any code but `OK`; a server span only on the codes that
    /// say the server failed, not the caller.
    pub(crate) fn is_error(self, code: Code) -> bool {
        match self {
            Side::Client => code != Code::Ok,
            Side::Server => matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ),
        }
    }
}

/// The error description of a call that ended with `code`: the code's name,
/// and `grpc-message` from `carrier` (the headers or trailers that carried
/// the status) when there is one.
pub(super) fn error_description(code: Code, carrier: Option<&HeaderMap>) -> Cow<'static, str> {
    let message = carrier
        .and_then(tonic::Status::from_header_map)
        .map(|s| s.message().to_owned())
        .filter(|m| !m.is_empty());
    match message {
        Some(message) => Cow::Owned(format!("{}: {message}", code_name(code))),
        None => Cow::Borrowed(code_name(code)),
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::Side;
    use tonic::Code;

    #[test]
    fn error_codes_follow_the_semantic_conventions() {
        for code in (0..=16).map(Code::from_i32) {
            assert_eq!(Side::Client.is_error(code), code != Code::Ok, "{code:?}");
        }
        let server: Vec<Code> = (0..=16)
            .map(Code::from_i32)
            .filter(|c| Side::Server.is_error(*c))
            .collect();
        assert_eq!(
            server,
            [
                Code::Unknown,
                Code::DeadlineExceeded,
                Code::Unimplemented,
                Code::Internal,
                Code::Unavailable,
                Code::DataLoss
            ]
        );
    }
}
