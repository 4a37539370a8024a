//! The gRPC service config of a service (`USER_SERVICE_CONFIG`):
//! its methods' retry policies as JSON, for clients in other languages,
//! with the retry budget Keel's own clients keep by default.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Names, doc_lines, ident};
use crate::spec::{RetryPolicy, ServiceSpec};

/// `retryThrottling` as `[client.retry_budget]`'s defaults have it (a test
/// of the user-service example holds them equal).
const RETRY_THROTTLING: &str = "\"retryThrottling\":{\"maxTokens\":100,\"tokenRatio\":0.1}";

/// The `…_SERVICE_CONFIG` constant of a service: `USER_SERVICE_CONFIG` for
/// `UserService` (not `USER_SERVICE_SERVICE_CONFIG`), `TICKER_SERVICE_CONFIG`
/// for `Ticker`.
pub(super) fn constant(spec: &ServiceSpec, names: &Names<'_>) -> TokenStream {
    let (snake, full_name, policy_ident) = (&names.snake, names.full_name, &names.policy);
    let service = snake.strip_suffix("_service").unwrap_or(snake);
    let config_ident = ident(&format!("{}_SERVICE_CONFIG", service.to_uppercase()));
    let config_doc = doc_lines(&format!(
        " The gRPC service config (JSON) of `{full_name}`: the retry policies of [`{policy_ident}`],
 for clients in other languages (`grpc.WithDefaultServiceConfig` in Go, …)."
    ));
    let service_config = service_config(spec);
    quote! {
        #(#[doc = #config_doc])*
        pub const #config_ident: &str = #service_config;
    }
}

/// The service config of `spec`'s retry policies, as the gRPC service
/// config schema has it (`grpc/service_config/service_config.proto` in JSON).
fn service_config(spec: &ServiceSpec) -> String {
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
    match configs.is_empty() {
        true => "{\"methodConfig\":[]}".to_owned(),
        false => format!(
            "{{\"methodConfig\":[{}],{RETRY_THROTTLING}}}",
            configs.join(",")
        ),
    }
}
