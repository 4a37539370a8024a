//! `string` rules: lengths in characters and bytes, `const`, `pattern`
//! (checked with `regex` here), prefixes, suffixes, substrings, `in`,
//! `not_in`, and the well-known formats (`email`, `hostname`, `ip`, `uri`,
//! `uuid`, …).

use proc_macro2::TokenStream;
use prost_reflect::{DynamicMessage, Value};
use quote::quote;

use super::counted;
use super::membership::membership;
use crate::validate::MessageWriter;

/// The strings of a repeated string rule.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

impl MessageWriter<'_> {
    pub(super) fn string(
        &mut self,
        label: &str,
        rules: &DynamicMessage,
        path: &[i32],
    ) -> TokenStream {
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
                    let message = format!("must be {}", counted(count, "character", "characters"));
                    let most = n.saturating_mul(4);
                    quote! {
                        if value.len() < #n || value.len() > #most || value.chars().count() != #n {
                            violations.push(#label, #id, #message);
                        }
                    }
                }
                "min_len" => {
                    min_max[0] = Some(count);
                    let message = format!(
                        "must be at least {}",
                        counted(count, "character", "characters")
                    );
                    quote! {
                        if value.len() < #n || value.chars().take(#n).count() < #n {
                            violations.push(#label, #id, #message);
                        }
                    }
                }
                "max_len" => {
                    min_max[1] = Some(count);
                    let message = format!(
                        "must be at most {}",
                        counted(count, "character", "characters")
                    );
                    quote! {
                        if value.len() > #n && value.chars().nth(#n).is_some() {
                            violations.push(#label, #id, #message);
                        }
                    }
                }
                "len_bytes" | "min_bytes" | "max_bytes" => {
                    let (op, message) = match rule {
                        "len_bytes" => (
                            quote! { != },
                            format!("must be {}", counted(count, "byte", "bytes")),
                        ),
                        "min_bytes" => (
                            quote! { < },
                            format!("must be at least {}", counted(count, "byte", "bytes")),
                        ),
                        _ => (
                            quote! { > },
                            format!("must be at most {}", counted(count, "byte", "bytes")),
                        ),
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
}
