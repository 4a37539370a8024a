//! Targets in grpc-go's syntax: `dns:///name:port` (every A and AAAA
//! record of `name` is a replica) beside `http(s)://host:port` (one
//! address).

use super::ClientError;

/// A `dns:///` target's name and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DnsTarget {
    /// The name to resolve (an IP address literal resolves to itself).
    pub(super) host: String,
    pub(super) port: u16,
}

/// The port of a `dns:///` target that names none, as grpc-go's.
const DEFAULT_PORT: u16 = 443;

/// `Some` for a `dns:` target, `None` for anything else (a URL, left to
/// tonic's `Endpoint`).
pub(super) fn dns(target: &str) -> Result<Option<DnsTarget>, ClientError> {
    let Some(rest) = strip_prefix_ignore_case(target, "dns:") else {
        return Ok(None);
    };
    let invalid = |reason: &str| ClientError::InvalidTarget {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    // `dns:///name:port`, or grpc-go's `dns:name:port`; `dns://server/…`
    // names a DNS server, which `client.dns.nameservers` says instead.
    let name = match rest.strip_prefix("//") {
        Some(authority_and_path) => match authority_and_path.split_once('/') {
            Some(("", path)) => path,
            Some(_) => {
                return Err(invalid(
                    "a DNS server in the target is not supported: write dns:///name:port and set client.dns.nameservers",
                ));
            }
            None => return Err(invalid("expected dns:///name:port")),
        },
        None => rest,
    };
    if name.is_empty() {
        return Err(invalid("no name to resolve (expected dns:///name:port)"));
    }
    if name.contains(['/', '?', '#', '@']) {
        return Err(invalid(
            "the name has a path, query or user part (expected dns:///name:port)",
        ));
    }
    let (host, port) = split_port(name).map_err(&invalid)?;
    if host.is_empty() {
        return Err(invalid("no name to resolve (expected dns:///name:port)"));
    }
    Ok(Some(DnsTarget {
        host: host.to_owned(),
        port,
    }))
}

/// `host` and port of `name:port`, `[v6]:port`, `name` or `[v6]`.
fn split_port(name: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = match name.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, rest)) => match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("expected [address]:port"),
            },
            None => return Err("an IPv6 address without its closing ]"),
        },
        None => match name.rsplit_once(':') {
            Some((_, _)) if name.matches(':').count() > 1 => {
                return Err("an IPv6 address must be in brackets: [address]:port");
            }
            Some((host, port)) => (host, Some(port)),
            None => (name, None),
        },
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse()
            .map_err(|_| "the port is not a number from 0 to 65535")?,
    };
    Ok((host, port))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(target: &str) -> Option<(String, u16)> {
        dns(target).expect("valid").map(|t| (t.host, t.port))
    }

    #[test]
    fn dns_targets_parse_as_grpc_go_writes_them() {
        assert_eq!(parsed("dns:///users:50051"), Some(("users".into(), 50051)));
        assert_eq!(parsed("dns:users:50051"), Some(("users".into(), 50051)));
        assert_eq!(parsed("DNS:///users"), Some(("users".into(), 443)));
        assert_eq!(parsed("dns:///[::1]:7"), Some(("::1".into(), 7)));
        assert_eq!(parsed("http://users:50051"), None);
    }

    #[test]
    fn bad_dns_targets_say_what_is_wrong() {
        for (target, says) in [
            ("dns:///", "no name"),
            ("dns:///users:x", "port"),
            ("dns://8.8.8.8/users:1", "DNS server"),
            ("dns:///::1:80", "brackets"),
            ("dns:///users:1/path", "path"),
        ] {
            let error = dns(target).expect_err(target).to_string();
            assert!(error.contains(target) && error.contains(says), "{error}");
        }
    }
}
