//! `#[derive(Section)]`: a struct's fields as the keys of a configuration
//! section. It writes `Default` (from the `default` attributes) and
//! `keel_rpc::config::Section`: the key table (`KEYS`, which the environment
//! layer, the error messages and the reference read), the decoding of
//! each key on its own (so every bad key is reported, not the first), the
//! bounds checks, and the redacted TOML of `print-config`.

mod attr;
mod shape;

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Lit};

use attr::{Errors, FieldAttrs, SectionAttrs, Value};
use shape::{Kind, Shape};

/// One field, read and checked.
struct Field<'a> {
    ident: &'a syn::Ident,
    ty: &'a syn::Type,
    /// The key: the field's name, without `r#`.
    name: String,
    doc: String,
    attrs: FieldAttrs,
    shape: Shape<'a>,
}

/// What a field is to the section.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Value,
    Section,
    Flatten,
}

impl Field<'_> {
    fn role(&self) -> Role {
        match (&self.attrs.section, &self.attrs.flatten) {
            (_, Some(_)) => Role::Flatten,
            (Some(_), None) => Role::Section,
            (None, None) => Role::Value,
        }
    }
}

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            "a configuration section is a struct with named fields",
        ));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new(
            data.fields.span(),
            "a configuration section is a struct with named fields",
        ));
    };
    let mut errors = Errors::default();
    let section = SectionAttrs::parse(&input.attrs, &mut errors);
    let fields: Vec<Field> = named
        .named
        .iter()
        .filter_map(|field| {
            let ident = field.ident.as_ref()?;
            let attrs = FieldAttrs::parse(&field.attrs, &mut errors);
            let field = Field {
                ident,
                ty: &field.ty,
                name: ident.to_string().trim_start_matches("r#").to_owned(),
                doc: doc(&field.attrs),
                shape: Shape::of(&field.ty),
                attrs,
            };
            check(&field, &mut errors);
            Some(field)
        })
        .collect();
    errors.finish()?;

    let name = &input.ident;
    let mut generics = input.generics.clone();
    for param in generics.type_params_mut() {
        param
            .bounds
            .push(syn::parse_quote!(::keel_rpc::config::Section));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    let defaults = fields.iter().map(default_expr);
    let idents: Vec<_> = fields.iter().map(|f| f.ident).collect();
    let keys = fields.iter().map(key);
    let decodes = fields.iter().enumerate().map(|(i, f)| decode(i, f));
    let checks = fields.iter().enumerate().map(|(i, f)| check_field(i, f));
    let validate = section.validate.iter();
    let validate_config = section.validate_config.iter().map(|path| {
        quote! {
            fn check_in(
                config: &::keel_rpc::config::Config<Self>,
                problems: &mut ::keel_rpc::config::Problems<'_>,
            ) {
                #path(config, problems);
            }
        }
    });
    let tomls = fields.iter().map(to_toml);
    Ok(quote! {
        impl #impl_generics ::core::default::Default for #name #ty_generics #where_clause {
            fn default() -> Self {
                Self { #( #idents: #defaults, )* }
            }
        }

        impl #impl_generics ::keel_rpc::config::Section for #name #ty_generics #where_clause {
            const KEYS: &'static [::keel_rpc::config::Key] = &[ #( #keys, )* ];

            fn decode_fields(decoder: &mut ::keel_rpc::config::Decoder<'_>, path: &str) -> Self {
                let mut out = <Self as ::core::default::Default>::default();
                #( #decodes )*
                out
            }

            fn check(&self, problems: &mut ::keel_rpc::config::Problems<'_>) {
                #( #checks )*
                #( #validate(self, problems); )*
            }

            #( #validate_config )*

            fn to_toml(&self) -> ::keel_rpc::config::__private::Table {
                let mut table = ::keel_rpc::config::__private::Table::new();
                #( #tomls )*
                table
            }
        }
    })
}

