//! Emits the `Debug` of messages with sensitive fields: the standard field
//! option `debug_redact = true` (`google/protobuf/descriptor.proto`) prints
//! `[REDACTED]` in place of the value.
//!
//! prost derives `Debug` for every message, printing every field. For a
//! message with a redacted field, codegen asks prost-build not to
//! (`skip_debug`, which also covers the message's oneofs) and writes the
//! message's `Debug` here, and its oneofs': what is logged, put in a panic
//! message or a span never carries the value.

use heck::{ToSnakeCase, ToUpperCamelCase};
use proc_macro2::TokenStream;
use prost_reflect::{FileDescriptor, MessageDescriptor, ReflectMessage as _, Value};
use quote::quote;

use crate::ident::{camel, raw_ident, sanitize, snake};

/// A message whose `Debug` codegen writes: it has a redacted field (directly
/// or in a oneof), or is nested in one that has.
#[derive(Clone, Debug)]
pub(crate) struct Redacted {
    /// Its protobuf package.
    pub package: String,
    /// Its fully qualified name, with a leading dot, as prost-build matches it.
    pub path: String,
    /// The modules of nested messages, from the package's module down.
    modules: Vec<String>,
    /// The struct's Rust name.
    name: String,
    members: Vec<Member>,
}

/// A field of the struct prost writes.
#[derive(Clone, Debug)]
enum Member {
    Field {
        proto: String,
        redacted: bool,
    },
    /// A oneof: its Rust enum, and each variant with whether it is redacted.
    Oneof {
        proto: String,
        variants: Vec<(String, bool)>,
    },
}

/// The messages of `files` whose `Debug` codegen writes (see [`Redacted`]).
pub(crate) fn find(files: &[FileDescriptor]) -> Vec<Redacted> {
    let mut found = Vec::new();
    for file in files {
        for message in file.messages() {
            visit(
                &message,
                file.package_name(),
                &mut Vec::new(),
                false,
                &mut found,
            );
        }
    }
    found
}

/// Collects `message` when it has a redacted field, or when `inside` one
/// that does: prost-build's `skip_debug` of a message also matches the
/// messages nested in it, which then need their `Debug` written too.
fn visit(
    message: &MessageDescriptor,
    package: &str,
    modules: &mut Vec<String>,
    inside: bool,
    found: &mut Vec<Redacted>,
) {
    if message.is_map_entry() {
        return;
    }
    let mut members = Vec::new();
    let mut seen_oneofs = Vec::new();
    for field in message.fields() {
        match field.containing_oneof().filter(|o| !o.is_synthetic()) {
            None => members.push(Member::Field {
                proto: field.name().to_owned(),
                redacted: is_redacted(&field),
            }),
            Some(oneof) if !seen_oneofs.contains(&oneof.name().to_owned()) => {
                seen_oneofs.push(oneof.name().to_owned());
                members.push(Member::Oneof {
                    proto: oneof.name().to_owned(),
                    variants: oneof
                        .fields()
                        .map(|f| (sanitize(&f.name().to_upper_camel_case()), is_redacted(&f)))
                        .collect(),
                });
            }
            Some(_) => {}
        }
    }
    let any = members.iter().any(|m| match m {
        Member::Field { redacted, .. } => *redacted,
        Member::Oneof { variants, .. } => variants.iter().any(|(_, r)| *r),
    });
    if any || inside {
        found.push(Redacted {
            package: package.to_owned(),
            path: format!(".{}", message.full_name()),
            modules: modules.clone(),
            name: sanitize(&message.name().to_upper_camel_case()),
            members,
        });
    }
    modules.push(sanitize(&message.name().to_snake_case()));
    for nested in message.child_messages() {
        visit(&nested, package, modules, any || inside, found);
    }
    modules.pop();
}

fn is_redacted(field: &prost_reflect::FieldDescriptor) -> bool {
    let options = field.options();
    options
        .descriptor()
        .get_field_by_name("debug_redact")
        .is_some_and(|f| matches!(options.get_field(&f).as_ref(), Value::Bool(true)))
}

/// The `Debug` impls of `messages` (all of one package), for its module.
pub(crate) fn debug_impls(messages: &[&Redacted]) -> String {
    let impls = messages.iter().map(|m| {
        let modules: Vec<_> = m.modules.iter().map(|s| raw_ident(s)).collect();
        let name = raw_ident(&m.name);
        let type_name = &m.name;
        let fields = m.members.iter().map(|member| match member {
            Member::Field { proto, redacted } => {
                let field = snake(proto);
                match redacted {
                    true => quote!(s.field(#proto, &::core::format_args!("[REDACTED]"));),
                    false => quote!(s.field(#proto, &self.#field);),
                }
            }
            Member::Oneof { proto, .. } => {
                let field = snake(proto);
                quote!(s.field(#proto, &self.#field);)
            }
        });
        let oneofs = m.members.iter().filter_map(|member| {
            let Member::Oneof { proto, variants } = member else {
                return None;
            };
            let own = snake(&m.name);
            let enum_name = camel(proto);
            let arms = variants.iter().map(|(variant, redacted)| {
                let ident = raw_ident(variant);
                match redacted {
                    true => quote!(Self::#ident(_) => f.debug_tuple(#variant).field(&::core::format_args!("[REDACTED]")).finish(),),
                    false => quote!(Self::#ident(value) => f.debug_tuple(#variant).field(value).finish(),),
                }
            });
            Some(quote! {
                impl ::core::fmt::Debug for #(#modules::)* #own::#enum_name {
                    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        match self {
                            #(#arms)*
                        }
                    }
                }
            })
        });
        quote! {
            impl ::core::fmt::Debug for #(#modules::)* #name {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    let mut s = f.debug_struct(#type_name);
                    #(#fields)*
                    s.finish()
                }
            }
            #(#oneofs)*
        }
    });
    let tokens: TokenStream = quote!(#(#impls)*);
    match syn::parse2::<syn::File>(tokens) {
        Ok(file) => format!(
            "\n// `Debug` of messages with `debug_redact` fields: their values print as `[REDACTED]`.\n{}",
            prettyplease::unparse(&file)
        ),
        // Unreachable: the tokens are built from identifiers prost-build accepts.
        Err(e) => format!("compile_error!({:?});", e.to_string()),
    }
}
