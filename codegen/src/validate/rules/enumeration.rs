//! `enum` rules: `const`, `defined_only`, `in` and `not_in` of an enum
//! value (prost holds it as its `i32` number).

use proc_macro2::TokenStream;
use prost_reflect::{DynamicMessage, EnumDescriptor, Value};
use quote::quote;

use super::membership::membership;
use crate::validate::MessageWriter;

impl MessageWriter<'_> {
    /// The rules of a value of the enum `descriptor`.
    pub(super) fn enumeration(
        &mut self,
        label: &str,
        descriptor: &EnumDescriptor,
        rules: &DynamicMessage,
        path: &[i32],
    ) -> TokenStream {
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
                    let numbers: Vec<i32> = descriptor.values().map(|v| v.number()).collect();
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
}
