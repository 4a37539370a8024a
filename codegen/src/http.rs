//! The standard `google.api.http` method option (`google/api/http.proto`,
//! bundled): each method's HTTP routes, read and checked at build time.
//!
//! A route is a verb and a path template:
//!
//! ```text
//! Template = "/" Segments [ ":" Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! ```
//!
//! Checked: the template's syntax (`**` last, no variable inside a
//! variable, no empty segment); each variable names a singular scalar field
//! of the request, through singular message fields; `body` is `*` or a
//! field of the request, and `GET` and `DELETE` have none; `response_body`
//! is a field of the response; two routes of the build never share a verb
//! and path.

use std::fmt;

use prost_reflect::{
    DynamicMessage, ExtensionDescriptor, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage,
};

use crate::error::closest;
use crate::locate::Step;

/// One HTTP route of a method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    /// `GET`, `PUT`, `POST`, `DELETE`, `PATCH`, or a custom pattern's kind.
    pub method: String,
    /// The path template.
    pub path: PathTemplate,
    /// Where the request body goes: `None` (no body), `Some("*")` (the whole
    /// request), or a top-level field of the request.
    pub body: Option<String>,
    /// The response field that is the response body; `None`: the whole response.
    pub response_body: Option<String>,
}

impl fmt::Display for HttpRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(body) = &self.body {
            write!(f, " (body {body})")?;
        }
        Ok(())
    }
}

/// A parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    /// Its segments, in order.
    pub segments: Vec<Segment>,
    /// The `:verb` suffix.
    pub verb: Option<String>,
}

/// One segment of a [`PathTemplate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A literal segment (`v1`).
    Literal(String),
    /// `*`: one segment.
    Single,
    /// `**`: the rest of the path.
    Rest,
    /// `{field.path=pattern}`: what matches `pattern` (default `*`) is the
    /// value of the request field `field`.
    Variable {
        /// The field path, dotted.
        field: String,
        /// The segments it matches.
        pattern: Vec<Segment>,
    },
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.segments {
            write!(f, "/{segment}")?;
        }
        if let Some(verb) = &self.verb {
            write!(f, ":{verb}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Literal(l) => f.write_str(l),
            Segment::Single => f.write_str("*"),
            Segment::Rest => f.write_str("**"),
            Segment::Variable { field, pattern } if pattern == &[Segment::Single] => {
                write!(f, "{{{field}}}")
            }
            Segment::Variable { field, pattern } => {
                let pattern: Vec<String> = pattern.iter().map(ToString::to_string).collect();
                write!(f, "{{{field}={}}}", pattern.join("/"))
            }
        }
    }
}

impl PathTemplate {
    /// Parses a template, or says what is wrong with it.
    pub fn parse(template: &str) -> Result<PathTemplate, String> {
        let Some(rest) = template.strip_prefix('/') else {
            return Err(format!("path {template:?} does not start with '/'"));
        };
        // A `:verb` after the last segment (a ':' outside any variable).
        let (path, verb) = match last_colon_outside_braces(rest) {
            Some(i) => (&rest[..i], Some(rest[i + 1..].to_owned())),
            None => (rest, None),
        };
        if let Some(verb) = &verb
            && !is_literal(verb)
        {
            return Err(format!("path {template:?}: verb {verb:?} is not a literal"));
        }
        let segments =
            parse_segments(path, false).map_err(|e| format!("path {template:?}: {e}"))?;
        if segments.is_empty() {
            return Err(format!("path {template:?} has no segments"));
        }
        let flat: Vec<&Segment> = segments
            .iter()
            .flat_map(|s| match s {
                Segment::Variable { pattern, .. } => pattern.iter().collect(),
                other => vec![other],
            })
            .collect();
        if let Some(i) = flat.iter().position(|s| **s == Segment::Rest)
            && i + 1 != flat.len()
        {
            return Err(format!("path {template:?}: `**` must be the last segment"));
        }
        Ok(PathTemplate { segments, verb })
    }

    /// The field paths of its variables, in order.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Variable { field, .. } => Some(field.as_str()),
            _ => None,
        })
    }

    /// The template with every variable's name left out (`/v1/users/*`):
    /// two routes with the same verb and shape would match the same paths.
    fn shape(&self) -> String {
        let mut shape = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Variable { pattern, .. } => {
                    for p in pattern {
                        shape.push('/');
                        shape.push_str(&p.to_string());
                    }
                }
                other => {
                    shape.push('/');
                    shape.push_str(&other.to_string());
                }
            }
        }
        if let Some(verb) = &self.verb {
            shape.push(':');
            shape.push_str(verb);
        }
        shape
    }
}

fn last_colon_outside_braces(path: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut found = None;
    for (i, c) in path.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ':' if depth == 0 => found = Some(i),
            _ => {}
        }
    }
    found
}

/// A literal segment: unreserved characters of RFC 3986 and `%`-escapes.
fn is_literal(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;=@".contains(&b))
}