/// The mistakes of one field's attributes, each at the attribute.
fn check(field: &Field, errors: &mut Errors) {
    let attrs = &field.attrs;
    let kind = field.shape.kind;
    let role = field.role();
    if let (Some(_), Some(flatten)) = (attrs.section, attrs.flatten) {
        errors.at(
            flatten,
            "a field is a `section` or is `flatten`ed, not both",
        );
    }
    if role != Role::Value {
        let own = [
            attrs.default.as_ref().map(|v| v.span),
            attrs.default_fn.as_ref().map(Spanned::span),
            attrs.min.as_ref().map(|v| v.span),
            attrs.max.as_ref().map(|v| v.span),
            attrs.above.as_ref().map(|v| v.span),
            attrs.required,
        ];
        for span in own.into_iter().flatten() {
            errors.at(
                span,
                "a nested section's defaults and bounds are those of its own fields",
            );
        }
    }
    if let (Some(_), Some(default_fn)) = (&attrs.default, &attrs.default_fn) {
        errors.at(
            default_fn.span(),
            "give `default` or `default_fn`, not both",
        );
    }
    if let (Some(required), true) = (
        attrs.required,
        attrs.default.is_some() || attrs.default_fn.is_some(),
    ) {
        errors.at(required, "a `required` key has no default");
    }
    if let Some(default) = &attrs.default {
        match (kind, &default.lit) {
            (Kind::Duration, Lit::Str(text)) => check_duration(text, errors),
            (Kind::Duration, _) => {
                errors.at(default.span, "a duration is written as text, like \"5m\"")
            }
            (Kind::Text | Kind::Secret | Kind::Collection | Kind::Other, Lit::Str(_)) => {}
            (Kind::Text | Kind::Secret, _) => {
                errors.at(default.span, "the default of a text key is text")
            }
            (Kind::Number, Lit::Int(_) | Lit::Float(_)) | (Kind::Bool, Lit::Bool(_)) => {}
            (Kind::Number, _) => errors.at(default.span, "the default of a number is a number"),
            (Kind::Bool, _) => errors.at(default.span, "the default of a bool is true or false"),
            (Kind::Collection | Kind::Other, _) => errors.at(
                default.span,
                "the default of this type is written as its TOML text, like \"0.0.0.0:50051\"",
            ),
        }
    }
    let bounds = [&attrs.min, &attrs.max, &attrs.above];
    for bound in bounds.into_iter().flatten().filter(|_| role == Role::Value) {
        match (kind, &bound.lit) {
            (Kind::Duration, Lit::Str(text)) => check_duration(text, errors),
            (Kind::Duration, _) => errors.at(bound.span, "a duration bound is text, like \"5m\""),
            (Kind::Number, Lit::Int(_) | Lit::Float(_)) => {}
            (Kind::Number, _) => errors.at(bound.span, "a number's bound is a number"),
            _ => errors.at(bound.span, "bounds apply to numbers and durations"),
        }
    }
    if let (Some(_), Some(above)) = (&attrs.min, &attrs.above) {
        errors.at(
            above.span,
            "give `min` (at least) or `above` (more than), not both",
        );
    }
    let secret = kind == Kind::Secret;
    if let (Some(span), false) = (attrs.secret, secret) {
        errors.at(
            span,
            "secrets are typed: make the field a keel_rpc::config::Secret, which is redacted in \
             Debug, Display, errors and print-config",
        );
    }
    let named_secret = {
        let name = field.name.to_ascii_lowercase();
        name.contains("secret")
            || name.contains("password")
            || name.contains("private") && !name.ends_with("_file")
    };
    if named_secret && !secret && attrs.not_secret.is_none() && role == Role::Value {
        errors.at(
            field.ident.span(),
            format!(
                "`{}` looks like a secret: make it a keel_rpc::config::Secret (redacted in Debug, \
                 Display, errors and print-config), or mark it #[config(not_secret)]",
                field.name
            ),
        );
    }
}

/// A duration's text must parse (humantime's, as the configuration reads it).
fn check_duration(text: &syn::LitStr, errors: &mut Errors) {
    if let Err(e) = humantime::parse_duration(&text.value()) {
        errors.at(
            text.span(),
            format!("not a duration ({e}); write it like \"5m\", \"30s\" or \"250ms\""),
        );
    }
}

/// The field's doc comment as one line of text, intra-doc links unwrapped.
fn doc(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let syn::Meta::NameValue(meta) = &attr.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: Lit::Str(text),
                ..
            }) = &meta.value
        {
            lines.push(text.value().trim().to_owned());
        }
    }
    let text = lines
        .iter()
        .filter(|l| !l.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    text.replace("[`", "`").replace("`]", "`")
}

