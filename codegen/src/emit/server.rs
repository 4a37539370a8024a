//! The server constructors of a service: `user_service(handler, &keel)`,
//! the tonic server already behind Keel's pipeline, and
//! `user_service_with(handler, &keel, layer)`, with the user's own layer
//! between the pipeline's steps and the handler.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Names, doc_lines, ident};

/// Both server constructors of a service.
pub(super) fn constructors(names: &Names<'_>, runtime: &TokenStream) -> TokenStream {
    let plain = constructor(names, runtime);
    let with = constructor_with(names, runtime);
    quote! {
        #plain

        #with
    }
}

/// `user_service(handler, &keel)`: the tonic server behind Keel's pipeline.
fn constructor(names: &Names<'_>, runtime: &TokenStream) -> TokenStream {
    let (snake, rust_name, full_name, policy_ident) = (
        &names.snake,
        names.rust_name,
        names.full_name,
        &names.policy,
    );
    let fn_ident = ident(snake);
    let server_mod = ident(&format!("{snake}_server"));
    let trait_ident = ident(rust_name);
    let server_ident = ident(&format!("{rust_name}Server"));
    let doc = doc_lines(&format!(
        " Serves `handler` as `{full_name}`, behind Keel's pipeline, whose steps (listed in the\n runtime's `pipeline` module) run as [`{policy_ident}`] says. Fails when `keel` was not built\n with that policy."
    ));
    quote! {
        #(#[doc = #doc])*
        pub fn #fn_ident<T: #server_mod::#trait_ident>(
            handler: T,
            keel: &#runtime::Keel,
        ) -> ::core::result::Result<#runtime::Pipeline<#server_mod::#server_ident<T>>, #runtime::Error> {
            let limit = keel.max_message_bytes();
            let server = #server_mod::#server_ident::new(handler)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit);
            keel.wrap(&#policy_ident, server)
        }
    }
}

/// `user_service_with(handler, &keel, layer)`: the same, with `layer`
/// between the pipeline's own steps and the handler.
fn constructor_with(names: &Names<'_>, runtime: &TokenStream) -> TokenStream {
    let (snake, rust_name, policy_ident) = (&names.snake, names.rust_name, &names.policy);
    let server_mod = ident(&format!("{snake}_server"));
    let trait_ident = ident(rust_name);
    let server_ident = ident(&format!("{rust_name}Server"));
    let with_ident = ident(&format!("{snake}_with"));
    let with_doc = doc_lines(&format!(
        " [`{snake}`], with `layer` (a tower layer of yours) between the pipeline's own steps and the\n handler: it finds the call's `keel_rpc::pipeline::CalledMethod` in the request's extensions, and\n a `keel_rpc::pipeline::OptionTable` gives the methods' own options from [`{policy_ident}`]."
    ));
    quote! {
        #(#[doc = #with_doc])*
        #[allow(clippy::type_complexity)]
        pub fn #with_ident<T: #server_mod::#trait_ident, L>(
            handler: T,
            keel: &#runtime::Keel,
            layer: L,
        ) -> ::core::result::Result<
            #runtime::Pipeline<#runtime::pipeline::Layered<L::Service, #server_mod::#server_ident<T>>>,
            #runtime::Error,
        >
        where
            L: #runtime::pipeline::Layer<#server_mod::#server_ident<T>>,
        {
            let limit = keel.max_message_bytes();
            let server = #server_mod::#server_ident::new(handler)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit);
            keel.wrap_with(&#policy_ident, server, layer)
        }
    }
}
