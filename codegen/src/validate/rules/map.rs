//! `map` rules of a map field: `min_pairs`, `max_pairs`, and `keys` and
//! `values`, the rules of each key and each value.

use proc_macro2::TokenStream;
use prost_reflect::{DynamicMessage, Kind};
use quote::quote;

use super::Target;
use super::counted;
use crate::validate::MessageWriter;

impl MessageWriter<'_> {
    pub(super) fn map(
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
                    let message = format!(
                        "map must be at least {}",
                        counted(count, "entry", "entries")
                    );
                    quote! { if value.len() < #n { violations.push(#label, #id, #message); } }
                }
                "max_pairs" => {
                    let message =
                        format!("map must be at most {}", counted(count, "entry", "entries"));
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
