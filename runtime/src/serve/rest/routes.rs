//! The routes: each `google.api.http` route of the served methods, with
//! the descriptors of its messages, and how a request's method and path
//! find one (its path template matched, its variables bound and
//! percent-decoded), and which methods a path has (for CORS preflights).

use std::sync::Arc;

use axum::body::Body;
use http::{Method, Response};
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor, ReflectMessage as _};

use prometheus::IntCounter;

use super::head::HeadLimits;
use super::request::{Reading, TIMEOUT, field_named};
use super::response::Refusal;
use crate::clock;
use crate::metrics::{CallRecord, Metrics, Protocol, ServiceMetrics};
use crate::policy::{Access, HttpRoute, MethodKind, PathSegment, ServicePolicy};

/// The variables a path bound, percent-decoded, by field path; or, when one
/// does not decode, the refusal naming it.
pub(super) type Bound = Result<Vec<(&'static str, String)>, String>;

/// One route, with the descriptors it needs, ready to match.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) http: &'static HttpRoute,
    /// The gRPC path of its method (`/user.v1.UserService/GetUser`).
    pub(super) grpc_path: &'static str,
    pub(super) kind: MethodKind,
    pub(super) input: MessageDescriptor,
    pub(super) output: MessageDescriptor,
    /// Whether its `timeout` query parameter is the call's deadline: the
    /// request message has no field of that name.
    pub(super) timeout_parameter: bool,
    /// Whether the request holds a `debug_redact` field (anywhere): then a
    /// request that does not decode is refused without the decoder's
    /// message, which may quote a value.
    pub(super) sensitive: bool,
    /// Whether its method's access rule reads a bearer token: then a
    /// request without an `authorization` header is refused before its body
    /// is read.
    pub(super) needs_token: bool,
    /// Where its requests whose body did not arrive in time are counted
    /// (`keel_server_request_body_timeouts_total`, under its method).
    pub(super) late: Option<IntCounter>,
    /// Where a request refused before it became a call (a body that is not
    /// the message, a bad path value) is counted: its method's counts, at
    /// its REST slot.
    counts: Option<(Arc<ServiceMetrics>, usize)>,
}

impl Route {
    /// Counts `answer` under the route's method, as a call that ended
    /// with its code, when it refused the request before it became a call.
    pub(super) fn count_refusal(&self, answer: &Response<Body>) {
        if let (Some((service, slot)), Some(Refusal(code))) =
            (&self.counts, answer.extensions().get::<Refusal>())
        {
            CallRecord::start(service, *slot, clock::now()).end(*code, 0);
        }
    }
}

/// Every route of the served services.
#[derive(Debug)]
pub(crate) struct Routes {
    pub(super) routes: Vec<Route>,
    /// How a request is read.
    pub(super) reading: Reading,
    /// The limits of a request's head.
    pub(super) head: HeadLimits,
}

/// Why the routes could not be prepared: codegen's descriptors do not
/// describe the messages it named (a mismatched build).
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The descriptor set does not decode.
    #[error("the descriptors of {service}: {source}")]
    Descriptors {
        /// The service.
        service: &'static str,
        /// Why.
        source: prost_reflect::DescriptorError,
    },
    /// A message is not in them.
    #[error("{message} (of {service}) is not in its descriptors")]
    Missing {
        /// The service.
        service: &'static str,
        /// The message.
        message: &'static str,
    },
}

impl Routes {
    /// The routes of `services`; `None` when none has any.
    pub(super) fn new(
        services: &[&'static ServicePolicy],
        reading: Reading,
        head: HeadLimits,
        metrics: &Metrics,
    ) -> Result<Option<Arc<Routes>>, RestError> {
        let mut routes = Vec::new();
        let mut pools: Vec<(*const u8, DescriptorPool)> = Vec::new();
        for service in services {
            let late = metrics.request_body_timeouts(service);
            let counts = metrics.service(service);
            for (index, method) in service.methods.iter().enumerate() {
                for http in method.http {
                    let key = http.descriptors.as_ptr();
                    let pool = match pools.iter().find(|(k, _)| *k == key) {
                        Some((_, pool)) => pool.clone(),
                        None => {
                            let pool =
                                DescriptorPool::decode(http.descriptors).map_err(|source| {
                                    RestError::Descriptors {
                                        service: service.name,
                                        source,
                                    }
                                })?;
                            pools.push((key, pool.clone()));
                            pool
                        }
                    };
                    let message = |name: &'static str| {
                        pool.get_message_by_name(name).ok_or(RestError::Missing {
                            service: service.name,
                            message: name,
                        })
                    };
                    let input = message(http.input)?;
                    routes.push(Route {
                        http,
                        grpc_path: method.path,
                        kind: method.kind,
                        timeout_parameter: field_named(&input, TIMEOUT).is_none(),
                        sensitive: has_redacted(&input, &mut Vec::new()),
                        needs_token: matches!(
                            method.access,
                            Access::Token { .. }
                                | Access::Peer {
                                    scopes: Some(_),
                                    ..
                                }
                        ),
                        late: late.get(index).cloned().flatten(),
                        counts: counts
                            .clone()
                            .map(|counts| (counts, Protocol::Rest.slot(index))),
                        input,
                        output: message(http.output)?,
                    });
                }
            }
        }
        Ok((!routes.is_empty()).then(|| {
            Arc::new(Routes {
                routes,
                reading,
                head,
            })
        }))
    }

