//! A service's policy table (`USER_SERVICE_POLICY`): per method its path,
//! streaming kind, access rule, labels, deadline rules, limits, retry
//! policy, own options and HTTP routes, as the runtime's `ServicePolicy`,
//! with its `route` function.

use proc_macro2::{Ident, TokenStream};
use quote::quote;

use heck::ToUpperCamelCase;

use super::{Names, doc_lines, ident};
use crate::spec::{Access, MethodSpec, RateKey, ServiceSpec};

/// The policy table of a service and its route function.
pub(super) fn table(spec: &ServiceSpec, names: &Names<'_>, runtime: &TokenStream) -> TokenStream {
    let route_ident = ident(&format!("{}_route", names.snake));
    let table = policy_static(spec, &names.policy, &route_ident, runtime);
    let route = route_fn(spec, &route_ident);
    quote! {
        #table

        #route
    }
}

/// The `static` policy table of a service.
fn policy_static(
    spec: &ServiceSpec,
    policy_ident: &Ident,
    route_ident: &Ident,
    runtime: &TokenStream,
) -> TokenStream {
    let methods = spec.methods.iter().map(|m| method(spec, m, runtime));
    let full_name = &spec.full_name;
    let policy_doc = doc_lines(&policy_doc(spec));
    quote! {
        #(#[doc = #policy_doc])*
        pub static #policy_ident: #runtime::codegen::ServicePolicy = #runtime::codegen::ServicePolicy {
            name: #full_name,
            methods: &[#(#methods),*],
            route: #route_ident,
        };
    }
}

/// The route function of a policy table: the index of a request path's method.
fn route_fn(spec: &ServiceSpec, route_ident: &Ident) -> TokenStream {
    let arms = spec.methods.iter().enumerate().map(|(i, m)| {
        let path = format!("/{}/{}", spec.full_name, m.name);
        let i = proc_macro2::Literal::usize_unsuffixed(i);
        quote!(#path => Some(#i),)
    });
    quote! {
        /// Index of the method in the policy table: a `match` on the request path, like tonic's own dispatch.
        fn #route_ident(path: &str) -> ::core::option::Option<usize> {
            match path {
                #(#arms)*
                _ => None,
            }
        }
    }
}

/// One method's entry of the policy table, as the runtime's `MethodPolicy`.
fn method(spec: &ServiceSpec, m: &MethodSpec, runtime: &TokenStream) -> TokenStream {
    let name = &m.name;
    let path = format!("/{}/{}", spec.full_name, m.name);
    let kind = ident(match (m.client_streaming, m.server_streaming) {
        (false, false) => "Unary",
        (true, false) => "ClientStreaming",
        (false, true) => "ServerStreaming",
        (true, true) => "BidiStreaming",
    });
    let access = match &m.access {
        Access::Public => quote!(#runtime::codegen::Access::Public),
        Access::Token(scopes) => {
            quote!(#runtime::codegen::Access::Token { scopes: &[#(#scopes),*] })
        }
        Access::Peer { peers, scopes } if scopes.is_empty() => {
            quote!(#runtime::codegen::Access::Peer { peers: &[#(#peers),*], scopes: None })
        }
        Access::Peer { peers, scopes } => quote!(#runtime::codegen::Access::Peer {
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
                RateKey::Global => quote!(#runtime::codegen::RateKey::Global),
                RateKey::Peer => quote!(#runtime::codegen::RateKey::Peer),
                RateKey::Subject => quote!(#runtime::codegen::RateKey::Subject),
                RateKey::Claim(name) => quote!(#runtime::codegen::RateKey::Claim(#name)),
            };
            quote!(::core::option::Option::Some(#runtime::codegen::RateLimit {
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
            quote!(::core::option::Option::Some(#runtime::codegen::RetryPolicy {
                max_attempts: #max_attempts,
                initial_backoff: #initial_backoff,
                max_backoff: #max_backoff,
                backoff_multiplier: #multiplier,
                retryable_codes: &[#(::tonic::Code::#codes),*],
            }))
        }
        None => quote!(::core::option::Option::None),
    };
    let stream = match m.stream == Default::default() {
        true => quote!(#runtime::codegen::StreamLimits::NONE),
        false => {
            let max_duration = duration(m.stream.max_duration);
            let idle_timeout = duration(m.stream.idle_timeout);
            let max_messages = match m.stream.max_messages {
                Some(n) => quote!(::core::option::Option::Some(#n)),
                None => quote!(::core::option::Option::None),
            };
            quote!(#runtime::codegen::StreamLimits {
                max_duration: #max_duration,
                idle_timeout: #idle_timeout,
                max_messages: #max_messages,
            })
        }
    };
    let criticality = ident(&m.criticality.as_str().to_upper_camel_case());
    let http = m.http.iter().map(|route| http_route(route, m, runtime));
    let options = m.options.iter().map(|(name, value)| {
        let value = proc_macro2::Literal::byte_string(value);
        quote!((#name, #value))
    });
    quote! {
        #runtime::codegen::MethodPolicy {
            name: #name,
            path: #path,
            kind: #runtime::codegen::MethodKind::#kind,
            access: #access,
            labels: &[#(#labels),*],
            timeout: #timeout,
            max_timeout: #max_timeout,
            max_concurrency: #max_concurrency,
            rate_limit: #rate_limit,
            retry: #retry,
            criticality: #runtime::codegen::Criticality::#criticality,
            stream: #stream,
            options: &[#(#options),*],
            http: &[#(#http),*],
        }
    }
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
    quote!(#runtime::codegen::HttpRoute {
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
            crate::Segment::Literal(literal) => quote!(#runtime::codegen::PathSegment::Literal(#literal)),
            crate::Segment::Single => quote!(#runtime::codegen::PathSegment::Single),
            crate::Segment::Rest => quote!(#runtime::codegen::PathSegment::Rest),
            crate::Segment::Variable { field, pattern } => {
                let pattern = segments(pattern, runtime);
                quote!(#runtime::codegen::PathSegment::Variable { field: #field, pattern: &[#(#pattern),*] })
            }
        })
        .collect()
}

/// Doc comment of a policy table: one line per method, as a reader wants it.
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
