//! The `#[config(...)]` attributes of a section and of its fields, parsed
//! with every mistake kept (they are reported together, each at its
//! attribute).

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ExprLit, ExprUnary, Lit, LitStr, Path, UnOp};

/// What the attributes of one field say.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    pub default: Option<Value>,
    pub default_fn: Option<Path>,
    pub default_doc: Option<LitStr>,
    pub min: Option<Value>,
    pub max: Option<Value>,
    pub above: Option<Value>,
    pub required: Option<Span>,
    pub section: Option<Span>,
    pub flatten: Option<Span>,
    pub env: Option<LitStr>,
    pub not_secret: Option<Span>,
    /// `secret`, which only says what the type already must.
    pub secret: Option<Span>,
}

/// A literal value of an attribute (`5`, `-1`, `0.5`, `true`, `"5m"`).
#[derive(Clone)]
pub(crate) struct Value {
    pub lit: Lit,
    /// Whether it is written with a minus sign.
    pub negative: bool,
    pub span: Span,
}

impl Value {
    /// The value as the reference table shows it (TOML: text quoted).
    pub(crate) fn shown(&self) -> String {
        let sign = if self.negative { "-" } else { "" };
        match &self.lit {
            Lit::Str(text) => format!("{:?}", text.value()),
            Lit::Int(int) => format!("{sign}{}", int.base10_digits()),
            Lit::Float(float) => format!("{sign}{}", float.base10_digits()),
            Lit::Bool(b) => b.value.to_string(),
            other => quote::quote!(#other).to_string(),
        }
    }

    /// The value as Rust tokens.
    pub(crate) fn tokens(&self) -> proc_macro2::TokenStream {
        let lit = &self.lit;
        match self.negative {
            true => quote::quote_spanned!(self.span=> -#lit),
            false => quote::quote_spanned!(self.span=> #lit),
        }
    }
}

/// The section's own attributes.
#[derive(Default)]
pub(crate) struct SectionAttrs {
    pub validate: Option<Path>,
    pub validate_config: Option<Path>,
}

const FIELD_KEYS: &str = "default, default_fn, default_doc, min, max, above, required, \
                          section, flatten, env, not_secret";

impl FieldAttrs {
    pub(crate) fn parse(attrs: &[Attribute], errors: &mut Errors) -> Self {
        let mut out = FieldAttrs::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("config")) {
            let parsed = attr.parse_nested_meta(|meta| {
                let name = meta.path.get_ident().map(ToString::to_string);
                let span = meta.path.span();
                let twice = match name.as_deref() {
                    Some("default") => set(&mut out.default, value(meta.value()?.parse()?)?),
                    Some("default_fn") => set(&mut out.default_fn, meta.value()?.parse()?),
                    Some("default_doc") => set(&mut out.default_doc, meta.value()?.parse()?),
                    Some("min") => set(&mut out.min, value(meta.value()?.parse()?)?),
                    Some("max") => set(&mut out.max, value(meta.value()?.parse()?)?),
                    Some("above") => set(&mut out.above, value(meta.value()?.parse()?)?),
                    Some("env") => set(&mut out.env, meta.value()?.parse()?),
                    Some("required") => set(&mut out.required, span),
                    Some("section") => set(&mut out.section, span),
                    Some("flatten") => set(&mut out.flatten, span),
                    Some("not_secret") => set(&mut out.not_secret, span),
                    Some("secret") => set(&mut out.secret, span),
                    Some("validate") => {
                        return Err(
                            meta.error("`validate` is an attribute of the struct, not of a field")
                        );
                    }
                    _ => {
                        return Err(meta.error(format!(
                            "unknown config attribute; expected one of: {FIELD_KEYS}"
                        )));
                    }
                };
                if twice {
                    errors.at(span, "given twice");
                }
                Ok(())
            });
            if let Err(error) = parsed {
                errors.push(error);
            }
        }
        out
    }
}

impl SectionAttrs {
    pub(crate) fn parse(attrs: &[Attribute], errors: &mut Errors) -> Self {
        let mut out = SectionAttrs::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("config")) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("validate") {
                    out.validate = Some(meta.value()?.parse()?);
                    Ok(())
                } else if meta.path.is_ident("validate_config") {
                    out.validate_config = Some(meta.value()?.parse()?);
                    Ok(())
                } else {
                    Err(meta.error(
                        "unknown config attribute of a section; expected one of: validate, \
                         validate_config",
                    ))
                }
            });
            if let Err(error) = parsed {
                errors.push(error);
            }
        }
        out
    }
}

/// Fills `slot`; whether it was filled already (an attribute given twice).
fn set<T>(slot: &mut Option<T>, value: T) -> bool {
    slot.replace(value).is_some()
}

/// A literal, possibly negative.
fn value(expr: Expr) -> syn::Result<Value> {
    let span = expr.span();
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => Ok(Value {
            lit,
            negative: false,
            span,
        }),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match *expr {
            Expr::Lit(ExprLit {
                lit: lit @ (Lit::Int(_) | Lit::Float(_)),
                ..
            }) => Ok(Value {
                lit,
                negative: true,
                span,
            }),
            _ => Err(syn::Error::new(span, "expected a literal")),
        },
        _ => Err(syn::Error::new(
            span,
            "expected a literal (a number, true or false, or text such as \"5m\")",
        )),
    }
}

/// Mistakes found so far, reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// `Ok` when there were none.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
