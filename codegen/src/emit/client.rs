//! The client constructor of a service: `connect_user_service(channel,
//! &client)`, tonic's client over Keel's client layer for that service's
//! policy. (Not `user_service_client`: that is tonic's module of the client
//! type, which the function's name would shadow in readers' eyes.)

use proc_macro2::TokenStream;
use quote::quote;

use super::{Names, doc_lines, ident};

/// `connect_user_service(channel, &client)`.
pub(super) fn constructor(names: &Names<'_>, runtime: &TokenStream) -> TokenStream {
    let (snake, rust_name, full_name, policy_ident) = (
        &names.snake,
        names.rust_name,
        names.full_name,
        &names.policy,
    );
    let fn_ident = ident(&format!("connect_{snake}"));
    let client_mod = ident(&format!("{snake}_client"));
    let client_ident = ident(&format!("{rust_name}Client"));
    let doc = doc_lines(&format!(
        " A client of `{full_name}` over `channel` (a `Channel`, an `Endpoint` or a URL such as\n `\"http://127.0.0.1:50051\"`; `https://` calls over TLS as `client.tls` says), wrapped in Keel's client layer: a bearer token from\n `client`'s token source, W3C trace-context propagation, a default deadline and the\n `grpc_client_*` metrics. Fails when the channel cannot be made."
    ));
    quote! {
        #(#[doc = #doc])*
        pub fn #fn_ident(
            channel: impl #runtime::client::IntoChannel,
            client: &#runtime::client::Client,
        ) -> ::core::result::Result<#client_mod::#client_ident<#runtime::client::Channel>, #runtime::Error> {
            let channel = client.connect(channel)?;
            ::core::result::Result::Ok(#client_mod::#client_ident::new(client.wrap(&#policy_ident, channel)))
        }
    }
}
