//! The well-known string formats of `buf.validate` (`string.email`,
//! `string.hostname`, …), shared by the standard rules and the CEL
//! functions of the same names (`isEmail()`, `isHostname()`, …).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An email address as HTML5 defines a valid one (protovalidate's
/// definition): a local part of letters, digits and ``.!#$%&'*+/=?^_`{|}~-``,
/// `@`, and a [hostname](is_hostname) without a trailing dot.
///
/// ```
/// use keel_rpc::validate::format::is_email;
/// assert!(is_email("ada@example.com"));
/// assert!(!is_email("ada@"));
/// assert!(!is_email("Ada <ada@example.com>"));
/// ```
pub fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(&b))
        && !domain.ends_with('.')
        && is_hostname(domain)
}

/// A hostname (RFC 1034): dot-separated labels of 1 to 63 letters, digits
/// and hyphens, neither starting nor ending with a hyphen, the last not all
/// digits; at most 253 characters, one trailing dot allowed.
///
/// ```
/// use keel_rpc::validate::format::is_hostname;
/// assert!(is_hostname("api.example.com"));
/// assert!(!is_hostname("-api.example.com"));
/// assert!(!is_hostname("127.0.0.1"));
/// ```
pub fn is_hostname(value: &str) -> bool {
    let name = value.strip_suffix('.').unwrap_or(value);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let mut last = "";
    for label in name.split('.') {
        let bytes = label.as_bytes();
        if bytes.is_empty()
            || bytes.len() > 63
            || bytes[0] == b'-'
            || bytes[bytes.len() - 1] == b'-'
            || !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        {
            return false;
        }
        last = label;
    }
    !last.bytes().all(|b| b.is_ascii_digit())
}

/// An IPv4 or IPv6 address (an IPv6 one may carry a `%zone`).
pub fn is_ip(value: &str) -> bool {
    is_ipv4(value) || is_ipv6(value)
}

/// An IPv4 address in dotted decimal.
pub fn is_ipv4(value: &str) -> bool {
    value.parse::<Ipv4Addr>().is_ok()
}

/// An IPv6 address, optionally with a non-empty `%zone`.
pub fn is_ipv6(value: &str) -> bool {
    let address = match value.split_once('%') {
        Some((address, zone)) if !zone.is_empty() => address,
        Some(_) => return false,
        None => value,
    };
    address.parse::<Ipv6Addr>().is_ok()
}

/// A hostname or an IP address.
pub fn is_address(value: &str) -> bool {
    is_hostname(value) || value.parse::<IpAddr>().is_ok()
}

/// An absolute URI with a scheme (`https://example.com/a?b#c`), as the
/// WHATWG URL parser (the `url` crate) accepts it, without whitespace.
///
/// ```
/// use keel_rpc::validate::format::is_uri;
/// assert!(is_uri("https://example.com/users?page=2"));
/// assert!(!is_uri("/users"));
/// ```
pub fn is_uri(value: &str) -> bool {
    !has_space_or_control(value) && url::Url::parse(value).is_ok()
}

/// A URI or a relative reference (`/users?page=2`, `../a`).
pub fn is_uri_ref(value: &str) -> bool {
    if has_space_or_control(value) {
        return false;
    }
    if url::Url::parse(value).is_ok() {
        return true;
    }
    let Ok(base) = url::Url::parse("keel-base://base/") else {
        return false;
    };
    base.join(value).is_ok()
}

fn has_space_or_control(value: &str) -> bool {
    value.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A UUID in its 36-character hyphenated form, any version, either case.
///
/// ```
/// use keel_rpc::validate::format::is_uuid;
/// assert!(is_uuid("0190a4e0-7c5f-7cc5-9d3c-6c6e1f3f4a2b"));
/// assert!(!is_uuid("0190a4e07c5f7cc59d3c6c6e1f3f4a2b"));
/// ```
pub fn is_uuid(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A UUID as 32 hex digits without hyphens (`string.tuuid`).
pub fn is_tuuid(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in ["a@b.co", "first.last+tag@sub.example.org", "x@localhost"] {
            assert!(is_email(good), "{good}");
        }
        for bad in [
            "",
            "@b.co",
            "a@",
            "a b@c.d",
            "a@b..c",
            "a@-b.c",
            "a@b.c.",
            "a@@b.c",
            "a@1.2.3.4",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn hostnames_and_addresses() {
        assert!(is_hostname("example.com."));
        assert!(!is_hostname(&"a".repeat(64)));
        assert!(!is_hostname("a..b"));
        assert!(is_ipv6("fe80::1%eth0"));
        assert!(!is_ipv6("fe80::1%"));
        assert!(!is_ipv4("256.1.1.1"));
        assert!(is_address("10.0.0.1") && is_address("db.internal") && !is_address("a_b"));
    }

    #[test]
    fn uris() {
        assert!(is_uri("mailto:ada@example.com"));
        assert!(!is_uri("https://exa mple.com"));
        assert!(is_uri_ref("/a/b?c=d"));
        assert!(is_uri_ref("https://example.com"));
        assert!(!is_uri_ref("a b"));
        assert!(is_tuuid("0190a4e07c5f7cc59d3c6c6e1f3f4a2b"));
    }
}
