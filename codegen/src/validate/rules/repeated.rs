//! `repeated` rules of a list field: `min_items`, `max_items`, `unique`,
//! and `items`, the rules of each item.

use proc_macro2::TokenStream;
use prost_reflect::{DynamicMessage, Kind};
use quote::quote;

use super::Target;
use super::counted;
use crate::validate::MessageWriter;

impl MessageWriter<'_> {
    pub(super) fn repeated(
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
                    let message = format!("must contain at least {}", counted(count, "item", "items"));
                    quote! { if value.len() < #n { violations.push(#label, #id, #message); } }
                }
                "max_items" => {
                    bounds[1] = Some(count);
                    let message = format!("must contain no more than {}", counted(count, "item", "items"));
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
}
