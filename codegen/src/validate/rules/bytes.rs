//! `bytes` rules: lengths, `const`, prefixes, suffixes, `contains`, `in`,
//! `not_in`, and the IP address lengths.

use proc_macro2::{Literal, TokenStream};
use prost_reflect::DynamicMessage;
use quote::quote;

use super::counted;
use super::membership::membership;
use crate::validate::MessageWriter;

impl MessageWriter<'_> {
    pub(super) fn bytes(
        &mut self,
        label: &str,
        rules: &DynamicMessage,
        path: &[i32],
    ) -> TokenStream {
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
                    let message = format!("must be {}", counted(count, "byte", "bytes"));
                    quote! { if value.len() != #n { violations.push(#label, #id, #message); } }
                }
                "min_len" => {
                    let message = format!("must be at least {}", counted(count, "byte", "bytes"));
                    quote! { if value.len() < #n { violations.push(#label, #id, #message); } }
                }
                "max_len" => {
                    let message = format!("must be at most {}", counted(count, "byte", "bytes"));
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
}