    /// The index of the route `method` and `path` match, with the values of
    /// its variables (or the refusal of one that does not decode).
    pub(super) fn find(&self, method: &Method, path: &str) -> Option<(usize, Bound)> {
        self.routes.iter().enumerate().find_map(|(index, route)| {
            if route.http.method != method.as_str() {
                return None;
            }
            let vars = route.bind(path)?;
            // A variable whose value does not decode bound nothing: name it.
            let mut fields = route.http.path.iter().filter_map(|segment| match segment {
                PathSegment::Variable { field, .. } => Some(*field),
                _ => None,
            });
            let bound = match fields.find(|field| !vars.iter().any(|(f, _)| f == field)) {
                None => Ok(vars),
                Some(field) => Err(format!(
                    "{field}: the path's value is not percent-encoded UTF-8 (each \"%\" starts \
                     an escape of two hex digits, and the bytes they make are UTF-8)"
                )),
            };
            Some((index, bound))
        })
    }

    /// The methods of the routes `path` matches, `HEAD` with `GET` (which
    /// answers it), in the order of the routes.
    pub(crate) fn methods(&self, path: &str) -> Vec<&'static str> {
        let mut methods = Vec::new();
        for route in &self.routes {
            if route.bind(path).is_none() {
                continue;
            }
            let found: &[&'static str] = match route.http.method {
                "GET" => &["GET", "HEAD"],
                method => &[method],
            };
            for method in found {
                if !methods.contains(method) {
                    methods.push(*method);
                }
            }
        }
        methods
    }
}

impl Route {
    /// The variables `path` binds when it matches this route's template.
    fn bind(&self, path: &str) -> Option<Vec<(&'static str, String)>> {
        let path = path.strip_prefix('/')?;
        let path = match self.http.verb {
            Some(verb) => path.strip_suffix(verb)?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = path.split('/').collect();
        let mut vars = Vec::new();
        matches(self.http.path, &parts, &mut vars).then_some(vars)
    }
}

/// Whether `pattern` matches all of `parts`, collecting variables,
/// percent-decoded; one whose value does not decode (a malformed escape, or
/// bytes that are not UTF-8) is left out, for [`Routes::find`] to name.
fn matches(
    pattern: &'static [PathSegment],
    parts: &[&str],
    vars: &mut Vec<(&'static str, String)>,
) -> bool {
    let Some((first, rest)) = pattern.split_first() else {
        return parts.is_empty();
    };
    match first {
        PathSegment::Literal(literal) => {
            parts.first() == Some(literal) && matches(rest, &parts[1..], vars)
        }
        PathSegment::Single => {
            parts.first().is_some_and(|p| !p.is_empty()) && matches(rest, &parts[1..], vars)
        }
        // `**` is last: the rest of the path.
        PathSegment::Rest => true,
        PathSegment::Variable {
            field,
            pattern: inner,
        } => {
            let taken = match inner.last() {
                Some(PathSegment::Rest) => parts.len(),
                _ => inner.len(),
            };
            if taken > parts.len() || taken == 0 && !inner.is_empty() {
                return false;
            }
            let (value, after) = parts.split_at(taken);
            let mut ignored = Vec::new();
            if !matches(inner, value, &mut ignored) {
                return false;
            }
            if let Some(value) = percent_decode(&value.join("/")) {
                vars.push((field, value));
            }
            matches(rest, after, vars)
        }
    }
}

/// `%XX` escapes decoded; `None` when a `%` is not followed by two hex
/// digits, or the bytes are not UTF-8 (a value is never guessed at: a
/// replacement character, or an escape taken literally, would make two
/// spellings of one path name different resources).
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'%', _, _) => return None,
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `message`, or a message it holds, has a `debug_redact` field.
fn has_redacted(message: &MessageDescriptor, seen: &mut Vec<String>) -> bool {
    if seen.iter().any(|s| s == message.full_name()) {
        return false;
    }
    seen.push(message.full_name().to_owned());
    message.fields().any(|field| {
        let options = field.options();
        let redacted = options
            .descriptor()
            .get_field_by_name("debug_redact")
            .is_some_and(|f| options.get_field(&f).as_bool() == Some(true));
        redacted || matches!(field.kind(), Kind::Message(inner) if has_redacted(&inner, seen))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    static ROUTE: [PathSegment; 4] = [
        PathSegment::Literal("v1"),
        PathSegment::Variable {
            field: "name",
            pattern: &[PathSegment::Literal("users"), PathSegment::Single],
        },
        PathSegment::Literal("files"),
        PathSegment::Variable {
            field: "path",
            pattern: &[PathSegment::Rest],
        },
    ];

    #[test]
    fn templates_match_and_bind_their_variables() {
        let mut vars = Vec::new();
        let parts: Vec<&str> = "v1/users/u%2D1/files/a/b.txt".split('/').collect();
        assert!(matches(&ROUTE, &parts, &mut vars));
        assert_eq!(
            vars,
            vec![
                ("name", "users/u-1".to_owned()),
                ("path", "a/b.txt".to_owned())
            ]
        );
        for path in [
            "v1/groups/g/files/a",
            "v1/users/files/a",
            "v2/users/u/files/a",
        ] {
            let parts: Vec<&str> = path.split('/').collect();
            assert!(!matches(&ROUTE, &parts, &mut Vec::new()), "{path}");
        }
    }

    #[test]
    fn a_value_that_does_not_decode_is_refused_not_guessed() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        for text in ["%zz", "a%2", "%", "%ff", "%C3", "%ED%A0%80"] {
            assert_eq!(percent_decode(text), None, "{text}");
        }
        // It binds nothing, for `find` to name.
        let mut vars = Vec::new();
        let parts: Vec<&str> = "v1/users/%zz/files/a".split('/').collect();
        assert!(matches(&ROUTE, &parts, &mut vars));
        assert_eq!(vars, vec![("path", "a".to_owned())]);
    }
}
