//! Deadlines: the caller's, a method's own timeout and cap, and how calls
//! that end on them (or are cancelled) are counted.

use std::time::{Duration, Instant};

use tonic::{Code, Response};
use user_service::user_v1;
use user_service::user_v1::*;

use crate::common::*;
use crate::support::*;

#[tokio::test]
async fn a_call_past_its_deadline_is_counted_deadline_exceeded_and_a_cancelled_one_canceled() {
    let mut config = config();
    config.server.lame_duck = Duration::ZERO;
    let server = start(config).await;
    let ch = channel(server.addr).await;
    let count = |code: &str| {
        let text = server.keel.metrics().render();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("grpc_server_handled_total")
                    && l.contains(&format!("grpc_code=\"{code}\""))
                    && l.contains("\"GetUser\"")
            })
            .map(str::to_owned);
        line.and_then(|l| l.rsplit(' ').next().map(str::to_owned))
            .unwrap_or_default()
    };
    let ended = |code: &'static str| {
        let count = &count;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while count(code) != "1" {
                assert!(Instant::now() < deadline, "{code}: {}", count(code));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // The handler sleeps 2 s; the caller's deadline is 100 ms.
    let mut request = with_token(
        GetUserRequest {
            id: "sleep-2000".into(),
        },
        &reader(),
    );
    request.set_timeout(Duration::from_millis(100));
    let mut client = user_v1::user_service_client::UserServiceClient::new(ch.clone());
    let status = client.get_user(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    ended("DeadlineExceeded").await;
    assert_eq!(count("Canceled"), "0");

    // The generated client answers and counts it DEADLINE_EXCEEDED, whichever
    // gives up first: its own timer, or tonic's channel enforcing the same
    // `grpc-timeout` (a transport error), or the server (CANCELLED).
    let keel_client = keel_rpc::client::Client::from_parts(
        Duration::from_millis(100),
        keel_rpc::metrics::ClientMetrics::new(server.keel.metrics().registry()).unwrap(),
    );
    let mut generated = user_v1::connect_user_service(ch.clone(), &keel_client).unwrap();
    let status = generated
        .get_user(with_token(
            GetUserRequest {
                id: "sleep-2000".into(),
            },
            &reader(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let text = server.keel.metrics().render();
    let handled = |code: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("grpc_client_handled_total")
                    && l.contains(&format!("grpc_code=\"{code}\""))
                    && l.contains("\"GetUser\"")
            })
            .and_then(|l| l.rsplit(' ').next().map(str::to_owned))
            .unwrap_or_default()
    };
    assert_eq!(handled("DeadlineExceeded"), "1", "{text}");
    assert_eq!(handled("Canceled"), "0", "{text}");

    // A caller that gives up without a deadline: Canceled.
    let call = tokio::spawn(get(ch.clone(), "sleep-2000".into()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.abort();
    ended("Canceled").await;
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_methods_own_timeout_and_cap_apply_over_the_wire() {
    let server = start(timings(0, 1000)).await;
    let mut client =
        user_v1::user_service_client::UserServiceClient::new(channel(server.addr).await);
    let list = |page_token: &str, timeout: Option<Duration>| {
        let mut request = with_token(
            ListUsersRequest {
                page_size: 0,
                page_token: page_token.into(),
            },
            &reader(),
        );
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    };
    // ListUsers: timeout 2 s, max_timeout 30 s (user.proto).
    let left = |reply: Response<ListUsersResponse>| -> u128 {
        let token = reply.into_inner().next_page_token;
        let ms = token
            .strip_prefix("Some(")
            .and_then(|t| t.strip_suffix(')'));
        ms.and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("no deadline: {token}"))
    };
    let asked_long = client
        .list_users(list("remaining", Some(Duration::from_secs(120))))
        .await;
    let ms = left(asked_long.unwrap());
    assert!(
        (25_000..=30_000).contains(&ms),
        "120 s asked, capped at 30 s: {ms} ms left"
    );
    let ms = left(client.list_users(list("remaining", None)).await.unwrap());
    assert!(
        (1_000..=2_000).contains(&ms),
        "no deadline asked: the 2 s default, {ms} ms left"
    );
    let started = Instant::now();
    let status = client
        .list_users(list("sleep-5000", None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1_900) && elapsed < Duration::from_millis(4_000),
        "{elapsed:?}"
    );
    let metrics = server.keel.metrics().render();
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "grpc_server_handled_total{grpc_code=\"DeadlineExceeded\",grpc_method=\"ListUsers\""
        ) && l.ends_with(" 1")),
        "{metrics}"
    );
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}
