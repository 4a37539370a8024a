//! The generated gRPC service config, which clients in other languages
//! load (`grpc.WithDefaultServiceConfig`): its retry policies are the
//! policy table's, and its retry budget is the one Keel's own clients keep
//! by default, so a Go caller adds no more retries to an outage than a
//! Rust one.

use keel_rpc::config::Config;
use user_service::user_v1::{USER_SERVICE_CONFIG, USER_SERVICE_POLICY};

#[test]
fn the_service_config_has_the_policies_and_keels_retry_budget() {
    let config: serde_json::Value =
        serde_json::from_str(USER_SERVICE_CONFIG).expect("the service config is JSON");
    let budget = Config::<()>::default().client.retry_budget;
    assert_eq!(
        config["retryThrottling"],
        serde_json::json!({
            "maxTokens": budget.max_tokens,
            "tokenRatio": budget.token_ratio,
        })
    );
    let retried: Vec<_> = (USER_SERVICE_POLICY.methods.iter())
        .filter_map(|m| Some((m.name, m.retry.as_ref()?.max_attempts)))
        .collect();
    let configured: Vec<_> = (config["methodConfig"].as_array().expect("methodConfig"))
        .iter()
        .map(|c| {
            (
                c["name"][0]["method"].as_str().expect("a method name"),
                c["retryPolicy"]["maxAttempts"]
                    .as_u64()
                    .expect("maxAttempts") as u32,
            )
        })
        .collect();
    assert!(!retried.is_empty());
    assert_eq!(configured, retried);
}
