//! The rules of the numeric types (`int32`, `uint64`, `double`, …):
//! `const`, the `gt`/`gte`/`lt`/`lte` range, `in`, `not_in` and `finite`.

use proc_macro2::{Literal, TokenStream};
use prost_reflect::{DynamicMessage, Kind, Value};
use quote::quote;

use super::membership::membership;
use super::range::{Bound, range};
use crate::validate::MessageWriter;

/// A numeric protobuf type, as prost holds it.
#[derive(Clone, Copy)]
pub(super) enum Num {
    I32,
    I64,
    U32,
    U64,
    F32,
    F64,
}

impl Num {
    pub(super) fn of(kind: &Kind) -> Option<Num> {
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

impl MessageWriter<'_> {
    pub(super) fn number(
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
