//! `grpc-timeout` values: a duration as at most eight digits and a unit, as
//! the gRPC spec has them.

use std::time::Duration;

use http::HeaderValue;

/// `grpc-timeout` for `timeout`: the gRPC spec allows at most 8 digits, so
/// the finest unit that fits is used.
pub(crate) fn encode_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let units = [
        (timeout.as_nanos(), 'n'),
        (timeout.as_micros(), 'u'),
        (timeout.as_millis(), 'm'),
        (u128::from(timeout.as_secs()), 'S'),
        (u128::from(timeout.as_secs() / 60), 'M'),
        (u128::from(timeout.as_secs() / 3600), 'H'),
    ];
    let (value, unit) = units
        .into_iter()
        .find(|(value, _)| *value <= MAX)
        .unwrap_or((MAX, 'H'));
    HeaderValue::try_from(format!("{value}{unit}")).unwrap_or(HeaderValue::from_static("99999999H"))
}

/// The timeout a `grpc-timeout` value says, if it is well-formed.
pub(crate) fn decode_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_trip_within_eight_digits() {
        for (timeout, text) in [
            (Duration::from_millis(1), "1000000n"),
            (Duration::from_secs(10), "10000000u"),
            (Duration::from_secs(3600), "3600000m"),
            (Duration::from_secs(200_000), "200000S"),
        ] {
            let header = encode_timeout(timeout);
            assert_eq!(header, text);
            assert_eq!(decode_timeout(&header), Some(timeout));
        }
    }

    #[test]
    fn malformed_timeouts_are_ignored() {
        for text in ["", "m", "10", "123456789m", "10x", "-1S", "1.5S"] {
            let value = HeaderValue::from_str(text).unwrap();
            assert_eq!(decode_timeout(&value), None, "{text:?}");
        }
    }
}
