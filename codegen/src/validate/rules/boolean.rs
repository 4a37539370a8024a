//! `bool` rules: `const`.

use proc_macro2::TokenStream;
use prost_reflect::{DynamicMessage, Value};
use quote::quote;

use crate::validate::MessageWriter;

impl MessageWriter<'_> {
    /// The rules of a `bool` value.
    pub(super) fn boolean(
        &mut self,
        label: &str,
        rules: &DynamicMessage,
        path: &[i32],
    ) -> TokenStream {
        let mut checks = TokenStream::new();
        for (member, value) in rules.fields() {
            match (member.name(), value) {
                ("const", Value::Bool(c)) => {
                    let message = format!("must equal {c}");
                    checks.extend(quote! {
                        if *value != #c { violations.push(#label, "bool.const", #message); }
                    });
                }
                ("example", _) => {}
                (other, _) => self.unsupported("bool", other, path),
            }
        }
        checks
    }
}