fn parse_segments(path: &str, in_variable: bool) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        let (segment, after) = if let Some(inner) = rest.strip_prefix('{') {
            if in_variable {
                return Err("a variable inside a variable".to_owned());
            }
            let close = inner.find('}').ok_or("a '{' without its '}'")?;
            let (field, pattern) = match inner[..close].split_once('=') {
                Some((field, pattern)) => (field, parse_segments(pattern, true)?),
                None => (&inner[..close], vec![Segment::Single]),
            };
            if pattern.is_empty() {
                return Err(format!("variable {{{field}}} has an empty pattern"));
            }
            if field.is_empty()
                || !field.split('.').all(|part| {
                    part.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            {
                return Err(format!("{field:?} is not a field path"));
            }
            (
                Segment::Variable {
                    field: field.to_owned(),
                    pattern,
                },
                &inner[close + 1..],
            )
        } else {
            let end = rest.find('/').unwrap_or(rest.len());
            let text = &rest[..end];
            let segment = match text {
                "*" => Segment::Single,
                "**" => Segment::Rest,
                "" => return Err("an empty segment".to_owned()),
                literal if is_literal(literal) => Segment::Literal(literal.to_owned()),
                other => return Err(format!("segment {other:?} is not a literal, `*` or `**`")),
            };
            (segment, &rest[end..])
        };
        segments.push(segment);
        rest = match after.strip_prefix('/') {
            Some("") => return Err("a trailing '/'".to_owned()),
            Some(next) => next,
            None if after.is_empty() => after,
            None => return Err(format!("unexpected {after:?} after a segment")),
        };
    }
    Ok(segments)
}

