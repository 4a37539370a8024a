//! The generated client's retries.

use jsonwebtoken::Algorithm;
use tonic::Code;
use user_service::user_v1;
use user_service::user_v1::*;

use crate::common::*;
use crate::support::*;

#[tokio::test]
async fn the_generated_client_retries_an_idempotent_method_and_not_the_others() {
    let server = start(timings(0, 1000)).await;
    let client = keel_rpc::client::Client::new(&config(), server.keel.metrics().registry())
        .unwrap()
        .with_token_source(keel_rpc::auth::StaticToken::new(sign_hs(
            Algorithm::HS256,
            &claims("users:read users:write"),
        )));
    let mut users =
        user_v1::connect_user_service(format!("http://{}", server.addr), &client).unwrap();
    // GetUser has `idempotency_level = NO_SIDE_EFFECTS` (user.proto): 3
    // attempts on UNAVAILABLE. Two fail; the third reaches the handler.
    let status = users
        .get_user(GetUserRequest {
            id: "flaky-2-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // Three failures are more than its attempts.
    let status = users
        .get_user(GetUserRequest {
            id: "flaky-3-b".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // CreateUser is not idempotent: not retried.
    let status = users
        .create_user(CreateUserRequest {
            name: "flaky-1-c".into(),
            email: "c@example.com".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let text = server.keel.metrics().render();
    for line in [
        r#"keel_client_retries_total{grpc_method="GetUser",grpc_service="user.v1.UserService"} 4"#,
        r#"grpc_server_handled_total{grpc_code="Unavailable",grpc_method="GetUser",grpc_service="user.v1.UserService",grpc_type="unary",protocol="grpc",team="identity",tier="critical"} 5"#,
        r#"grpc_server_handled_total{grpc_code="Unavailable",grpc_method="CreateUser",grpc_service="user.v1.UserService",grpc_type="unary",protocol="grpc",team="identity",tier="critical"} 1"#,
        r#"grpc_client_handled_total{grpc_code="Unavailable",grpc_method="GetUser",grpc_service="user.v1.UserService",grpc_type="unary"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(!text.contains(r#"keel_client_retries_total{grpc_method="CreateUser""#));
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}
