//! Rust identifiers as prost-build makes them from proto names, for the
//! code Keel writes beside prost's (redacted `Debug`, validation).

use heck::{ToSnakeCase, ToUpperCamelCase};
use proc_macro2::Ident;
use quote::format_ident;

/// prost-build's identifier rule: a Rust keyword becomes a raw identifier,
/// or gets a `_` suffix where a raw one is not allowed.
pub(crate) fn sanitize(ident: &str) -> String {
    match ident {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if"
        | "impl" | "in" | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref"
        | "return" | "static" | "struct" | "trait" | "true" | "type" | "unsafe" | "use"
        | "where" | "while" | "dyn" | "abstract" | "become" | "box" | "do" | "final" | "macro"
        | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async" | "await"
        | "try" | "gen" => format!("r#{ident}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{ident}_"),
        s if s.starts_with(|c: char| c.is_numeric()) => format!("_{ident}"),
        _ => ident.to_owned(),
    }
}

/// `name` (possibly `r#name`) as an identifier.
pub(crate) fn raw_ident(name: &str) -> Ident {
    match name.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, proc_macro2::Span::call_site()),
        None => format_ident!("{}", name),
    }
}

/// A field's or module's identifier: the proto name in snake case.
pub(crate) fn snake(proto_name: &str) -> Ident {
    raw_ident(&sanitize(&proto_name.to_snake_case()))
}

/// A type's or variant's identifier: the proto name in upper camel case.
pub(crate) fn camel(proto_name: &str) -> Ident {
    raw_ident(&sanitize(&proto_name.to_upper_camel_case()))
}
