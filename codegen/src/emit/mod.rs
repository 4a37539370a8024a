//! Emits the Keel part of a service's generated module, one item at a
//! time: its gRPC service config (`service_config`), the include of its
//! OpenAPI document and the module's `FILE_DESCRIPTOR_SET` (`include`), its
//! policy table and route function (`policy`), the functions that return
//! the tonic server already behind Keel's server pipeline (`server`), and
//! the one that returns the tonic client over Keel's client layer
//! (`client`).

mod client;
mod include;
mod policy;
mod server;
mod service_config;

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

pub(crate) use include::descriptor_set_const;

/// What a service's items are named after.
struct Names<'a> {
    /// Fully qualified name (`user.v1.UserService`).
    full_name: &'a str,
    /// The service's Rust name as prost writes it (`UserService`).
    rust_name: &'a str,
    /// tonic's module naming of it (`user_service`).
    snake: String,
    /// Its policy table (`USER_SERVICE_POLICY`).
    policy: Ident,
}

/// Generates the policy table (with `server`, the wrapping server
/// constructor; with `client`, the wrapped client constructor) for one
/// service. `rust_name` is the service's Rust name as prost writes it
/// (`UserService`).
pub(crate) fn service(
    spec: &crate::ServiceSpec,
    rust_name: &str,
    server: bool,
    client: bool,
    runtime: &TokenStream,
) -> String {
    let snake = naive_snake_case(rust_name);
    let policy = ident(&format!("{}_POLICY", snake.to_uppercase()));
    let names = Names {
        full_name: &spec.full_name,
        rust_name,
        snake,
        policy,
    };

    let service_config = service_config::constant(spec, &names);
    let openapi = include::openapi_const(spec, &names);
    let policy = policy::table(spec, &names, runtime);
    let wrapper = server.then(|| server::constructors(&names, runtime));
    let client_ctor = client.then(|| client::constructor(&names, runtime));

    let tokens = quote! {
        #service_config

        #openapi

        #policy

        #wrapper

        #client_ctor
    };
    let file: syn::File = syn::parse2(tokens).expect("generated Keel code is valid Rust");
    prettyplease::unparse(&file)
}

/// One `#[doc]` attribute per line, so the output reads as `///` comments.
fn doc_lines(doc: &str) -> Vec<String> {
    doc.lines().map(str::to_owned).collect()
}

/// An identifier, raw (`r#type`) when the name is a Rust keyword.
fn ident(name: &str) -> Ident {
    if syn::parse_str::<Ident>(name).is_ok() {
        Ident::new(name, Span::call_site())
    } else {
        Ident::new_raw(name, Span::call_site())
    }
}

/// tonic-build's module naming (`UserService` → `user_service`), so the
/// generated code names tonic's modules exactly.
fn naive_snake_case(name: &str) -> String {
    let mut s = String::new();
    let mut it = name.chars().peekable();
    while let Some(x) = it.next() {
        s.push(x.to_ascii_lowercase());
        if let Some(y) = it.peek()
            && y.is_uppercase()
        {
            s.push('_');
        }
    }
    s
}
