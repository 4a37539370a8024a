//! One field's `(buf.validate.field)` rules: checked against the field's
//! type, and written as checks of `value` (a reference to what prost holds:
//! the scalar, the message, the `Vec` or the `HashMap`).
//!
//! Rule ids and messages are protovalidate's, so clients matching on
//! `string.min_len` or showing the message see what other implementations
//! give them.

use proc_macro2::{Literal, TokenStream};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, Value};
use quote::quote;

use super::{MessageWriter, Shape, message_type};

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

/// A numeric protobuf type, as prost holds it.
#[derive(Clone, Copy)]
enum Num {
    I32,
    I64,
    U32,
    U64,
    F32,
    F64,
}

impl Num {
    fn of(kind: &Kind) -> Option<Num> {
        Some(match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Num::I32,
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Num::I64,
            Kind::Uint32 | Kind::Fixed32 => Num::U32,
            Kind::Uint64 | Kind::Fixed64 => Num::U64,
            Kind::Float => Num::F32,
            Kind::Double => Num::F64,
            _ => return None,
        })
    }

    fn float(self) -> bool {
        matches!(self, Num::F32 | Num::F64)
    }

    /// The literal of a rule's value, and how the message shows it.
    fn literal(self, value: &Value) -> Option<(TokenStream, String)> {
        let literal = |l: Literal| quote! { #l };
        Some(match (self, value) {
            (Num::I32, Value::I32(v)) => (literal(Literal::i32_suffixed(*v)), v.to_string()),
            (Num::I64, Value::I64(v)) => (literal(Literal::i64_suffixed(*v)), v.to_string()),
            (Num::U32, Value::U32(v)) => (literal(Literal::u32_suffixed(*v)), v.to_string()),
            (Num::U64, Value::U64(v)) => (literal(Literal::u64_suffixed(*v)), v.to_string()),
            (Num::F32, Value::F32(v)) => {
                let bits = v.to_bits();
                (quote! { f32::from_bits(#bits) }, v.to_string())
            }
            (Num::F64, Value::F64(v)) => {
                let bits = v.to_bits();
                (quote! { f64::from_bits(#bits) }, v.to_string())
            }
            _ => return None,
        })
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

/// The strings of a repeated string rule.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// A list of values as a message shows it: `[a, b]`.
fn shown(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
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
            Kind::Bool => {
                let mut checks = TokenStream::new();
                for (member, value) in rules.fields() {
                    match (member.name(), value) {
                        ("const", Value::Bool(c)) => {
                            let message = format!("must equal {c}");
                            checks.extend(quote! {
                                if *value != #c { violations.push(#label, "bool.const", #message); }
                            });
                        }
                        ("example", _) => {}
                        (other, _) => self.unsupported("bool", other, path),
                    }
                }
                checks
            }
            Kind::Enum(descriptor) => {
                let mut checks = TokenStream::new();
                for (member, value) in rules.fields() {
                    match (member.name(), value) {
                        ("const", Value::I32(c)) => {
                            let message = format!("must equal {c}");
                            checks.extend(quote! {
                                if *value != #c { violations.push(#label, "enum.const", #message); }
                            });
                        }
                        ("defined_only", Value::Bool(true)) => {
                            let numbers: Vec<i32> =
                                descriptor.values().map(|v| v.number()).collect();
                            checks.extend(quote! {
                                if ![#(#numbers),*].contains(value) {
                                    violations.push(#label, "enum.defined_only", "must be one of the defined enum values");
                                }
                            });
                        }
                        ("defined_only", _) | ("example", _) => {}
                        (rule @ ("in" | "not_in"), list) => {
                            let items: Vec<i32> = list
                                .as_list()
                                .unwrap_or_default()
                                .iter()
                                .filter_map(|v| v.as_i32())
                                .collect();
                            checks.extend(membership(
                                label,
                                "enum",
                                rule,
                                quote! { value },
                                &items,
                                &items.iter().map(i32::to_string).collect::<Vec<_>>(),
                            ));
                        }
                        (other, _) => self.unsupported("enum", other, path),
                    }
                }
                checks
            }
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

    fn number(
        &mut self,
        label: &str,
        num: Num,
        type_name: &str,
        rules: &DynamicMessage,
        path: &[i32],
    ) -> TokenStream {
        let mut checks = TokenStream::new();
        let mut lower: Option<(bool, Value)> = None; // (inclusive, bound)
        let mut upper: Option<(bool, Value)> = None;
        for (member, value) in rules.fields() {
            let rule = member.name();
            match rule {
                "const" => {
                    let Some((lit, shown)) = num.literal(value) else {
                        continue;
                    };
                    let id = format!("{type_name}.const");
                    let message = format!("must equal {shown}");
                    checks.extend(quote! {
                        if *value != #lit { violations.push(#label, #id, #message); }
                    });
                }
                "lt" => upper = Some((false, value.clone())),
                "lte" => upper = Some((true, value.clone())),
                "gt" => lower = Some((false, value.clone())),
                "gte" => lower = Some((true, value.clone())),
                "in" | "not_in" => {
                    let items: Vec<(TokenStream, String)> = value
                        .as_list()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|v| num.literal(v))
                        .collect();
                    let (lits, shown): (Vec<_>, Vec<_>) = items.into_iter().unzip();
                    checks.extend(membership(
                        label,
                        type_name,
                        rule,
                        quote! { value },
                        &lits,
                        &shown,
                    ));
                }
                "finite" if num.float() => {
                    if value.as_bool() == Some(true) {
                        let id = format!("{type_name}.finite");
                        checks.extend(quote! {
                            if !value.is_finite() { violations.push(#label, #id, "must be finite"); }
                        });
                    }
                }
                "example" => {}
                other => self.unsupported(type_name, other, path),
            }
        }
        let bound = |b: &Option<(bool, Value)>| {
            b.as_ref().and_then(|(inclusive, v)| {
                num.literal(v).map(|(literal, shown)| Bound {
                    inclusive: *inclusive,
                    literal,
                    shown,
                })
            })
        };
        // protovalidate: an upper bound below the lower one means "outside
        // the range" rather than an empty range.
        let exclusive = compare(upper.as_ref().map(|u| &u.1), lower.as_ref().map(|l| &l.1))
            == Some(std::cmp::Ordering::Less);
        checks.extend(range(
            label,
            type_name,
            &quote! { *value },
            bound(&lower),
            bound(&upper),
            exclusive,
        ));
        checks
    }

    /// The rules of a `google.protobuf.Timestamp` or `Duration` field
    /// (`time` says which), compared as `(seconds, nanos)`.
    fn time(
        &mut self,
        label: &str,
        time: Time,
        rules: &DynamicMessage,
        path: &[i32],
    ) -> TokenStream {
        let runtime = self.runtime.clone();
        let type_name = time.rules_name();
        let value = quote! { (value.seconds, value.nanos) };
        let mut checks = TokenStream::new();
        let mut lower: Option<(bool, (i64, i32))> = None;
        let mut upper: Option<(bool, (i64, i32))> = None;
        for (member, rule_value) in rules.fields() {
            let rule = member.name();
            let id = format!("{type_name}.{rule}");
            let at = rule_value.as_message().map(seconds_nanos);
            match (rule, at) {
                ("const", Some(at)) => {
                    let (literal, shown) = (tuple(at), time.show(at));
                    let message = format!("must equal {shown}");
                    checks.extend(quote! {
                        if #value != #literal { violations.push(#label, #id, #message); }
                    });
                }
                ("lt", Some(at)) => upper = Some((false, at)),
                ("lte", Some(at)) => upper = Some((true, at)),
                ("gt", Some(at)) => lower = Some((false, at)),
                ("gte", Some(at)) => lower = Some((true, at)),
                ("in" | "not_in", _) if time == Time::Duration => {
                    let items: Vec<(i64, i32)> = rule_value
                        .as_list()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|v| v.as_message().map(seconds_nanos))
                        .collect();
                    let literals: Vec<TokenStream> = items.iter().map(|at| tuple(*at)).collect();
                    let shown: Vec<String> = items.iter().map(|at| time.show(*at)).collect();
                    checks.extend(membership(
                        label,
                        type_name,
                        rule,
                        quote! { &#value },
                        &literals,
                        &shown,
                    ));
                }
                ("lt_now" | "gt_now", _) if time == Time::Timestamp => {
                    if rule_value.as_bool() != Some(true) {
                        continue;
                    }
                    let (test, message) = match rule {
                        "lt_now" => (quote! { < }, "must be less than now"),
                        _ => (quote! { > }, "must be greater than now"),
                    };
                    checks.extend(quote! {
                        if !(#value #test #runtime::validate::now()) {
                            violations.push(#label, #id, #message);
                        }
                    });
                }
                ("within", Some(span)) if time == Time::Timestamp => {
                    let literal = tuple(span);
                    let message = format!("must be within {} of now", Time::Duration.show(span));
                    checks.extend(quote! {
                        if !#runtime::validate::within_of_now(#value, #literal) {
                            violations.push(#label, #id, #message);
                        }
                    });
                }
                ("example", _) => {}
                (other, _) => self.unsupported(type_name, other, path),
            }
        }
        let bound = |b: &Option<(bool, (i64, i32))>| {
            b.map(|(inclusive, at)| Bound {
                inclusive,
                literal: tuple(at),
                shown: time.show(at),
            })
        };
        let exclusive = matches!((&lower, &upper), (Some((_, l)), Some((_, u))) if u < l);
        checks.extend(range(
            label,
            type_name,
            &value,
            bound(&lower),
            bound(&upper),
            exclusive,
        ));
        checks
    }

    fn string(&mut self, label: &str, rules: &DynamicMessage, path: &[i32]) -> TokenStream {
        let runtime = self.runtime.clone();
        let mut checks = TokenStream::new();
        let mut min_max: [Option<u64>; 2] = [None, None];
        for (member, value) in rules.fields() {
            let rule = member.name();
            let id = format!("string.{rule}");
            let text = value.as_str().unwrap_or_default().to_owned();
            let count = value.as_u64().unwrap_or_default();
            let n = count as usize;
            let check = match rule {
                "const" => {
                    let message = format!("must equal `{text}`");
                    quote! { if value.as_str() != #text { violations.push(#label, #id, #message); } }
                }
                // Characters are counted only as far as the rule needs: a
                // byte length already decides most calls.
                "len" => {
                    let message = format!("must be {count} characters");
                    let most = n.saturating_mul(4);
                    quote! {
                        if value.len() < #n || value.len() > #most || value.chars().count() != #n {
                            violations.push(#label, #id, #message);
                        }
                    }
                }
                "min_len" => {
                    min_max[0] = Some(count);
                    let message = format!("must be at least {count} characters");
                    quote! {
                        if value.len() < #n || value.chars().take(#n).count() < #n {
                            violations.push(#label, #id, #message);
                        }
                    }
                }
                "max_len" => {
                    min_max[1] = Some(count);
                    let message = format!("must be at most {count} characters");
                    quote! {
                        if value.len() > #n && value.chars().nth(#n).is_some() {
                            violations.push(#label, #id, #message);
                        }
                    }
                }
                "len_bytes" | "min_bytes" | "max_bytes" => {
                    let (op, message) = match rule {
                        "len_bytes" => (quote! { != }, format!("must be {count} bytes")),
                        "min_bytes" => (quote! { < }, format!("must be at least {count} bytes")),
                        _ => (quote! { > }, format!("must be at most {count} bytes")),
                    };
                    quote! { if value.len() #op #n { violations.push(#label, #id, #message); } }
                }
                "pattern" => {
                    if let Err(error) = regex::Regex::new(&text) {
                        let first = error.to_string();
                        let first = first.lines().last().unwrap_or_default().to_owned();
                        self.report(
                            path,
                            format!("buf.validate: string.pattern {text:?} is not a valid regular expression: {first}"),
                        );
                    }
                    let message = format!("does not match regex pattern `{text}`");
                    quote! {
                        {
                            static PATTERN: #runtime::validate::Pattern = #runtime::validate::Pattern::new(#text);
                            PATTERN.check(violations, #label, #id, #message, value);
                        }
                    }
                }
                "prefix" => {
                    let message = format!("does not have prefix `{text}`");
                    quote! { if !value.starts_with(#text) { violations.push(#label, #id, #message); } }
                }
                "suffix" => {
                    let message = format!("does not have suffix `{text}`");
                    quote! { if !value.ends_with(#text) { violations.push(#label, #id, #message); } }
                }
                "contains" => {
                    let message = format!("does not contain substring `{text}`");
                    quote! { if !value.contains(#text) { violations.push(#label, #id, #message); } }
                }
                "not_contains" => {
                    let message = format!("contains substring `{text}`");
                    quote! { if value.contains(#text) { violations.push(#label, #id, #message); } }
                }
                "in" | "not_in" => {
                    let items = strings(value);
                    membership(
                        label,
                        "string",
                        rule,
                        quote! { &value.as_str() },
                        &items,
                        &items,
                    )
                }
                "email" | "hostname" | "ip" | "ipv4" | "ipv6" | "uri" | "uri_ref" | "address"
                | "uuid" | "tuuid" => {
                    if value.as_bool() != Some(true) {
                        continue;
                    }
                    let (test, what) = match rule {
                        "email" => ("is_email", "email address"),
                        "hostname" => ("is_hostname", "hostname"),
                        "ip" => ("is_ip", "IP address"),
                        "ipv4" => ("is_ipv4", "IPv4 address"),
                        "ipv6" => ("is_ipv6", "IPv6 address"),
                        "uri" => ("is_uri", "URI"),
                        "uri_ref" => ("is_uri_ref", "URI Reference"),
                        "address" => ("is_address", "hostname, or ip address"),
                        "uuid" => ("is_uuid", "UUID"),
                        _ => ("is_tuuid", "trimmed UUID"),
                    };
                    let test = proc_macro2::Ident::new(test, proc_macro2::Span::call_site());
                    let invalid = format!("must be a valid {what}");
                    let test = quote! { #runtime::validate::format::#test(value) };
                    if rule == "uri_ref" {
                        quote! { if !#test { violations.push(#label, #id, #invalid); } }
                    } else {
                        let empty_id = format!("string.{rule}_empty");
                        let empty = format!("value is empty, which is not a valid {what}");
                        quote! {
                            if value.is_empty() {
                                violations.push(#label, #empty_id, #empty);
                            } else if !#test {
                                violations.push(#label, #id, #invalid);
                            }
                        }
                    }
                }
                "strict" | "example" => continue,
                other => {
                    self.unsupported("string", other, path);
                    continue;
                }
            };
            checks.extend(check);
        }
        if let [Some(min), Some(max)] = min_max
            && min > max
        {
            self.report(
                path,
                format!(
                    "buf.validate: string.min_len ({min}) is greater than string.max_len ({max})"
                ),
            );
        }
        checks
    }

    fn bytes(&mut self, label: &str, rules: &DynamicMessage, path: &[i32]) -> TokenStream {
        let mut checks = TokenStream::new();
        for (member, value) in rules.fields() {
            let rule = member.name();
            let id = format!("bytes.{rule}");
            let data: Vec<u8> = value.as_bytes().map(|b| b.to_vec()).unwrap_or_default();
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            let count = value.as_u64().unwrap_or_default();
            let n = count as usize;
            let lit = Literal::byte_string(&data);
            let check = match rule {
                "const" => {
                    let message = format!("must be {hex}");
                    quote! { if value.as_slice() != #lit { violations.push(#label, #id, #message); } }
                }
                "len" => {
                    let message = format!("must be {count} bytes");
                    quote! { if value.len() != #n { violations.push(#label, #id, #message); } }
                }
                "min_len" => {
                    let message = format!("must be at least {count} bytes");
                    quote! { if value.len() < #n { violations.push(#label, #id, #message); } }
                }
                "max_len" => {
                    let message = format!("must be at most {count} bytes");
                    quote! { if value.len() > #n { violations.push(#label, #id, #message); } }
                }
                "prefix" => {
                    let message = format!("does not have prefix {hex}");
                    quote! { if !value.starts_with(#lit) { violations.push(#label, #id, #message); } }
                }
                "suffix" => {
                    let message = format!("does not have suffix {hex}");
                    quote! { if !value.ends_with(#lit) { violations.push(#label, #id, #message); } }
                }
                "contains" => {
                    let message = format!("does not contain {hex}");
                    let len = data.len();
                    quote! {
                        if #len > 0 && !value.windows(#len).any(|w| w == #lit) {
                            violations.push(#label, #id, #message);
                        }
                    }
                }
                "in" | "not_in" => {
                    let items: Vec<Vec<u8>> = value
                        .as_list()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|v| v.as_bytes().map(|b| b.to_vec()))
                        .collect();
                    let lits: Vec<Literal> =
                        items.iter().map(|i| Literal::byte_string(i)).collect();
                    let shown: Vec<String> = items
                        .iter()
                        .map(|i| i.iter().map(|b| format!("{b:02x}")).collect())
                        .collect();
                    let lits: Vec<TokenStream> = lits.iter().map(|l| quote! { &#l[..] }).collect();
                    membership(
                        label,
                        "bytes",
                        rule,
                        quote! { &value.as_slice() },
                        &lits,
                        &shown,
                    )
                }
                "ip" | "ipv4" | "ipv6" => {
                    if value.as_bool() != Some(true) {
                        continue;
                    }
                    let (test, what) = match rule {
                        "ip" => (
                            quote! { value.len() == 4 || value.len() == 16 },
                            "IP address",
                        ),
                        "ipv4" => (quote! { value.len() == 4 }, "IPv4 address"),
                        _ => (quote! { value.len() == 16 }, "IPv6 address"),
                    };
                    let empty_id = format!("bytes.{rule}_empty");
                    let empty = format!("value is empty, which is not a valid {what}");
                    let invalid = format!("must be a valid {what}");
                    quote! {
                        if value.is_empty() {
                            violations.push(#label, #empty_id, #empty);
                        } else if !(#test) {
                            violations.push(#label, #id, #invalid);
                        }
                    }
                }
                "example" => continue,
                other => {
                    self.unsupported("bytes", other, path);
                    continue;
                }
            };
            checks.extend(check);
        }
        checks
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

    fn repeated(
        &mut self,
        at: &Target<'_>,
        rules: Option<&DynamicMessage>,
        path: &[i32],
    ) -> TokenStream {
        let Some(rules) = rules else {
            return TokenStream::new();
        };
        let label = at.label.as_str();
        let mut checks = TokenStream::new();
        let mut bounds: [Option<u64>; 2] = [None, None];
        for (member, value) in rules.fields() {
            let rule = member.name();
            let id = format!("repeated.{rule}");
            let count = value.as_u64().unwrap_or_default();
            let n = count as usize;
            checks.extend(match rule {
                "min_items" => {
                    bounds[0] = Some(count);
                    let message = format!("must contain at least {count} item(s)");
                    quote! { if value.len() < #n { violations.push(#label, #id, #message); } }
                }
                "max_items" => {
                    bounds[1] = Some(count);
                    let message = format!("must contain no more than {count} item(s)");
                    quote! { if value.len() > #n { violations.push(#label, #id, #message); } }
                }
                "unique" if value.as_bool() == Some(true) => {
                    let runtime = self.runtime;
                    let test = match at.field.kind() {
                        Kind::Float | Kind::Double => quote! { #runtime::validate::unique_floats(value) },
                        Kind::Message(_) => {
                            self.report(
                                path,
                                "buf.validate: repeated.unique applies to scalar items, not messages"
                                    .to_owned(),
                            );
                            continue;
                        }
                        _ => quote! { #runtime::validate::unique(value) },
                    };
                    quote! {
                        if !#test { violations.push(#label, #id, "repeated value must contain unique items"); }
                    }
                }
                "unique" => continue,
                "items" => {
                    let Some(items) = value.as_message() else {
                        continue;
                    };
                    let Some(inner) = self.element_rules(at.field, items, path) else {
                        continue;
                    };
                    let name = at.field.name();
                    quote! {
                        for (index, value) in value.iter().enumerate() {
                            let mark = violations.enter_index(#name, index);
                            #inner
                            violations.leave(mark);
                        }
                    }
                }
                other => {
                    self.unsupported("repeated", other, path);
                    continue;
                }
            });
        }
        if let [Some(min), Some(max)] = bounds
            && min > max
        {
            self.report(
                path,
                format!("buf.validate: repeated.min_items ({min}) is greater than repeated.max_items ({max})"),
            );
        }
        checks
    }

    fn map(
        &mut self,
        at: &Target<'_>,
        rules: Option<&DynamicMessage>,
        path: &[i32],
    ) -> TokenStream {
        let Some(rules) = rules else {
            return TokenStream::new();
        };
        let label = at.label.as_str();
        let Kind::Message(entry) = at.field.kind() else {
            return TokenStream::new();
        };
        let mut checks = TokenStream::new();
        for (member, value) in rules.fields() {
            let rule = member.name();
            let id = format!("map.{rule}");
            let count = value.as_u64().unwrap_or_default();
            let n = count as usize;
            checks.extend(match rule {
                "min_pairs" => {
                    let message = format!("map must be at least {count} entries");
                    quote! { if value.len() < #n { violations.push(#label, #id, #message); } }
                }
                "max_pairs" => {
                    let message = format!("map must be at most {count} entries");
                    quote! { if value.len() > #n { violations.push(#label, #id, #message); } }
                }
                "keys" | "values" => {
                    let Some(inner_rules) = value.as_message() else {
                        continue;
                    };
                    let part = if rule == "keys" {
                        entry.map_entry_key_field()
                    } else {
                        entry.map_entry_value_field()
                    };
                    let Some(inner) = self.element_rules(&part, inner_rules, path) else {
                        continue;
                    };
                    let name = at.field.name();
                    let binding = if rule == "keys" {
                        quote! { key }
                    } else {
                        quote! { item }
                    };
                    quote! {
                        for (key, item) in value.iter() {
                            let mark = violations.enter_key(#name, key);
                            { let value = #binding; #inner }
                            violations.leave(mark);
                        }
                    }
                }
                other => {
                    self.unsupported("map", other, path);
                    continue;
                }
            });
        }
        checks
    }
}

/// One bound of a range rule: inclusive or not, its literal and how the
/// message shows it.
struct Bound {
    inclusive: bool,
    literal: TokenStream,
    shown: String,
}

/// The `gt`/`gte`/`lt`/`lte` checks of `value` (an expression), with
/// protovalidate's ids (`int32.gt_lt`, `…_exclusive` when the range is
/// "outside") and messages.
fn range(
    label: &str,
    type_name: &str,
    value: &TokenStream,
    lower: Option<Bound>,
    upper: Option<Bound>,
    exclusive: bool,
) -> TokenStream {
    let test = |bound: &Bound, lower: bool| {
        let literal = &bound.literal;
        match (lower, bound.inclusive) {
            (true, true) => quote! { #value >= #literal },
            (true, false) => quote! { #value > #literal },
            (false, true) => quote! { #value <= #literal },
            (false, false) => quote! { #value < #literal },
        }
    };
    let words = |bound: &Bound, lower: bool| match (lower, bound.inclusive) {
        (true, true) => "greater than or equal to",
        (true, false) => "greater than",
        (false, true) => "less than or equal to",
        (false, false) => "less than",
    };
    let name = |bound: &Bound, lower: bool| match (lower, bound.inclusive) {
        (true, true) => "gte",
        (true, false) => "gt",
        (false, true) => "lte",
        (false, false) => "lt",
    };
    let (ok, id, message) = match (&lower, &upper) {
        (None, None) => return TokenStream::new(),
        (Some(b), None) | (None, Some(b)) => {
            let is_lower = lower.is_some();
            (
                test(b, is_lower),
                format!("{type_name}.{}", name(b, is_lower)),
                format!("must be {} {}", words(b, is_lower), b.shown),
            )
        }
        (Some(l), Some(u)) => {
            let (ok_lower, ok_upper) = (test(l, true), test(u, false));
            let (ok, join, suffix) = match exclusive {
                false => (quote! { (#ok_lower) && (#ok_upper) }, "and", ""),
                true => (quote! { (#ok_lower) || (#ok_upper) }, "or", "_exclusive"),
            };
            (
                ok,
                format!("{type_name}.{}_{}{suffix}", name(l, true), name(u, false)),
                format!(
                    "must be {} {} {join} {} {}",
                    words(l, true),
                    l.shown,
                    words(u, false),
                    u.shown
                ),
            )
        }
    };
    quote! { if !(#ok) { violations.push(#label, #id, #message); } }
}

/// Which of the two well-known time types a field is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Time {
    Timestamp,
    Duration,
}

impl Time {
    fn rules_name(self) -> &'static str {
        match self {
            Time::Timestamp => "timestamp",
            Time::Duration => "duration",
        }
    }

    /// A rule's value as its message shows it: RFC 3339, or `1.5s`.
    fn show(self, (seconds, nanos): (i64, i32)) -> String {
        match self {
            Time::Timestamp => rfc3339(seconds, nanos),
            Time::Duration if nanos == 0 => format!("{seconds}s"),
            Time::Duration => {
                let total = seconds as f64 + f64::from(nanos) / 1e9;
                format!("{total}s")
            }
        }
    }
}

/// A `Timestamp` or `Duration` rules value as `(seconds, nanos)`.
fn seconds_nanos(message: &DynamicMessage) -> (i64, i32) {
    let seconds = message
        .get_field_by_name("seconds")
        .and_then(|v| v.as_i64())
        .unwrap_or_default();
    let nanos = message
        .get_field_by_name("nanos")
        .and_then(|v| v.as_i32())
        .unwrap_or_default();
    (seconds, nanos)
}

fn tuple((seconds, nanos): (i64, i32)) -> TokenStream {
    let (s, n) = (Literal::i64_suffixed(seconds), Literal::i32_suffixed(nanos));
    quote! { (#s, #n) }
}

/// `seconds` since the Unix epoch in UTC as RFC 3339 (days to a civil date
/// by Howard Hinnant's algorithm).
fn rfc3339(seconds: i64, nanos: i32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = match nanos {
        0 => String::new(),
        n => format!(".{n:09}").trim_end_matches('0').to_owned(),
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `in` / `not_in`: whether `value` (an expression of the list's item
/// reference type) is among the `items` literals.
fn membership<T: quote::ToTokens>(
    label: &str,
    type_name: &str,
    rule: &str,
    value: TokenStream,
    items: &[T],
    shown_items: &[String],
) -> TokenStream {
    let id = format!("{type_name}.{rule}");
    let list = shown(shown_items);
    let (test, message) = match rule {
        "in" => (
            quote! { ![#(#items),*].contains(#value) },
            format!("must be in list {list}"),
        ),
        _ => (
            quote! { [#(#items),*].contains(#value) },
            format!("must not be in list {list}"),
        ),
    };
    if items.is_empty() {
        return TokenStream::new();
    }
    quote! { if #test { violations.push(#label, #id, #message); } }
}

/// Orders two numeric rule values of the same type.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Option<std::cmp::Ordering> {
    match (a?, b?) {
        (Value::I32(a), Value::I32(b)) => a.partial_cmp(b),
        (Value::I64(a), Value::I64(b)) => a.partial_cmp(b),
        (Value::U32(a), Value::U32(b)) => a.partial_cmp(b),
        (Value::U64(a), Value::U64(b)) => a.partial_cmp(b),
        (Value::F32(a), Value::F32(b)) => a.partial_cmp(b),
        (Value::F64(a), Value::F64(b)) => a.partial_cmp(b),
        _ => None,
    }
}
