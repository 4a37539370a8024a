//! Emits the Keel part of a service's generated module: its policy table and
//! the function that returns the tonic server already behind Keel's server pipeline.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use heck::ToUpperCamelCase;

use crate::annotations::{Access, RateKey, RetryPolicy, ServiceSpec};

/// Generates the policy table (with `server`, the wrapping server
/// constructor; with `client`, the wrapped client constructor) for one
/// service. `rust_name` is the service's Rust name as prost writes it
/// (`UserService`).
pub fn service(
    spec: &ServiceSpec,
    rust_name: &str,
    server: bool,
    client: bool,
    runtime: &TokenStream,
) -> String {
    let snake = naive_snake_case(rust_name);
    let policy_ident = ident(&format!("{}_POLICY", snake.to_uppercase()));
    let route_ident = ident(&format!("{snake}_route"));

    let methods = spec.methods.iter().map(|m| {
        let name = &m.name;
        let path = format!("/{}/{}", spec.full_name, m.name);
        let kind = ident(match (m.client_streaming, m.server_streaming) {
            (false, false) => "Unary",
            (true, false) => "ClientStreaming",
            (false, true) => "ServerStreaming",
            (true, true) => "BidiStreaming",
        });
        let access = match &m.access {
            Access::Public => quote!(#runtime::Access::Public),
            Access::Token(scopes) => quote!(#runtime::Access::Token { scopes: &[#(#scopes),*] }),
            Access::Peer { peers, scopes } if scopes.is_empty() => {
                quote!(#runtime::Access::Peer { peers: &[#(#peers),*], scopes: None })
            }
            Access::Peer { peers, scopes } => quote!(#runtime::Access::Peer {
                peers: &[#(#peers),*],
                scopes: Some(&[#(#scopes),*]),
            }),
        };
        let labels = m.labels.iter().map(|(k, v)| quote!((#k, #v)));
        let exact = |d: std::time::Duration| {
            let nanos = proc_macro2::Literal::u64_unsuffixed(d.as_nanos() as u64);
            quote!(::core::time::Duration::from_nanos(#nanos))
        };
        let duration = |d: Option<std::time::Duration>| match d {
            Some(d) => {
                let d = exact(d);
                quote!(::core::option::Option::Some(#d))
            }
            None => quote!(::core::option::Option::None),
        };
        let timeout = duration(m.timeout);
        let max_timeout = duration(m.max_timeout);
        let max_concurrency = match m.max_concurrency {
            Some(n) => quote!(::core::option::Option::Some(#n)),
            None => quote!(::core::option::Option::None),
        };
        let rate_limit = match &m.rate_limit {
            Some(limit) => {
                let per_second = limit.per_second;
                let burst = limit.burst;
                let key = match &limit.key {
                    RateKey::Global => quote!(#runtime::RateKey::Global),
                    RateKey::Peer => quote!(#runtime::RateKey::Peer),
                    RateKey::Subject => quote!(#runtime::RateKey::Subject),
                    RateKey::Claim(name) => quote!(#runtime::RateKey::Claim(#name)),
                };
                quote!(::core::option::Option::Some(#runtime::RateLimit {
                    per_second: #per_second,
                    burst: #burst,
                    key: #key,
                }))
            }
            None => quote!(::core::option::Option::None),
        };
        let retry = match &m.retry {
            Some(policy) => {
                let max_attempts = policy.max_attempts;
                let initial_backoff = exact(policy.initial_backoff);
                let max_backoff = exact(policy.max_backoff);
                let multiplier = policy.backoff_multiplier;
                let codes = policy
                    .retryable_codes
                    .iter()
                    .map(|code| ident(&code.to_upper_camel_case()));
                quote!(::core::option::Option::Some(#runtime::RetryPolicy {
                    max_attempts: #max_attempts,
                    initial_backoff: #initial_backoff,
                    max_backoff: #max_backoff,
                    backoff_multiplier: #multiplier,
                    retryable_codes: &[#(::tonic::Code::#codes),*],
                }))
            }
            None => quote!(::core::option::Option::None),
        };
        let http = m.http.iter().map(|route| http_route(route, m, runtime));
        let options = m.options.iter().map(|(name, value)| {
            let value = proc_macro2::Literal::byte_string(value);
            quote!((#name, #value))
        });
        quote! {
            #runtime::MethodPolicy {
                name: #name,
                path: #path,
                kind: #runtime::MethodKind::#kind,
                access: #access,
                labels: &[#(#labels),*],
                timeout: #timeout,
                max_timeout: #max_timeout,
                max_concurrency: #max_concurrency,
                rate_limit: #rate_limit,
                retry: #retry,
                options: &[#(#options),*],
                http: &[#(#http),*],
            }
        }
    });
    let arms = spec.methods.iter().enumerate().map(|(i, m)| {
        let path = format!("/{}/{}", spec.full_name, m.name);
        let i = proc_macro2::Literal::usize_unsuffixed(i);
        quote!(#path => Some(#i),)
    });
    let full_name = &spec.full_name;
    let policy_doc = doc_lines(&policy_doc(spec));

    let wrapper = server.then(|| {
        let fn_ident = ident(&snake);
        let server_mod = ident(&format!("{snake}_server"));
        let trait_ident = ident(rust_name);
        let server_ident = ident(&format!("{rust_name}Server"));
        let doc = doc_lines(&format!(
            " Serves `handler` as `{full_name}`, behind Keel's pipeline (tracing, metrics,\n auth, panic recovery) as [`{policy_ident}`] says. Fails when `keel` was not built with that policy."
        ));
        let with_ident = ident(&format!("{snake}_with"));
        let with_doc = doc_lines(&format!(
            " [`{snake}`], with `layer` (a tower layer of yours) between the pipeline's own steps and the\n handler: it finds the call's `keel_rpc::pipeline::CalledMethod` in the request's extensions, and\n a `keel_rpc::pipeline::OptionTable` gives the methods' own options from [`{policy_ident}`]."
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
    });

    let client_ctor = client.then(|| {
        let fn_ident = ident(&format!("{snake}_client"));
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
    });

    let config_ident = ident(&format!("{}_SERVICE_CONFIG", snake.to_uppercase()));
    let config_doc = doc_lines(&format!(
        " The gRPC service config (JSON) of `{full_name}`: the retry policies of [`{policy_ident}`],
 for clients in other languages (`grpc.WithDefaultServiceConfig` in Go, …)."
    ));
    let service_config = service_config(spec);

    // The OpenAPI document codegen writes beside this file, when there are routes.
    let openapi = spec.methods.iter().any(|m| !m.http.is_empty()).then(|| {
        let openapi_ident = ident(&format!("{}_OPENAPI", snake.to_uppercase()));
        let file = format!("{full_name}.openapi.json");
        let doc = format!(
            " The OpenAPI 3.1 document of `{full_name}`'s HTTP routes (serve it with `keel_rpc::Server::openapi`)."
        );
        quote! {
            #[doc = #doc]
            pub const #openapi_ident: &str = include_str!(#file);
        }
    });

    let tokens = quote! {
        #(#[doc = #config_doc])*
        pub const #config_ident: &str = #service_config;

        #openapi

        #(#[doc = #policy_doc])*
        pub static #policy_ident: #runtime::ServicePolicy = #runtime::ServicePolicy {
            name: #full_name,
            methods: &[#(#methods),*],
            route: #route_ident,
        };

        /// Index of the method in the policy table: a `match` on the request path, like tonic's own dispatch.
        fn #route_ident(path: &str) -> ::core::option::Option<usize> {
            match path {
                #(#arms)*
                _ => None,
            }
        }

        #wrapper

        #client_ctor
    };
    let file: syn::File = syn::parse2(tokens).expect("generated Keel code is valid Rust");
    prettyplease::unparse(&file)
}

/// The `FILE_DESCRIPTOR_SET` constant of a generated module.
pub fn descriptor_set_const(file_name: &str) -> String {
    format!(
        "\n/// The encoded `FileDescriptorSet` of the compiled protos and their imports, custom\n\
         /// options included: serve it with reflection (`keel_rpc::Server::reflection`).\n\
         pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(\"{file_name}\");\n"
    )
}

/// One route of a method as the runtime's `HttpRoute`.
fn http_route(
    route: &crate::HttpRoute,
    method: &crate::MethodSpec,
    runtime: &TokenStream,
) -> TokenStream {
    let verb_name = &route.method;
    let segments = segments(&route.path.segments, runtime);
    let option = |value: &Option<String>| match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    };
    let verb = option(&route.path.verb);
    let body = option(&route.body);
    let response_body = option(&route.response_body);
    let (input, output) = (&method.input, &method.output);
    quote!(#runtime::HttpRoute {
        method: #verb_name,
        path: &[#(#segments),*],
        verb: #verb,
        body: #body,
        response_body: #response_body,
        input: #input,
        output: #output,
        descriptors: FILE_DESCRIPTOR_SET,
    })
}

fn segments(list: &[crate::Segment], runtime: &TokenStream) -> Vec<TokenStream> {
    list.iter()
        .map(|segment| match segment {
            crate::Segment::Literal(literal) => quote!(#runtime::PathSegment::Literal(#literal)),
            crate::Segment::Single => quote!(#runtime::PathSegment::Single),
            crate::Segment::Rest => quote!(#runtime::PathSegment::Rest),
            crate::Segment::Variable { field, pattern } => {
                let pattern = segments(pattern, runtime);
                quote!(#runtime::PathSegment::Variable { field: #field, pattern: &[#(#pattern),*] })
            }
        })
        .collect()
}

/// Doc comment of a policy table: one line per method, as a reader wants it.
/// The service config of `spec`'s retry policies, as the gRPC service
/// config schema has it (`grpc/service_config/service_config.proto` in JSON).
pub fn service_config(spec: &ServiceSpec) -> String {
    let seconds = |d: std::time::Duration| format!("\"{}s\"", d.as_secs_f64());
    let configs: Vec<String> = spec
        .methods
        .iter()
        .filter_map(|m| Some((m, m.retry.as_ref()?)))
        .map(|(m, policy): (_, &RetryPolicy)| {
            let codes: Vec<String> = (policy.retryable_codes.iter())
                .map(|c| format!("\"{c}\""))
                .collect();
            format!(
                "{{\"name\":[{{\"service\":\"{}\",\"method\":\"{}\"}}],\"retryPolicy\":{{\"maxAttempts\":{},\"initialBackoff\":{},\"maxBackoff\":{},\"backoffMultiplier\":{},\"retryableStatusCodes\":[{}]}}}}",
                spec.full_name,
                m.name,
                policy.max_attempts,
                seconds(policy.initial_backoff),
                seconds(policy.max_backoff),
                policy.backoff_multiplier,
                codes.join(","),
            )
        })
        .collect();
    format!("{{\"methodConfig\":[{}]}}", configs.join(","))
}

fn policy_doc(spec: &ServiceSpec) -> String {
    let mut doc = format!(
        " Keel policy of `{}`, resolved from its annotations at build time.\n\n | method | access | labels |\n |---|---|---|\n",
        spec.full_name
    );
    for m in &spec.methods {
        let access = match &m.access {
            Access::Public => "public".to_owned(),
            Access::Token(s) if s.is_empty() => "token".to_owned(),
            Access::Token(s) => format!("token with `{}`", s.join("`, `")),
            Access::Peer { peers, scopes } if scopes.is_empty() => {
                format!("peer `{}`", peers.join("` or `"))
            }
            Access::Peer { peers, scopes } => format!(
                "peer `{}` and token with `{}`",
                peers.join("` or `"),
                scopes.join("`, `")
            ),
        };
        let labels = m
            .labels
            .iter()
            .map(|(k, v)| format!("`{k}={v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        doc.push_str(&format!(" | `{}` | {access} | {labels} |\n", m.name));
    }
    doc
}

/// An identifier, raw (`r#type`) when the name is a Rust keyword.
/// One `#[doc]` attribute per line, so the output reads as `///` comments.
fn doc_lines(doc: &str) -> Vec<String> {
    doc.lines().map(str::to_owned).collect()
}

fn ident(name: &str) -> Ident {
    if syn::parse_str::<Ident>(name).is_ok() {
        Ident::new(name, Span::call_site())
    } else {
        Ident::new_raw(name, Span::call_site())
    }
}

/// tonic-build's module naming (`UserService` → `user_service`), so the
/// generated code names tonic's modules exactly.
pub fn naive_snake_case(name: &str) -> String {
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
