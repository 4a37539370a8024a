//! One field's `(buf.validate.field)` rules: checked against the field's
//! type, and written as checks of `value` (a reference to what prost holds:
//! the scalar, the message, the `Vec` or the `HashMap`).
//!
//! Rule ids and messages are protovalidate's, so clients matching on
//! `string.min_len` or showing the message see what other implementations
//! give them.
//!
//! The driver is here: `FieldPlan` reads a field's `required` and `ignore`,
//! `field_rules` sends each rules message to its family, checked against the
//! field's type and shape. Each family is a file: `string`, `bytes`,
//! `boolean`, `enumeration`, `numeric`, `time` (`Timestamp` and
//! `Duration`), `repeated`, `map` and `cel`; `range` (`gt`/`lt` bounds) and
//! `membership` (`in`/`not_in`) are what several families share.

mod boolean;
mod bytes;
mod cel;
mod enumeration;
mod map;
mod membership;
mod numeric;
mod range;
mod repeated;
mod string;
mod time;

use proc_macro2::TokenStream;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind};
use quote::quote;

use super::{MessageWriter, Shape, message_type};
use numeric::Num;
use time::Time;

/// `buf.validate.Ignore` values.
const IGNORE_IF_ZERO_VALUE: i32 = 1;
const IGNORE_ALWAYS: i32 = 3;

/// What a field's rules make of it.
pub(super) struct FieldPlan {
    /// The checks of `value`, when the field is set.
    pub checks: TokenStream,
    /// `required`: unset (or zero, for a field without presence) is a violation.
    pub required: bool,
    /// `ignore = IGNORE_IF_ZERO_VALUE`: no checks of a zero value.
    pub ignore_if_zero: bool,
    /// `ignore = IGNORE_ALWAYS`: no checks at all.
    pub ignore_always: bool,
}

impl FieldPlan {
    pub(super) fn read(
        writer: &mut MessageWriter<'_>,
        field: &FieldDescriptor,
        rules: Option<&DynamicMessage>,
        path: &[i32],
        shape: Shape,
    ) -> FieldPlan {
        let mut plan = FieldPlan {
            checks: TokenStream::new(),
            required: false,
            ignore_if_zero: false,
            ignore_always: false,
        };
        let Some(rules) = rules else {
            return plan;
        };
        let (required, ignore) = modifiers(rules);
        plan.required = required;
        plan.ignore_if_zero = ignore == IGNORE_IF_ZERO_VALUE;
        plan.ignore_always = ignore == IGNORE_ALWAYS;
        let at = Target {
            field,
            label: field.name().to_owned(),
            shape,
        };
        plan.checks = writer.field_rules(&at, rules, path);
        plan
    }
}

/// `required` and `ignore` of a `FieldRules`.
fn modifiers(rules: &DynamicMessage) -> (bool, i32) {
    let required = rules
        .get_field_by_name("required")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let ignore = rules
        .get_field_by_name("ignore")
        .and_then(|v| v.as_enum_number())
        .unwrap_or(0);
    (required, ignore)
}

/// What a set of rules applies to: a field as a whole, or its items, keys
/// or values (then `label` is empty: the path already says where).
struct Target<'a> {
    field: &'a FieldDescriptor,
    label: String,
    shape: Shape,
}

/// The expression (a `bool`) saying whether `value` is its type's zero.
pub(super) fn zero_test(field: &FieldDescriptor, shape: Shape) -> TokenStream {
    match shape {
        Shape::List | Shape::Map => quote! { value.is_empty() },
        _ => scalar_zero(&field.kind()),
    }
}

fn scalar_zero(kind: &Kind) -> TokenStream {
    match kind {
        Kind::String | Kind::Bytes => quote! { value.is_empty() },
        Kind::Bool => quote! { !*value },
        Kind::Float | Kind::Double => quote! { *value == 0.0 },
        Kind::Message(_) => quote! { false },
        _ => quote! { *value == 0 },
    }
}

/// The name of the rules message for a field kind (`int32`, `string`, …).
fn rules_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Double => "double",
        Kind::Float => "float",
        Kind::Int32 => "int32",
        Kind::Int64 => "int64",
        Kind::Uint32 => "uint32",
        Kind::Uint64 => "uint64",
        Kind::Sint32 => "sint32",
        Kind::Sint64 => "sint64",
        Kind::Fixed32 => "fixed32",
        Kind::Fixed64 => "fixed64",
        Kind::Sfixed32 => "sfixed32",
        Kind::Sfixed64 => "sfixed64",
        Kind::Bool => "bool",
        Kind::String => "string",
        Kind::Bytes => "bytes",
        Kind::Enum(_) => "enum",
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Any" => "any",
            "google.protobuf.Duration" => "duration",
            "google.protobuf.Timestamp" => "timestamp",
            "google.protobuf.FieldMask" => "field_mask",
            _ => "message",
        },
    }
}

