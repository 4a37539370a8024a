//! `grpc-status`: the code a call ended with, read from its trailers (or
//! the headers of a trailers-only response) as the server pipeline and the
//! generated clients see them go by; and `grpc-message`, the status message
//! beside it, cut to a length.

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Code;

/// The `grpc-status` header name, pre-parsed: looking a header up by a
/// `&str` parses the name on every call.
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The `grpc-message` header name, pre-parsed.
pub(crate) static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// What ends a status message [`cut_message`] cut short.
pub(crate) const CUT_MARK: &str = "…";

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

/// The `grpc-message` value `value` cut to a message of at most `max`
/// bytes of UTF-8 (before percent-encoding), on a character boundary and
/// ending in [`CUT_MARK`]; `None` when its message is no longer than `max`.
///
/// The value is percent-encoded (gRPC's `Percent-Encoded`): it is decoded
/// only as far as `max + 1` bytes of message, so a long one costs no more
/// than a short one. Bytes that are not UTF-8 become U+FFFD, as a client
/// decoding it would have to read them anyway.
pub(crate) fn cut_message(value: &HeaderValue, max: usize) -> Option<HeaderValue> {
    let mut decoded = Vec::with_capacity(max + 1);
    let mut rest = value.as_bytes();
    while decoded.len() <= max {
        let (byte, after) = match rest {
            [] => return None,
            [b'%', high, low, after @ ..] => match (hex_digit(*high), hex_digit(*low)) {
                (Some(high), Some(low)) => (high << 4 | low, after),
                _ => (b'%', &rest[1..]),
            },
            [byte, after @ ..] => (*byte, after),
        };
        decoded.push(byte);
        rest = after;
    }
    // At least as long as `decoded` (U+FFFD is as long as what it replaces,
    // or longer), so longer than `end`.
    let text = String::from_utf8_lossy(&decoded);
    let mut end = max.saturating_sub(CUT_MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(encode_message(&[&text[..end], CUT_MARK]))
}

/// The value of a `grpc-message` of `parts`, in order: percent-encoded as
/// tonic encodes one (every byte outside printable ASCII, and of it space,
/// `"`, `#`, `%`, `<`, `>`, `` ` ``, `?`, `{` and `}`; gRPC's spec requires
/// `%` and what is not printable ASCII).
fn encode_message(parts: &[&str]) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = Vec::with_capacity(parts.iter().map(|p| p.len() * 3).sum());
    for &byte in parts.iter().flat_map(|part| part.as_bytes()) {
        match byte {
            b'!'..=b'~' if !b"\"#%<>`?{}".contains(&byte) => encoded.push(byte),
            _ => encoded.extend([
                b'%',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 15)],
            ]),
        }
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(encoded))
        .expect("percent-encoded text is a valid header value")
}

/// The value of the hexadecimal digit `byte`, either case.
fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|digit| digit as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What tonic sends as the `grpc-message` of `message`.
    fn tonic_encoded(message: &str) -> HeaderValue {
        let mut headers = HeaderMap::new();
        tonic::Status::unknown(message)
            .add_header(&mut headers)
            .unwrap();
        headers[&GRPC_MESSAGE].clone()
    }

    /// The message a client reads from `value`.
    fn decoded(value: &HeaderValue) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(&GRPC_STATUS, HeaderValue::from_static("2"));
        headers.insert(&GRPC_MESSAGE, value.clone());
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::Unknown, "{value:?} decodes");
        status.message().to_owned()
    }

    #[test]
    fn a_message_within_the_bound_is_not_cut() {
        for message in [
            "short",
            "é%\"%25 <{}>\n\u{1F600}",
            &"x".repeat(64),
            &"é".repeat(32),
        ] {
            assert_eq!(
                cut_message(&tonic_encoded(message), 64),
                None,
                "{message:?}"
            );
        }
    }

    #[test]
    fn a_longer_message_is_cut_on_a_character_boundary_and_marked() {
        for (message, kept) in [
            ("x".repeat(65), "x".repeat(61)),
            // Two bytes each: 30 of them fit in 61 bytes.
            ("é".repeat(33), "é".repeat(30)),
            // Four bytes each: 15 of them.
            ("\u{1F600}".repeat(17), "\u{1F600}".repeat(15)),
            (
                format!("{}%{}", "a".repeat(40), "b".repeat(40)),
                format!("{}%{}", "a".repeat(40), "b".repeat(20)),
            ),
        ] {
            let cut = cut_message(&tonic_encoded(&message), 64).expect("cut");
            let text = decoded(&cut);
            assert_eq!(text, format!("{kept}{CUT_MARK}"), "{message:?}");
            assert!(text.len() <= 64);
        }
        // Encoded as tonic encodes it.
        let message = format!("{} \"#%<>`?{{}}~", "é".repeat(20));
        let cut = cut_message(&tonic_encoded(&format!("{message}{}", "x".repeat(64))), 64);
        assert_eq!(
            cut.unwrap(),
            tonic_encoded(&format!("{message}{}{CUT_MARK}", "x".repeat(10)))
        );
        // Only `%` and what is not printable ASCII encoded, as gRPC's spec
        // asks at least, decodes the same.
        let spec = HeaderValue::from_str(&"a b%25".repeat(20)).unwrap();
        let cut = cut_message(&spec, 64).unwrap();
        assert_eq!(decoded(&cut), format!("{}a{CUT_MARK}", "a b%".repeat(15)));
    }

    #[test]
    fn a_huge_message_is_decoded_only_as_far_as_the_bound() {
        let huge = tonic_encoded(&"é".repeat(1_500_000));
        assert_eq!(huge.len(), 9_000_000);
        let cut = cut_message(&huge, 1024).unwrap();
        let text = decoded(&cut);
        assert!(text.len() <= 1024, "{}", text.len());
        assert!(text.ends_with(CUT_MARK) && text.starts_with("éé"));
        // Not UTF-8, or not percent-encoding: still cut, still a valid value.
        let garbage =
            HeaderValue::from_bytes(&[b"%FF%zz%".as_slice(), &[b'x'; 100]].concat()).unwrap();
        let text = decoded(&cut_message(&garbage, 16).unwrap());
        assert_eq!(text, format!("\u{FFFD}%zz%xxxxxx{CUT_MARK}"));
    }

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
