//! The request rules of user.proto.

use jsonwebtoken::Algorithm;
use tonic::Code;
use user_service::user_v1::*;

use crate::common;
use crate::common::*;

#[tokio::test]
async fn requests_breaking_user_proto_rules_are_refused_before_the_handler() {
    use tonic_types::StatusExt;
    let server = common::Server::start(common::config()).await;
    let mut client = server.client().await;
    let writer = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let created_before = client
        .list_users(with_token(ListUsersRequest::default(), &writer))
        .await
        .unwrap()
        .into_inner()
        .users
        .len();

    let status = client
        .create_user(with_token(
            CreateUserRequest {
                name: "   ".into(),
                email: "not an email".into(),
            },
            &writer,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations: Vec<(String, String)> = status
        .get_details_bad_request()
        .expect("a BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.reason))
        .collect();
    assert_eq!(
        violations,
        [("name", "name.not_blank"), ("email", "string.email")]
            .map(|(f, r)| (f.to_owned(), r.to_owned()))
    );
    let status = client
        .get_user(with_token(GetUserRequest { id: String::new() }, &writer))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "id: must be at least 1 character")
    );
    let status = client
        .list_users(with_token(
            ListUsersRequest {
                page_size: -1,
                page_token: String::new(),
            },
            &writer,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::InvalidArgument,
            "page_size: must be greater than or equal to 0"
        )
    );
    // A name with spaces around is fine, and stored trimmed; nothing else was.
    let user = client
        .create_user(with_token(
            CreateUserRequest {
                name: "  Ada ".into(),
                email: "ada@localhost".into(),
            },
            &writer,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.name, "Ada");
    let users = client
        .list_users(with_token(ListUsersRequest::default(), &writer))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(users.len(), created_before + 1);
    server.stop().await;
}