impl MessageWriter<'_> {
    /// The checks of one `FieldRules` on `at`.
    fn field_rules(
        &mut self,
        at: &Target<'_>,
        rules: &DynamicMessage,
        path: &[i32],
    ) -> TokenStream {
        let mut checks = TokenStream::new();
        let label = at.label.as_str();
        let cel = self.cel_rules(rules, path);
        if !cel.is_empty()
            && let Some(message) = message_type(at.field)
        {
            self.read_by_cel.insert(message.full_name().to_owned());
        }
        let kind = at.field.kind();
        for (member, value) in rules.fields() {
            let name = member.name();
            match name {
                "cel" | "cel_expression" | "required" | "ignore" => {}
                "repeated" if at.shape == Shape::List => {
                    checks.extend(self.repeated(at, value.as_message(), path));
                }
                "map" if at.shape == Shape::Map => {
                    checks.extend(self.map(at, value.as_message(), path));
                }
                "repeated" | "map" => self.report(
                    path,
                    format!(
                        "buf.validate: `{name}` rules on field `{}`, which is not a {name} field",
                        at.field.name()
                    ),
                ),
                _ if matches!(at.shape, Shape::List | Shape::Map) => self.report(
                    path,
                    format!(
                        "buf.validate: `{name}` rules on the {} field `{}`; rules of its {} go in `{}`",
                        if at.shape == Shape::List { "repeated" } else { "map" },
                        at.field.name(),
                        if at.shape == Shape::List { "items" } else { "keys and values" },
                        if at.shape == Shape::List { "repeated.items" } else { "map.keys / map.values" },
                    ),
                ),
                _ if name != rules_name(&kind) => self.report(
                    path,
                    format!(
                        "buf.validate: `{name}` rules on field `{}` of type {}",
                        at.field.name(),
                        rules_name(&kind)
                    ),
                ),
                _ => {
                    let Some(typed) = value.as_message() else { continue };
                    if typed.extensions().next().is_some() {
                        self.report(
                            path,
                            "buf.validate: predefined (extension) rules are not supported by Keel"
                                .to_owned(),
                        );
                    }
                    checks.extend(self.scalar(label, &kind, typed, path));
                }
            }
        }
        // The CEL rules after the standard ones, as protovalidate reports them.
        for rule in cel {
            checks.extend(quote! { #rule.check(violations, #label, value); });
        }
        checks
    }

    /// The rules of one scalar value (`string`, `int32`, …) of `kind`.
    fn scalar(
        &mut self,
        label: &str,
        kind: &Kind,
        rules: &DynamicMessage,
        path: &[i32],
    ) -> TokenStream {
        match kind {
            Kind::String => self.string(label, rules, path),
            Kind::Bytes => self.bytes(label, rules, path),
            Kind::Bool => self.boolean(label, rules, path),
            Kind::Enum(descriptor) => self.enumeration(label, descriptor, rules, path),
            Kind::Message(_) => match rules_name(kind) {
                "timestamp" => self.time(label, Time::Timestamp, rules, path),
                "duration" => self.time(label, Time::Duration, rules, path),
                name => {
                    self.report(
                        path,
                        format!("buf.validate: `{name}` rules are not supported by Keel yet"),
                    );
                    TokenStream::new()
                }
            },
            number => match Num::of(number) {
                Some(num) => self.number(label, num, rules_name(kind), rules, path),
                None => TokenStream::new(),
            },
        }
    }

    fn unsupported(&mut self, type_name: &str, rule: &str, path: &[i32]) {
        self.report(
            path,
            format!("buf.validate: rule `{type_name}.{rule}` is not supported by Keel"),
        );
    }

    /// The rules of each item of a list, or each key or value of a map
    /// (`field` is the list's, or the map entry's key or value field): none
    /// when there are none, or they are ignored.
    fn element_rules(
        &mut self,
        field: &FieldDescriptor,
        rules: &DynamicMessage,
        path: &[i32],
    ) -> Option<TokenStream> {
        let (_, ignore) = modifiers(rules);
        if ignore == IGNORE_ALWAYS {
            return None;
        }
        let element = Target {
            field,
            label: String::new(),
            shape: Shape::Plain,
        };
        let inner = self.field_rules(&element, rules, path);
        if inner.is_empty() {
            return None;
        }
        Some(match ignore == IGNORE_IF_ZERO_VALUE {
            true => {
                let zero = scalar_zero(&field.kind());
                quote! { if !(#zero) { #inner } }
            }
            false => inner,
        })
    }
}

/// `count` of a thing in words: `1 character`, `3 characters` (a rule's
/// message reads as a sentence whatever its bound).
pub(super) fn counted(count: u64, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}
