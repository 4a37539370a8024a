//! Reads the standard `buf.validate` rules (protovalidate,
//! `buf/validate/validate.proto`, bundled) of every message and writes its
//! `impl Validate`: the standard rules as plain Rust over the fields, CEL
//! rules as statics compiled on first use. Every rule is checked here
//! (its type against the field's, bounds, patterns, CEL syntax), so a
//! mistake fails the build at the rule's `file:line:column`, and a rule
//! Keel does not implement is an error rather than a rule silently skipped.

mod rules;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use proc_macro2::{Ident, TokenStream};
use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, FileDescriptor, Kind,
    MessageDescriptor, OneofDescriptor,
};
use quote::quote;

use crate::error::Diagnostic;
use crate::ident::{camel, snake};
use crate::locate::Locator;

/// The number of the `buf.validate` extensions (`field`, `message`, `oneof`).
const EXTENSION_NUMBER: i32 = 1159;
/// `DescriptorProto.options`, `FieldDescriptorProto.options`, `OneofDescriptorProto.options`.
const MESSAGE_OPTIONS_FIELD: i32 = 7;
const FIELD_OPTIONS_FIELD: i32 = 8;
const ONEOF_OPTIONS_FIELD: i32 = 2;

/// What validation codegen found and wrote.
#[derive(Debug, Default)]
pub(crate) struct Validation {
    /// The `impl Validate` (and `impl ToCel`) code of each package.
    pub code: HashMap<String, String>,
    /// Messages (full names) with rules of their own or in a message field
    /// they check: a method taking one has its requests validated.
    pub with_rules: HashSet<String>,
}

/// The three extensions, when `buf/validate/validate.proto` is imported.
struct Extensions {
    field: ExtensionDescriptor,
    message: ExtensionDescriptor,
    oneof: ExtensionDescriptor,
}

/// Reads the rules of every message in `files` and writes their code,
/// collecting every problem.
pub(crate) fn generate(
    pool: &DescriptorPool,
    files: &[FileDescriptor],
    paths: &HashMap<String, PathBuf>,
    runtime: &TokenStream,
) -> Result<Validation, Vec<Diagnostic>> {
    let (Some(field), Some(message), Some(oneof)) = (
        pool.get_extension_by_name("buf.validate.field"),
        pool.get_extension_by_name("buf.validate.message"),
        pool.get_extension_by_name("buf.validate.oneof"),
    ) else {
        // Nothing imports the rules: no message has any.
        return Ok(Validation::default());
    };
    let ext = Extensions {
        field,
        message,
        oneof,
    };
    let mut messages = Vec::new();
    for file in files {
        for message in file.messages() {
            collect(&message, file, &mut messages);
        }
    }
    let compiled: HashSet<String> = messages
        .iter()
        .map(|(m, _)| m.full_name().to_owned())
        .collect();
    let with_rules = with_rules(&messages, &compiled, &ext);

    let mut diagnostics = Vec::new();
    let mut code: HashMap<String, TokenStream> = HashMap::new();
    let mut read_by_cel = BTreeSet::new();
    for (message, file) in &messages {
        let locate = Locator::new(file, paths);
        let mut writer = MessageWriter {
            ext: &ext,
            with_rules: &with_rules,
            locate: &locate,
            runtime,
            diagnostics: &mut diagnostics,
            read_by_cel: &mut read_by_cel,
            statics: 0,
        };
        let body = writer.message(message);
        let path = rust_path(message);
        let tokens = if body.is_empty() {
            quote! {
                impl #runtime::validate::Validate for #path {
                    #[inline(always)]
                    fn validate_into(&self, _: &mut #runtime::validate::Violations) {}
                }
            }
        } else {
            quote! {
                impl #runtime::validate::Validate for #path {
                    #[allow(unused_variables, clippy::all)]
                    fn validate_into(&self, violations: &mut #runtime::validate::Violations) {
                        #body
                    }
                }
            }
        };
        code.entry(file.package_name().to_owned())
            .or_default()
            .extend(tokens);
    }
    let read_by_cel = cel_closure(&read_by_cel, &messages);
    for (message, file) in messages
        .iter()
        .filter(|(m, _)| read_by_cel.contains(m.full_name()))
    {
        code.entry(file.package_name().to_owned())
            .or_default()
            .extend(to_cel_impl(message, runtime));
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let code = code
        .into_iter()
        .map(|(package, tokens)| {
            let file: syn::File = syn::parse2(tokens).expect("generated validation code parses");
            (package, prettyplease::unparse(&file))
        })
        .collect();
    Ok(Validation { code, with_rules })
}

