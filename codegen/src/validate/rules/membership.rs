//! `in` / `not_in` of a rule, as every family with lists of values checks
//! it, and how the message shows the list.

use proc_macro2::TokenStream;
use quote::quote;

/// A list of values as a message shows it: `[a, b]`.
fn shown(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// `in` / `not_in`: whether `value` (an expression of the list's item
/// reference type) is among the `items` literals.
pub(super) fn membership<T: quote::ToTokens>(
    label: &str,
    type_name: &str,
    rule: &str,
    value: TokenStream,
    items: &[T],
    shown_items: &[String],
) -> TokenStream {
    let id = format!("{type_name}.{rule}");
    let list = shown(shown_items);
    let (test, message) = match rule {
        "in" => (
            quote! { ![#(#items),*].contains(#value) },
            format!("must be in list {list}"),
        ),
        _ => (
            quote! { [#(#items),*].contains(#value) },
            format!("must not be in list {list}"),
        ),
    };
    if items.is_empty() {
        return TokenStream::new();
    }
    quote! { if #test { violations.push(#label, #id, #message); } }
}
