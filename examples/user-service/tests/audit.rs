//! A layer of the service's own inside Keel's pipeline, driven by an option
//! of its own proto: `(user.v1.audit)` methods are recorded with who called
//! them and how the call ended (a call validation refused is recorded as
//! refused, not as done), the others not at all.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use tonic::Code;
use user_service::user_v1::{CreateUserRequest, GetUserRequest};
use user_service::{AuditEntry, AuditLog, Users};

#[tokio::test]
async fn audited_methods_are_recorded_with_their_caller_and_others_are_not() {
    let audit = AuditLog::default();
    let users = Users::in_memory().await.unwrap();
    let server = Server::start_audited(config(), users, audit.clone()).await;
    let mut client = server.client().await;
    let writer = sign_hs(Algorithm::HS256, &claims("users:write users:read"));

    let created = client
        .create_user(with_token(
            CreateUserRequest {
                name: "Ada".into(),
                email: "ada@example.com".into(),
            },
            &writer,
        ))
        .await
        .unwrap()
        .into_inner();
    // Not audited: GetUser has no `(user.v1.audit)`.
    client
        .get_user(with_token(GetUserRequest { id: created.id }, &writer))
        .await
        .unwrap();
    // Refused by validation, after the layer: recorded as refused.
    let invalid = client
        .create_user(with_token(
            CreateUserRequest {
                name: "Mallory".into(),
                email: "not an address".into(),
            },
            &writer,
        ))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    // Refused by auth, before any layer of the service's: not audited.
    let refused = client
        .create_user(tonic::Request::new(CreateUserRequest {
            name: "Eve".into(),
            email: "eve@example.com".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let imported = tokio_stream::iter(vec![CreateUserRequest {
        name: "Grace".into(),
        email: "grace@example.com".into(),
    }]);
    client
        .import_users(with_token(imported, &writer))
        .await
        .unwrap();

    assert_eq!(
        audit.entries(),
        [
            AuditEntry {
                action: "user.create".into(),
                method: "/user.v1.UserService/CreateUser",
                subject: Some("alice".into()),
                outcome: "OK",
            },
            AuditEntry {
                action: "user.create".into(),
                method: "/user.v1.UserService/CreateUser",
                subject: Some("alice".into()),
                outcome: "INVALID_ARGUMENT",
            },
            AuditEntry {
                action: "user.import".into(),
                method: "/user.v1.UserService/ImportUsers",
                subject: Some("alice".into()),
                outcome: "OK",
            },
        ]
    );
    server.stop().await;
}
