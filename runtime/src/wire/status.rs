//! `grpc-status`: the code a call ended with, read from its trailers (or
//! the headers of a trailers-only response) as the server pipeline and the
//! generated clients see them go by.

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Code;

/// The `grpc-status` header name, pre-parsed: looking a header up by a
/// `&str` parses the name on every call.
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Up to this many headers, [`status_code`] walks them rather than hashing.
const WALKED: usize = 4;

/// The code of the `grpc-status` in `headers` (trailers, or the headers of a
/// trailers-only response), if there is one.
///
/// gRPC servers (tonic, grpc-go, grpc-java) write `grpc-status` first in
/// trailers, so among a few headers a walk finds it sooner than a lookup,
/// which hashes the name and compares it byte for byte.
pub(crate) fn status_code(headers: &HeaderMap) -> Option<Code> {
    let value = match headers.len() {
        0..=WALKED => headers
            .iter()
            .find_map(|(name, value)| is_grpc_status(name).then_some(value)),
        _ => headers.get(&GRPC_STATUS),
    };
    value.map(parse_status)
}

/// Whether `name` is `grpc-status`. Compared as bytes against a constant of
/// known length, which the compiler inlines, where `HeaderName`'s `==` calls
/// `memcmp` whenever the lengths agree, as they do on every call that finds
/// it.
fn is_grpc_status(name: &HeaderName) -> bool {
    name.as_str().as_bytes() == b"grpc-status"
}

/// The code in a `grpc-status` value; `Unknown` for anything unparsable, as
/// the gRPC spec says a client must treat it.
pub(crate) fn parse_status(value: &HeaderValue) -> Code {
    Code::from_bytes(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_is_the_first_grpc_status_however_many_headers() {
        for others in 0..=WALKED + 2 {
            for at in 0..=others {
                let mut headers = HeaderMap::new();
                for i in 0..others {
                    if i == at {
                        headers.append(&GRPC_STATUS, HeaderValue::from_static("5"));
                    }
                    let name = HeaderName::try_from(format!("x-meta-{i}")).unwrap();
                    headers.append(name, HeaderValue::from_static("v"));
                }
                if at == others {
                    headers.append(&GRPC_STATUS, HeaderValue::from_static("5"));
                }
                headers.append(&GRPC_STATUS, HeaderValue::from_static("13"));
                assert_eq!(status_code(&headers), Some(Code::NotFound), "{headers:?}");
            }
            let mut headers = HeaderMap::new();
            for i in 0..others {
                let name = HeaderName::try_from(format!("x-meta-{i}")).unwrap();
                headers.append(name, HeaderValue::from_static("v"));
            }
            assert_eq!(status_code(&headers), None, "{headers:?}");
        }
        // A name of the same length is not it.
        let mut lookalike = HeaderMap::new();
        lookalike.insert("grpc-statux", HeaderValue::from_static("5"));
        assert_eq!(status_code(&lookalike), None);
        let mut garbage = HeaderMap::new();
        garbage.insert(&GRPC_STATUS, HeaderValue::from_static("ok"));
        assert_eq!(status_code(&garbage), Some(Code::Unknown));
    }
}
