//! What several of the runtime's tests share.

use std::time::Duration;

use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, RetryPolicy, ServicePolicy};

/// `Check` as an idempotent method: 3 attempts on `UNAVAILABLE`.
pub(crate) static HEALTH: ServicePolicy = ServicePolicy {
    name: "grpc.health.v1.Health",
    methods: &[MethodPolicy {
        retry: Some(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            backoff_multiplier: 2.0,
            retryable_codes: &[tonic::Code::Unavailable],
        }),
        ..MethodPolicy::new(
            "Check",
            "/grpc.health.v1.Health/Check",
            MethodKind::Unary,
            Access::Public,
        )
    }],
    route: |path| match path {
        "/grpc.health.v1.Health/Check" => Some(0),
        _ => None,
    },
};