/// The HTTP routes of `method`, from its `google.api.http` option; each
/// problem is reported with the field of the option it is about.
pub(crate) fn routes(
    method: &MethodDescriptor,
    ext: Option<&ExtensionDescriptor>,
    report: &mut dyn FnMut(&[Step<'_>], String),
) -> Vec<HttpRoute> {
    let Some(ext) = ext else {
        return Vec::new();
    };
    let options = method.options();
    if !options.has_extension(ext) {
        return Vec::new();
    }
    let rule = options.get_extension(ext);
    let Some(rule) = rule.as_message() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    read_rule(method, rule, &[], report, &mut found);
    found
}

/// Reads one rule: the option's own (`at` empty) or one of its
/// `additional_bindings` (`at` that binding).
fn read_rule(
    method: &MethodDescriptor,
    rule: &DynamicMessage,
    at: &[Step<'_>],
    report: &mut dyn FnMut(&[Step<'_>], String),
    found: &mut Vec<HttpRoute>,
) {
    let top = at.is_empty();
    // A problem at the field `within` of this rule.
    let mut report = |within: &[Step<'_>], message: String| report(&[at, within].concat(), message);
    let text = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    // The verb, the template, and the field the template is written in.
    let mut pattern = None;
    for verb in ["get", "put", "post", "delete", "patch"] {
        if let Some(field) = rule.descriptor().get_field_by_name(verb)
            && rule.has_field(&field)
        {
            pattern = Some((verb.to_ascii_uppercase(), text(verb), vec![(verb, 0)]));
        }
    }
    if let Some(field) = rule.descriptor().get_field_by_name("custom")
        && rule.has_field(&field)
        && let Some(custom) = rule.get_field(&field).as_message()
    {
        let kind = custom
            .get_field_by_name("kind")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let path = custom
            .get_field_by_name("path")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphabetic()) {
            report(
                &[("custom", 0), ("kind", 0)],
                format!("google.api.http: custom kind {kind:?} is not an HTTP method name"),
            );
        }
        pattern = Some((
            kind.to_ascii_uppercase(),
            path,
            vec![("custom", 0), ("path", 0)],
        ));
    }
    let Some((verb, template, template_at)) = pattern else {
        if top || !text("body").is_empty() {
            report(
                &[],
                "google.api.http: no verb (get, put, post, delete, patch or custom)".to_owned(),
            );
        }
        return;
    };
    let path = match PathTemplate::parse(&template) {
        Ok(path) => path,
        Err(problem) => {
            report(&template_at, format!("google.api.http: {problem}"));
            return;
        }
    };
    let input = method.input();
    for variable in path.variables() {
        if let Err(problem) = check_variable(&input, variable) {
            report(
                &template_at,
                format!("google.api.http: path variable {{{variable}}}: {problem}"),
            );
        }
    }
    let body = match text("body") {
        empty if empty.is_empty() => None,
        body => Some(body),
    };
    if let Some(body) = &body {
        if matches!(verb.as_str(), "GET" | "DELETE") {
            report(
                &[("body", 0)],
                format!("google.api.http: a {verb} route has no body (body: {body:?})"),
            );
        } else if body != "*" && input.get_field_by_name(body).is_none() {
            report(
                &[("body", 0)],
                format!(
                    "google.api.http: body {body:?} is no field of {}{}",
                    input.full_name(),
                    field_suggestion(&input, body)
                ),
            );
        }
    }
    let response_body = match text("response_body") {
        empty if empty.is_empty() => None,
        field => Some(field),
    };
    if let Some(field) = &response_body
        && method.output().get_field_by_name(field).is_none()
    {
        report(
            &[("response_body", 0)],
            format!(
                "google.api.http: response_body {field:?} is no field of {}{}",
                method.output().full_name(),
                field_suggestion(&method.output(), field)
            ),
        );
    }
    found.push(HttpRoute {
        method: verb,
        path,
        body,
        response_body,
    });
    if let Some(list) = rule.get_field_by_name("additional_bindings") {
        for (i, binding) in list.as_list().unwrap_or_default().iter().enumerate() {
            let Some(binding) = binding.as_message() else {
                continue;
            };
            if !top {
                report(
                    &[("additional_bindings", i)],
                    "google.api.http: additional_bindings may not have their own".to_owned(),
                );
                continue;
            }
            read_rule(
                method,
                binding,
                &[("additional_bindings", i)],
                &mut report,
                found,
            );
        }
    }
}

/// A path variable names a singular scalar field, through singular
/// message fields.
fn check_variable(input: &MessageDescriptor, path: &str) -> Result<(), String> {
    let mut message = input.clone();
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Some(field) = message.get_field_by_name(part) else {
            return Err(format!(
                "no field {part:?} in {}{}",
                message.full_name(),
                field_suggestion(&message, part)
            ));
        };
        if field.is_map() || field.is_list() {
            return Err(format!(
                "{part:?} is a {} field",
                if field.is_map() { "map" } else { "repeated" }
            ));
        }
        let last = i + 1 == parts.len();
        match (field.kind(), last) {
            (Kind::Message(m), false) => message = m,
            (Kind::Message(m), true) => {
                return Err(format!("{part:?} is a message field ({})", m.full_name()));
            }
            (_, false) => return Err(format!("{part:?} is not a message field")),
            (_, true) => {}
        }
    }
    Ok(())
}

/// "; did you mean `user_id`?" when a field of `message` is close to
/// `name`, else nothing.
fn field_suggestion(message: &MessageDescriptor, name: &str) -> String {
    let fields: Vec<String> = message.fields().map(|f| f.name().to_owned()).collect();
    closest(name, fields.iter().map(String::as_str))
        .map(|field| format!("; did you mean `{field}`?"))
        .unwrap_or_default()
}

/// The route of the build that `route` clashes with (the same verb and a
/// path of the same shape), among `seen`.
pub(crate) fn clash<'a>(seen: &'a [(String, HttpRoute)], route: &HttpRoute) -> Option<&'a str> {
    seen.iter()
        .find(|(_, other)| other.method == route.method && other.path.shape() == route.path.shape())
        .map(|(name, _)| name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_print_back() {
        for template in [
            "/v1/users/{id}",
            "/v1/{name=users/*}",
            "/v1/{name=projects/*/users/*}:activate",
            "/v1/files/**",
            "/v1/{path=files/**}",
            "/v1/users:search",
            "/v1/users/{user.id}/keys/*",
        ] {
            let parsed = PathTemplate::parse(template).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.to_string(), template);
        }
        let parsed = PathTemplate::parse("/v1/{name=projects/*/users/*}:activate").unwrap();
        assert_eq!(parsed.verb.as_deref(), Some("activate"));
        assert_eq!(parsed.variables().collect::<Vec<_>>(), ["name"]);
    }

    #[test]
    fn malformed_templates_say_why() {
        for (template, problem) in [
            ("v1/users", "does not start with '/'"),
            ("/v1//users", "an empty segment"),
            ("/v1/users/", "a trailing '/'"),
            ("/v1/**/users", "`**` must be the last segment"),
            ("/v1/{id", "a '{' without its '}'"),
            ("/v1/{a={b}}", "a variable inside a variable"),
            ("/v1/{9id}", "is not a field path"),
            ("/v1/us ers", "is not a literal"),
            ("/v1/users:", "is not a literal"),
        ] {
            let error = PathTemplate::parse(template).unwrap_err();
            assert!(error.contains(problem), "{template}: {error}");
        }
    }

    #[test]
    fn routes_of_the_same_shape_clash() {
        let route = |method: &str, path: &str| HttpRoute {
            method: method.into(),
            path: PathTemplate::parse(path).unwrap(),
            body: None,
            response_body: None,
        };
        let seen = vec![("a.S/Get".to_owned(), route("GET", "/v1/users/{id}"))];
        assert_eq!(
            clash(&seen, &route("GET", "/v1/users/{name}")),
            Some("a.S/Get")
        );
        assert_eq!(clash(&seen, &route("POST", "/v1/users/{id}")), None);
        assert_eq!(clash(&seen, &route("GET", "/v1/users/{id}:undelete")), None);
    }
}
