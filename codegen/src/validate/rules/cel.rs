//! CEL rules (`cel` and `cel_expression`) of a message or a field: each
//! compiled here with the `cel` crate, so a syntax error fails the build,
//! and written as a `static CelRule` the generated check evaluates.

use proc_macro2::{Ident, Span, TokenStream};
use prost_reflect::DynamicMessage;
use quote::quote;

use crate::validate::MessageWriter;

impl MessageWriter<'_> {
    /// The CEL rules of a rules message (`cel` and `cel_expression`), as
    /// statics declared in place; each is the static's name, after its
    /// declaration.
    pub(crate) fn cel_rules(&mut self, rules: &DynamicMessage, path: &[i32]) -> Vec<TokenStream> {
        let mut found = Vec::new();
        if let Some(list) = rules.get_field_by_name("cel") {
            for rule in list.as_list().unwrap_or_default() {
                let Some(rule) = rule.as_message() else {
                    continue;
                };
                let text = |name: &str| {
                    rule.get_field_by_name(name)
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                };
                let (id, message, expression) = (text("id"), text("message"), text("expression"));
                if id.is_empty() {
                    self.report(path, "buf.validate: a CEL rule needs an `id`".to_owned());
                }
                found.push(self.cel_static(&id, &message, &expression, path));
            }
        }
        if let Some(list) = rules.get_field_by_name("cel_expression") {
            for expression in list.as_list().unwrap_or_default() {
                let Some(expression) = expression.as_str() else {
                    continue;
                };
                found.push(self.cel_static(expression, "", expression, path));
            }
        }
        found
    }

    /// One CEL rule: compiled here, so that a syntax error fails the build.
    fn cel_static(
        &mut self,
        id: &str,
        message: &str,
        expression: &str,
        path: &[i32],
    ) -> TokenStream {
        if let Err(error) = cel::Program::compile(expression) {
            let first = error.to_string();
            let first = first.lines().next().unwrap_or_default().to_owned();
            self.report(
                path,
                format!("buf.validate: CEL rule `{id}` does not parse: {first}"),
            );
        }
        let runtime = self.runtime;
        let name = Ident::new(&format!("CEL_{}", self.statics), Span::call_site());
        self.statics += 1;
        quote! {
            {
                static #name: #runtime::validate::CelRule =
                    #runtime::validate::CelRule::new(#id, #message, #expression);
                &#name
            }
        }
    }
}