/// Every message of a file, nested ones too (map entries are not messages
/// of their own in Rust).
fn collect<'f>(
    message: &MessageDescriptor,
    file: &'f FileDescriptor,
    into: &mut Vec<(MessageDescriptor, &'f FileDescriptor)>,
) {
    if message.is_map_entry() {
        return;
    }
    into.push((message.clone(), file));
    for nested in message.child_messages() {
        collect(&nested, file, into);
    }
}

/// The messages with rules: their own, or, repeatedly, a message field (or
/// list or map of them) of a type that has some.
fn with_rules(
    messages: &[(MessageDescriptor, &FileDescriptor)],
    compiled: &HashSet<String>,
    ext: &Extensions,
) -> HashSet<String> {
    let mut found: HashSet<String> = messages
        .iter()
        .filter(|(m, _)| {
            m.options().has_extension(&ext.message)
                || m.fields().any(|f| f.options().has_extension(&ext.field))
                || m.oneofs().any(|o| o.options().has_extension(&ext.oneof))
        })
        .map(|(m, _)| m.full_name().to_owned())
        .collect();
    loop {
        let before = found.len();
        for (message, _) in messages {
            if found.contains(message.full_name()) {
                continue;
            }
            if message.fields().any(|f| {
                message_type(&f).is_some_and(|t| {
                    compiled.contains(t.full_name()) && found.contains(t.full_name())
                })
            }) {
                found.insert(message.full_name().to_owned());
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// The message type a field holds: its own, its items', or its map values'.
fn message_type(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    let kind = match field.kind() {
        Kind::Message(m) if m.is_map_entry() => m.map_entry_value_field().kind(),
        other => other,
    };
    match kind {
        Kind::Message(m) => Some(m),
        _ => None,
    }
}

/// The messages CEL rules read: the `roots`, and every message type their
/// fields hold, repeatedly.
fn cel_closure(
    roots: &BTreeSet<String>,
    messages: &[(MessageDescriptor, &FileDescriptor)],
) -> HashSet<String> {
    let by_name: HashMap<&str, &MessageDescriptor> =
        messages.iter().map(|(m, _)| (m.full_name(), m)).collect();
    let mut found: HashSet<String> = HashSet::new();
    let mut todo: Vec<String> = roots.iter().cloned().collect();
    while let Some(name) = todo.pop() {
        if !found.insert(name.clone()) {
            continue;
        }
        if let Some(message) = by_name.get(name.as_str()) {
            for field in message.fields() {
                if let Some(t) = message_type(&field) {
                    todo.push(t.full_name().to_owned());
                }
            }
        }
    }
    found
}

/// Writes the checks of one message.
struct MessageWriter<'a> {
    ext: &'a Extensions,
    with_rules: &'a HashSet<String>,
    locate: &'a Locator<'a>,
    runtime: &'a TokenStream,
    diagnostics: &'a mut Vec<Diagnostic>,
    /// Messages that CEL rules see as `this` (or in a list or map).
    read_by_cel: &'a mut BTreeSet<String>,
    /// Statics written so far in this message (their names' numbers).
    statics: usize,
}

impl MessageWriter<'_> {
    fn report(&mut self, path: &[i32], message: String) {
        self.diagnostics.push(self.locate.at(path, message));
    }

    /// The checks of `message`: each field's, each oneof's, then the message's own.
    fn message(&mut self, message: &MessageDescriptor) -> TokenStream {
        let mut body = TokenStream::new();
        for field in message.fields() {
            body.extend(self.field(message, &field));
        }
        for oneof in message.oneofs().filter(|o| !o.is_synthetic()) {
            body.extend(self.oneof(&oneof));
        }
        body.extend(self.message_rules(message));
        body
    }

    fn message_rules(&mut self, message: &MessageDescriptor) -> TokenStream {
        let Some(rules) = extension(&message.options(), &self.ext.message) else {
            return TokenStream::new();
        };
        let rules = &rules;
        let mut path = message.path().to_vec();
        path.extend([MESSAGE_OPTIONS_FIELD, EXTENSION_NUMBER]);
        let mut body = TokenStream::new();
        let cel = self.cel_rules(rules, &path);
        if !cel.is_empty() {
            self.read_by_cel.insert(message.full_name().to_owned());
        }
        for rule in cel {
            body.extend(quote! { #rule.check(violations, "", self); });
        }
        for (field, value) in rules.fields() {
            match field.name() {
                "cel" | "cel_expression" => {}
                "oneof" => {
                    for rule in value.as_list().unwrap_or_default() {
                        if let Some(rule) = rule.as_message() {
                            body.extend(self.message_oneof(message, rule, &path));
                        }
                    }
                }
                other => self.report(
                    &path,
                    format!("buf.validate: message rule `{other}` is not supported by Keel"),
                ),
            }
        }
        body
    }

    /// `(buf.validate.message).oneof`: at most one of the listed fields set
    /// (exactly one when `required`).
    fn message_oneof(
        &mut self,
        message: &MessageDescriptor,
        rule: &DynamicMessage,
        path: &[i32],
    ) -> TokenStream {
        let names: Vec<String> = rule
            .get_field_by_name("fields")
            .and_then(|v| {
                v.as_list().map(|l| {
                    l.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default();
        let required = rule
            .get_field_by_name("required")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if names.is_empty() {
            self.report(
                path,
                "buf.validate: a message oneof rule lists no fields".to_owned(),
            );
            return TokenStream::new();
        }
        let mut set = Vec::new();
        for name in &names {
            match message.get_field_by_name(name) {
                Some(field) => set.push(is_set(message, &field)),
                None => self.report(
                    path,
                    format!(
                        "buf.validate: oneof rule names `{name}`, which is no field of {}",
                        message.full_name()
                    ),
                ),
            }
        }
        let list = names.join(", ");
        let too_many = format!("only one of {list} can be set");
        let none = format!("one of {list} must be set");
        let required_check = required.then(|| {
            quote! {
                if set == 0 {
                    violations.push("", "message.oneof", #none);
                }
            }
        });
        quote! {
            {
                let set = 0usize #(+ usize::from(#set))*;
                if set > 1 {
                    violations.push("", "message.oneof", #too_many);
                }
                #required_check
            }
        }
    }

    /// `(buf.validate.oneof).required`: one of the oneof's fields is set.
    fn oneof(&mut self, oneof: &OneofDescriptor) -> TokenStream {
        let Some(rules) = extension(&oneof.options(), &self.ext.oneof) else {
            return TokenStream::new();
        };
        let mut path = oneof.path().to_vec();
        path.extend([ONEOF_OPTIONS_FIELD, EXTENSION_NUMBER]);
        let mut required = false;
        for (field, value) in rules.fields() {
            match field.name() {
                "required" => required = value.as_bool().unwrap_or(false),
                other => self.report(
                    &path,
                    format!("buf.validate: oneof rule `{other}` is not supported by Keel"),
                ),
            }
        }
        if !required {
            return TokenStream::new();
        }
        let member = snake(oneof.name());
        let name = oneof.name();
        quote! {
            if self.#member.is_none() {
                violations.push(#name, "required", "exactly one field is required in oneof");
            }
        }
    }

    /// The checks of one field, as its declaration decides how it is held:
    /// in a oneof, optional (`Option`), repeated, a map, or plain.
    fn field(&mut self, message: &MessageDescriptor, field: &FieldDescriptor) -> TokenStream {
        let mut path = field.path().to_vec();
        path.extend([FIELD_OPTIONS_FIELD, EXTENSION_NUMBER]);
        let rules = extension(&field.options(), &self.ext.field);
        let name = field.name();
        let shape = Shape::of(field);
        let plan = rules::FieldPlan::read(self, field, rules.as_ref(), &path, shape);
        if plan.ignore_always {
            return TokenStream::new();
        }
        let checks = plan.checks;
        let nested = self.nested(field, shape);
        if checks.is_empty() && nested.is_empty() && !plan.required {
            return TokenStream::new();
        }
        let missing = match plan.required {
            true => quote! { violations.push(#name, "required", "value is required"); },
            false => TokenStream::new(),
        };
        match shape {
            Shape::Oneof => {
                let (member, pattern) = oneof_variant(message, field, quote! { value });
                quote! {
                    match &self.#member {
                        #pattern => { #checks #nested }
                        _ => { #missing }
                    }
                }
            }
            Shape::Optional => {
                let member = snake(name);
                quote! {
                    match &self.#member {
                        ::core::option::Option::Some(value) => { #checks #nested }
                        ::core::option::Option::None => { #missing }
                    }
                }
            }
            Shape::Plain | Shape::List | Shape::Map => {
                let member = snake(name);
                let zero = rules::zero_test(field, shape);
                let guard = match (plan.required, plan.ignore_if_zero) {
                    (true, _) => quote! { if #zero { #missing } else { #checks #nested } },
                    (false, true) => quote! { if !(#zero) { #checks #nested } },
                    (false, false) => quote! { #checks #nested },
                };
                quote! {
                    {
                        let value = &self.#member;
                        #guard
                    }
                }
            }
        }
    }

    /// The checks of the messages a field holds (single, items, map
    /// values), when their type has rules.
    fn nested(&mut self, field: &FieldDescriptor, shape: Shape) -> TokenStream {
        let Some(message) = message_type(field) else {
            return TokenStream::new();
        };
        if !self.with_rules.contains(message.full_name()) {
            return TokenStream::new();
        }
        let runtime = self.runtime;
        let name = field.name();
        match shape {
            Shape::List => quote! {
                for (index, item) in value.iter().enumerate() {
                    let mark = violations.enter_index(#name, index);
                    #runtime::validate::Validate::validate_into(item, violations);
                    violations.leave(mark);
                }
            },
            Shape::Map => quote! {
                for (key, item) in value.iter() {
                    let mark = violations.enter_key(#name, key);
                    #runtime::validate::Validate::validate_into(item, violations);
                    violations.leave(mark);
                }
            },
            _ => quote! {
                let mark = violations.enter(#name);
                #runtime::validate::Validate::validate_into(value, violations);
                violations.leave(mark);
            },
        }
    }
}

/// The rules message an option holds, when it is set.
fn extension(options: &DynamicMessage, ext: &ExtensionDescriptor) -> Option<DynamicMessage> {
    if !options.has_extension(ext) {
        return None;
    }
    options.get_extension(ext).as_message().cloned()
}

/// How prost holds a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A member of a (real) oneof: a variant of the oneof's enum.
    Oneof,
    /// `Option<T>`: a message, or a scalar with explicit presence.
    Optional,
    /// `Vec<T>`.
    List,
    /// `HashMap<K, V>`.
    Map,
    /// `T`.
    Plain,
}

impl Shape {
    fn of(field: &FieldDescriptor) -> Shape {
        if field.is_map() {
            Shape::Map
        } else if field.is_list() {
            Shape::List
        } else if field.containing_oneof().is_some_and(|o| !o.is_synthetic()) {
            Shape::Oneof
        } else if field.supports_presence()
            && field.cardinality() != prost_reflect::Cardinality::Required
        {
            Shape::Optional
        } else {
            Shape::Plain
        }
    }
}

/// The expression (a `bool`) saying whether `field` of `self` is set.
fn is_set(message: &MessageDescriptor, field: &FieldDescriptor) -> TokenStream {
    let shape = Shape::of(field);
    match shape {
        Shape::Oneof => {
            let (member, pattern) = oneof_variant(message, field, quote! { _ });
            quote! { ::core::matches!(&self.#member, #pattern) }
        }
        Shape::Optional => {
            let member = snake(field.name());
            quote! { self.#member.is_some() }
        }
        Shape::List | Shape::Map | Shape::Plain => {
            let member = snake(field.name());
            let zero = rules::zero_test(field, shape);
            quote! { { let value = &self.#member; !(#zero) } }
        }
    }
}

/// The `impl ToCel` of a message CEL rules read: a map of its set fields.
fn to_cel_impl(message: &MessageDescriptor, runtime: &TokenStream) -> TokenStream {
    let path = rust_path(message);
    let mut fields = Vec::new();
    for field in message.fields() {
        let name = field.name();
        let shape = Shape::of(&field);
        let add = quote! { fields = fields.field(#name, value); };
        fields.push(match shape {
            Shape::Oneof => {
                let (member, pattern) = oneof_variant(message, &field, quote! { value });
                quote! { if let #pattern = &self.#member { #add } }
            }
            Shape::Optional => {
                let member = snake(name);
                quote! { if let ::core::option::Option::Some(value) = &self.#member { #add } }
            }
            _ => {
                let member = snake(name);
                quote! { { let value = &self.#member; #add } }
            }
        });
    }
    quote! {
        impl #runtime::validate::ToCel for #path {
            fn to_cel(&self) -> #runtime::validate::CelValue {
                let mut fields = #runtime::validate::CelMessage::default();
                #(#fields)*
                fields.into_value()
            }
        }
    }
}

/// The Rust path of a message from its package's module, as prost names it.
fn rust_path(message: &MessageDescriptor) -> TokenStream {
    let mut parts: Vec<Ident> = Vec::new();
    let mut parent = message.parent_message();
    while let Some(p) = parent {
        parts.insert(0, snake(p.name()));
        parent = p.parent_message();
    }
    parts.push(camel(message.name()));
    quote! { #(#parts)::* }
}

/// For a member of a (real) oneof: the struct field that holds the oneof,
/// and the pattern matching `field`'s variant with its value bound to
/// `binding`.
fn oneof_variant(
    message: &MessageDescriptor,
    field: &FieldDescriptor,
    binding: TokenStream,
) -> (Ident, TokenStream) {
    let oneof = field.containing_oneof().expect("a oneof member");
    let enum_path = oneof_enum_path(message, &oneof);
    let variant = camel(field.name());
    (
        snake(oneof.name()),
        quote! { ::core::option::Option::Some(#enum_path::#variant(#binding)) },
    )
}

/// The path of a oneof's enum: the message's module, then the oneof's name.
fn oneof_enum_path(message: &MessageDescriptor, oneof: &OneofDescriptor) -> TokenStream {
    let mut parts: Vec<Ident> = Vec::new();
    let mut current = Some(message.clone());
    while let Some(m) = current {
        parts.insert(0, snake(m.name()));
        current = m.parent_message();
    }
    parts.push(camel(oneof.name()));
    quote! { #(#parts)::* }
}
