//! What a field's type says about its values, read from the type as
//! written: a derive sees tokens, not types, so `Duration` is a duration
//! and `Secret` a secret by name (as serde's `with` and prost's types are
//! chosen).

use syn::{GenericArgument, PathArguments, Type};

/// The kind of a field's values (inside an `Option`, if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `Duration`: written as text (`"5m"`), bounded by durations.
    Duration,
    /// `String`, `PathBuf`: environment values taken verbatim.
    Text,
    /// `Secret`, `DatabaseUrl`: text that is never shown.
    Secret,
    /// Integers and floats: bounded by numbers.
    Number,
    Bool,
    /// `Vec`, maps: several values, given in a file.
    Collection,
    /// Anything else (an address, an enum): decoded from its TOML value.
    Other,
}

/// A field's type, as far as the derive needs it.
pub(crate) struct Shape<'a> {
    /// Whether it is an `Option`: absent by default, bounds apply when set.
    pub optional: bool,
    /// The type inside the `Option`, or the type.
    pub inner: &'a Type,
    pub kind: Kind,
}

impl<'a> Shape<'a> {
    pub(crate) fn of(ty: &'a Type) -> Self {
        let (optional, inner) = match generic_argument(ty, "Option") {
            Some(inner) => (true, inner),
            None => (false, ty),
        };
        let kind = match last_name(inner).as_deref() {
            Some("Duration") => Kind::Duration,
            Some("String" | "PathBuf") => Kind::Text,
            Some("Secret" | "DatabaseUrl") => Kind::Secret,
            Some(
                "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64"
                | "i128" | "isize" | "f32" | "f64",
            ) => Kind::Number,
            Some("bool") => Kind::Bool,
            Some("Vec" | "BTreeMap" | "HashMap" | "BTreeSet" | "HashSet") => Kind::Collection,
            _ => Kind::Other,
        };
        Shape {
            optional,
            inner,
            kind,
        }
    }

    /// Whether environment values are text as given, never numbers.
    pub(crate) fn text(&self) -> bool {
        matches!(self.kind, Kind::Text | Kind::Secret)
    }
}

/// The last path segment's name of `ty` (`Duration` of
/// `std::time::Duration`).
fn last_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|s| s.ident.to_string())
        }
        _ => None,
    }
}

/// `T` of `wrapper<T>` (`Option<T>`), if `ty` is one.
fn generic_argument<'a>(ty: &'a Type, wrapper: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let segment = path.path.segments.last()?;
    if segment.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(arguments) = &segment.arguments else {
        return None;
    };
    match arguments.args.first()? {
        GenericArgument::Type(inner) if arguments.args.len() == 1 => Some(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ty: &str) -> (bool, Kind) {
        let ty: Type = syn::parse_str(ty).unwrap();
        let shape = Shape::of(&ty);
        (shape.optional, shape.kind)
    }

    #[test]
    fn kinds_are_read_from_the_type_as_written() {
        assert_eq!(kind("std::time::Duration"), (false, Kind::Duration));
        assert_eq!(kind("Option<Duration>"), (true, Kind::Duration));
        assert_eq!(
            kind("Option<keel_rpc::config::Secret>"),
            (true, Kind::Secret)
        );
        assert_eq!(kind("PathBuf"), (false, Kind::Text));
        assert_eq!(kind("u32"), (false, Kind::Number));
        assert_eq!(kind("Vec<KeyConfig>"), (false, Kind::Collection));
        assert_eq!(kind("SocketAddr"), (false, Kind::Other));
    }
}