/// The bounds as a sentence: `at least 1`, `more than 0s, at most 10m`.
fn bounds_text(attrs: &FieldAttrs) -> String {
    let text = |v: &Value| match &v.lit {
        Lit::Str(s) => s.value(),
        _ => v.shown(),
    };
    let lower = match (&attrs.min, &attrs.above) {
        (Some(min), _) => Some(("at least", text(min))),
        (None, Some(above)) => Some(("more than", text(above))),
        (None, None) => None,
    };
    match (lower, &attrs.max) {
        (Some(("at least", min)), Some(max)) => format!("between {min} and {}", text(max)),
        (Some((word, lower)), Some(max)) => format!("{word} {lower}, at most {}", text(max)),
        (Some((word, lower)), None) => format!("{word} {lower}"),
        (None, Some(max)) => format!("at most {}", text(max)),
        (None, None) => String::new(),
    }
}

/// A duration's text as `Duration` tokens (checked by `check`).
fn duration(text: &str, span: Span) -> TokenStream {
    let nanos = humantime::parse_duration(text).map_or(0, |d| d.as_nanos() as u64);
    quote_spanned!(span=> ::core::time::Duration::from_nanos(#nanos))
}

/// A bound as a value of the field's type.
fn bound(value: &Value, kind: Kind) -> TokenStream {
    match (&value.lit, kind) {
        (Lit::Str(text), Kind::Duration) => duration(&text.value(), value.span),
        _ => value.tokens(),
    }
}

fn default_expr(field: &Field) -> TokenStream {
    let attrs = &field.attrs;
    let span = field.ident.span();
    if let Some(path) = &attrs.default_fn {
        return quote_spanned!(path.span()=> #path());
    }
    let Some(default) = &attrs.default else {
        return quote_spanned!(span=> ::core::default::Default::default());
    };
    let name = &field.name;
    let inner = field.shape.inner;
    let value = match (&default.lit, field.shape.kind) {
        (Lit::Str(text), Kind::Duration) => duration(&text.value(), default.span),
        (Lit::Str(_), Kind::Text | Kind::Secret) => {
            let lit = &default.lit;
            quote_spanned!(default.span=> <#inner as ::core::convert::From<&str>>::from(#lit))
        }
        (Lit::Str(_), _) => {
            let lit = &default.lit;
            quote_spanned!(default.span=> ::keel_rpc::config::__private::default_of::<#inner>(#name, #lit))
        }
        _ => default.tokens(),
    };
    match field.shape.optional {
        true => quote!(::core::option::Option::Some(#value)),
        false => value,
    }
}

/// The field's entry of `KEYS`.
fn key(field: &Field) -> TokenStream {
    let name = &field.name;
    let doc = &field.doc;
    let attrs = &field.attrs;
    let default = match (&attrs.default_doc, &attrs.default) {
        (Some(doc), _) => doc.value(),
        (None, Some(value)) => value.shown(),
        (None, None) if attrs.required.is_some() => String::new(),
        (None, None) if field.shape.optional => "none".to_owned(),
        (None, None) => match field.shape.kind {
            Kind::Collection if field.role() == Role::Value => "empty".to_owned(),
            Kind::Bool => "false".to_owned(),
            Kind::Number => "0".to_owned(),
            Kind::Text | Kind::Secret => "\"\"".to_owned(),
            _ => String::new(),
        },
    };
    let bounds = bounds_text(attrs);
    let env = match (&attrs.env, field.shape.kind) {
        (Some(env), _) => {
            let env = env.value();
            quote!(::keel_rpc::config::Env::Shown(#env))
        }
        (None, Kind::Collection) => quote!(::keel_rpc::config::Env::File),
        (None, _) => quote!(::keel_rpc::config::Env::Variable),
    };
    let text = field.shape.text();
    let secret = field.shape.kind == Kind::Secret;
    let required = attrs.required.is_some();
    let nested = match field.role() {
        Role::Value => quote!(::keel_rpc::config::Nested::No),
        Role::Section => {
            let inner = field.shape.inner;
            let optional = field.shape.optional;
            quote!(::keel_rpc::config::Nested::Table {
                keys: <#inner as ::keel_rpc::config::Section>::KEYS,
                optional: #optional,
            })
        }
        Role::Flatten => {
            let ty = field.ty;
            quote!(::keel_rpc::config::Nested::Flatten(<#ty as ::keel_rpc::config::Section>::KEYS))
        }
    };
    quote! {
        ::keel_rpc::config::Key {
            name: #name,
            doc: #doc,
            default: #default,
            bounds: #bounds,
            env: #env,
            text: #text,
            secret: #secret,
            required: #required,
            nested: #nested,
        }
    }
}

/// Decoding the field at index `i` of `KEYS`.
fn decode(i: usize, field: &Field) -> TokenStream {
    let ident = field.ident;
    let ty = field.ty;
    let inner = field.shape.inner;
    let key = quote!(&<Self as ::keel_rpc::config::Section>::KEYS[#i]);
    match field.role() {
        Role::Flatten => quote! {
            out.#ident = <#ty as ::keel_rpc::config::Section>::decode_fields(decoder, path);
        },
        Role::Section if field.shape.optional => quote! {
            out.#ident = decoder.optional_section::<#inner>(path, #key);
        },
        Role::Section => quote! {
            out.#ident = decoder.section::<#inner>(path, #key);
        },
        Role::Value if field.shape.kind == Kind::Duration => quote! {
            if let ::core::option::Option::Some(value) =
                decoder.value::<::keel_rpc::config::__private::Humantime<#ty>>(path, #key)
            {
                out.#ident = value.into_inner();
            }
        },
        Role::Value => quote! {
            if let ::core::option::Option::Some(value) = decoder.value::<#ty>(path, #key) {
                out.#ident = value;
            }
        },
    }
}

/// The bounds of the field at index `i`, and its section's own checks.
fn check_field(i: usize, field: &Field) -> TokenStream {
    let ident = field.ident;
    let name = &field.name;
    let attrs = &field.attrs;
    match field.role() {
        Role::Flatten => return quote!(::keel_rpc::config::Section::check(&self.#ident, problems);),
        Role::Section if field.shape.optional => {
            return quote! {
                if let ::core::option::Option::Some(section) = &self.#ident {
                    ::keel_rpc::config::Section::check(section, &mut problems.at(#name));
                }
            };
        }
        Role::Section => {
            return quote! {
                ::keel_rpc::config::Section::check(&self.#ident, &mut problems.at(#name));
            };
        }
        Role::Value => {}
    }
    let kind = field.shape.kind;
    let mut conditions = Vec::new();
    if let Some(min) = &attrs.min {
        let min = bound(min, kind);
        conditions.push(quote!(*value >= #min));
    }
    if let Some(above) = &attrs.above {
        let above = bound(above, kind);
        conditions.push(quote!(*value > #above));
    }
    if let Some(max) = &attrs.max {
        let max = bound(max, kind);
        conditions.push(quote!(*value <= #max));
    }
    if conditions.is_empty() {
        return TokenStream::new();
    }
    let shown = match kind {
        Kind::Duration => quote!(::keel_rpc::config::__private::duration_text(*value)),
        _ => quote!(::std::string::ToString::to_string(value)),
    };
    let key = quote!(&<Self as ::keel_rpc::config::Section>::KEYS[#i]);
    let body = quote! {
        if !( #( #conditions )&&* ) {
            problems.out_of_range(#key, #shown);
        }
    };
    match field.shape.optional {
        true => quote! {
            if let ::core::option::Option::Some(value) = &self.#ident { #body }
        },
        false => quote! {
            { let value = &self.#ident; #body }
        },
    }
}

/// The field in the TOML of `print-config`.
fn to_toml(field: &Field) -> TokenStream {
    let ident = field.ident;
    let name = &field.name;
    let put = match (field.role(), field.shape.kind) {
        (Role::Flatten, _) => {
            return quote! {
                table.extend(::keel_rpc::config::Section::to_toml(&self.#ident));
            };
        }
        (Role::Section, _) => quote! {
            table.insert(
                #name.into(),
                ::keel_rpc::config::__private::toml_table(::keel_rpc::config::Section::to_toml(value)),
            );
        },
        (Role::Value, Kind::Duration) => quote! {
            table.insert(
                #name.into(),
                ::keel_rpc::config::__private::toml_text(::keel_rpc::config::__private::duration_text(*value)),
            );
        },
        (Role::Value, _) => quote! {
            table.insert(#name.into(), ::keel_rpc::config::__private::toml_value(value));
        },
    };
    match field.shape.optional {
        true => quote! {
            if let ::core::option::Option::Some(value) = &self.#ident { #put }
        },
        false => quote! {
            { let value = &self.#ident; #put }
        },
    }
}
