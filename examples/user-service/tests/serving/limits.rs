//! Limits on calls: message size, `max_concurrency` and rate limits.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use tonic::{Code, Status};
use user_service::user_v1;
use user_service::user_v1::*;

use crate::common::*;
use crate::support::*;

#[tokio::test]
async fn oversized_messages_get_resource_exhausted() {
    let mut config = timings(0, 1000);
    config.server.max_message_bytes = 64 * 1024;
    let server = start(config).await;
    let mut client =
        user_v1::user_service_client::UserServiceClient::new(channel(server.addr).await);
    let writer = sign_hs(Algorithm::HS256, &claims("users:write"));
    let big = CreateUserRequest {
        name: "x".repeat(100 * 1024),
        email: "big@example.com".into(),
    };
    let status = client
        .create_user(with_token(big, &writer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("exceeds the limit of 65536 bytes"),
        "{status:?}"
    );
    let small = CreateUserRequest {
        name: "small".into(),
        email: "small@example.com".into(),
    };
    assert!(client.create_user(with_token(small, &writer)).await.is_ok());
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn imports_over_max_concurrency_are_refused_over_the_wire() {
    let server = start(timings(0, 1000)).await;
    let ch = channel(server.addr).await;
    let writer = sign_hs(Algorithm::HS256, &claims("users:write"));
    // ImportUsers: max_concurrency 4 (user.proto). Four imports stay open…
    let mut open = Vec::new();
    for _ in 0..4 {
        let (tx, rx) = tokio::sync::mpsc::channel::<CreateUserRequest>(1);
        let mut client = user_v1::user_service_client::UserServiceClient::new(ch.clone());
        let request = with_token(tokio_stream::wrappers::ReceiverStream::new(rx), &writer);
        let call = tokio::spawn(async move { client.import_users(request).await });
        open.push((tx, call));
    }
    // …until the server has them all (the fifth of a burst could race them).
    let in_flight = || {
        let text = server.keel.metrics().render();
        let count = |prefix: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(prefix) && l.contains("\"ImportUsers\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        count("grpc_server_started_total") - count("grpc_server_handled_total")
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight() < 4 {
        assert!(Instant::now() < deadline, "four imports never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let import = |users: Vec<CreateUserRequest>| {
        let mut client = user_v1::user_service_client::UserServiceClient::new(ch.clone());
        let request = with_token(tokio_stream::iter(users), &writer);
        async move { client.import_users(request).await }
    };
    let fifth = import(Vec::new()).await.unwrap_err();
    assert_eq!(fifth.code(), Code::ResourceExhausted, "{fifth:?}");
    assert!(
        fifth.message().contains("max_concurrency of 4"),
        "{fifth:?}"
    );
    // One ends: its slot is free again.
    let (tx, call) = open.pop().unwrap();
    drop(tx);
    call.await.unwrap().unwrap();
    import(Vec::new()).await.expect("a slot came back");
    for (tx, call) in open {
        drop(tx);
        call.await.unwrap().unwrap();
    }
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn creating_users_over_the_rate_limit_is_refused_per_caller_with_when_to_retry() {
    use tonic_types::StatusExt;
    let server = start(timings(0, 1000)).await;
    let ch = channel(server.addr).await;
    let token_of = |sub: &str| {
        let mut claims = claims("users:write");
        claims["sub"] = sub.into();
        sign_hs(Algorithm::HS256, &claims)
    };
    let create = |token: String, i: usize| {
        let mut client = user_v1::user_service_client::UserServiceClient::new(ch.clone());
        async move {
            let user = CreateUserRequest {
                name: format!("user {i}"),
                email: format!("u{i}@example.com"),
            };
            client.create_user(with_token(user, &token)).await
        }
    };
    // CreateUser: 20 a second, bursts of 40, per token subject (user.proto).
    // 60 at once from alice: at least the burst passes, and most of the rest
    // (the bucket refills by one every 50 ms) are refused before the handler.
    let alice = token_of("alice");
    let calls = (0..60).map(|i| create(alice.clone(), i));
    let results = futures_util::future::join_all(calls).await;
    let refused: Vec<&Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let passed = results.len() - refused.len();
    assert!((40..55).contains(&passed), "{passed} passed: {refused:?}");
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let delay = (status.get_details_retry_info())
            .and_then(|retry| retry.retry_delay)
            .expect("a RetryInfo detail with a delay");
        assert!(delay <= Duration::from_millis(50), "{delay:?}");
    }
    // Another caller has a bucket of their own.
    create(token_of("bob"), 100)
        .await
        .expect("bob is not limited by alice");
    // After the delay, alice may create one more.
    tokio::time::sleep(Duration::from_millis(60)).await;
    create(alice, 101)
        .await
        .expect("a share of alice's bucket is back");

    let text = server.keel.metrics().render();
    let line = format!(
        r#"keel_server_rate_limited_total{{grpc_method="CreateUser",grpc_service="user.v1.UserService"}} {}"#,
        refused.len()
    );
    assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}
