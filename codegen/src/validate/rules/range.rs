//! The `gt`/`gte`/`lt`/`lte` range of a rule, as the numeric and the time
//! families check it.

use proc_macro2::TokenStream;
use quote::quote;

/// One bound of a range rule: inclusive or not, its literal and how the
/// message shows it.
pub(super) struct Bound {
    pub(super) inclusive: bool,
    pub(super) literal: TokenStream,
    pub(super) shown: String,
}

/// The `gt`/`gte`/`lt`/`lte` checks of `value` (an expression), with
/// protovalidate's ids (`int32.gt_lt`, `…_exclusive` when the range is
/// "outside") and messages.
pub(super) fn range(
    label: &str,
    type_name: &str,
    value: &TokenStream,
    lower: Option<Bound>,
    upper: Option<Bound>,
    exclusive: bool,
) -> TokenStream {
    let test = |bound: &Bound, lower: bool| {
        let literal = &bound.literal;
        match (lower, bound.inclusive) {
            (true, true) => quote! { #value >= #literal },
            (true, false) => quote! { #value > #literal },
            (false, true) => quote! { #value <= #literal },
            (false, false) => quote! { #value < #literal },
        }
    };
    let words = |bound: &Bound, lower: bool| match (lower, bound.inclusive) {
        (true, true) => "greater than or equal to",
        (true, false) => "greater than",
        (false, true) => "less than or equal to",
        (false, false) => "less than",
    };
    let name = |bound: &Bound, lower: bool| match (lower, bound.inclusive) {
        (true, true) => "gte",
        (true, false) => "gt",
        (false, true) => "lte",
        (false, false) => "lt",
    };
    let (ok, id, message) = match (&lower, &upper) {
        (None, None) => return TokenStream::new(),
        (Some(b), None) | (None, Some(b)) => {
            let is_lower = lower.is_some();
            (
                test(b, is_lower),
                format!("{type_name}.{}", name(b, is_lower)),
                format!("must be {} {}", words(b, is_lower), b.shown),
            )
        }
        (Some(l), Some(u)) => {
            let (ok_lower, ok_upper) = (test(l, true), test(u, false));
            let (ok, join, suffix) = match exclusive {
                false => (quote! { (#ok_lower) && (#ok_upper) }, "and", ""),
                true => (quote! { (#ok_lower) || (#ok_upper) }, "or", "_exclusive"),
            };
            (
                ok,
                format!("{type_name}.{}_{}{suffix}", name(l, true), name(u, false)),
                format!(
                    "must be {} {} {join} {} {}",
                    words(l, true),
                    l.shown,
                    words(u, false),
                    u.shown
                ),
            )
        }
    };
    quote! { if !(#ok) { violations.push(#label, #id, #message); } }
}
