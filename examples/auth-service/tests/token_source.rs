//! `RefreshingTokenSource` against a real auth service (SQLite store): one
//! login, refresh before expiry, a new login when the session is gone.

mod common;

use std::sync::Arc;
use std::time::Duration;

use auth_service::RefreshingTokenSource;
use auth_service::auth_v1::{RevokeAllRequest, ValidateRequest};
use common::*;
use keel_rpc::auth::TokenSource;
use keel_rpc::store::sqlx;

/// Sessions (logins) recorded in the store.
async fn sessions(server: &Server) -> i64 {
    keel_rpc::with_store!(server.app.handler.store().store(), pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM refresh_families")
            .fetch_one(pool)
            .await
            .expect("count")
    })
}

async fn session_of(server: &Server, token: &str) -> String {
    let reply = server
        .client()
        .await
        .validate(ValidateRequest {
            access_token: token.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.valid, "{}", reply.reason);
    reply.session_id
}

#[tokio::test]
async fn logs_in_once_for_concurrent_callers_and_reuses_the_token() {
    let test = TestDb::new(Db::Sqlite).await;
    let server = Server::start(&settings(&test.config)).await;
    let source = Arc::new(RefreshingTokenSource::new(
        server.channel().await,
        ADMIN,
        ADMIN_PASSWORD,
    ));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move { source.token().await })
        })
        .collect();
    let mut tokens = Vec::new();
    for call in calls {
        tokens.push(call.await.unwrap().expect("a token").to_string());
    }
    assert!(tokens.iter().all(|t| *t == tokens[0]), "one token for all");
    assert_eq!(sessions(&server).await, 1, "one login");
    let again = source.token().await.unwrap();
    assert_eq!(&*again, tokens[0]);
    server.stop().await;
}

#[tokio::test]
async fn invalidated_tokens_are_refreshed_in_the_same_session() {
    let test = TestDb::new(Db::Sqlite).await;
    let server = Server::start(&settings(&test.config)).await;
    let source = RefreshingTokenSource::login(server.channel().await, ADMIN, ADMIN_PASSWORD)
        .await
        .expect("login");
    let first = source.token().await.unwrap();
    source.invalidate();
    let second = source.token().await.unwrap();
    assert_ne!(first.as_ref(), second.as_ref());
    assert_eq!(
        session_of(&server, first.as_ref()).await,
        session_of(&server, second.as_ref()).await
    );
    assert_eq!(sessions(&server).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    let test = TestDb::new(Db::Sqlite).await;
    // 10 s access tokens: refreshed when less than a quarter (2.5 s) is left.
    let server = Server::start(&settings_with(
        &test.config,
        "[tokens]\naccess_ttl = \"10s\"\n",
    ))
    .await;
    let source = RefreshingTokenSource::login(server.channel().await, ADMIN, ADMIN_PASSWORD)
        .await
        .expect("login");
    let first = source.token().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(source.token().await.unwrap().as_ref(), first.as_ref());
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let second = source.token().await.unwrap();
    assert_ne!(
        second.as_ref(),
        first.as_ref(),
        "refreshed 2.5 s before expiry"
    );
    assert_eq!(
        session_of(&server, first.as_ref()).await,
        session_of(&server, second.as_ref()).await
    );
    assert_eq!(sessions(&server).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_session_means_a_new_login() {
    let test = TestDb::new(Db::Sqlite).await;
    let server = Server::start(&settings(&test.config)).await;
    let source = RefreshingTokenSource::login(server.channel().await, ADMIN, ADMIN_PASSWORD)
        .await
        .expect("login");
    let first = source.token().await.unwrap();
    let first_session = session_of(&server, first.as_ref()).await;
    server
        .client()
        .await
        .revoke_all(with_token(RevokeAllRequest::default(), first.as_ref()))
        .await
        .unwrap();
    // A server refused the token: the source refreshes, is refused, logs in.
    source.invalidate();
    let second = source.token().await.unwrap();
    let second_session = session_of(&server, second.as_ref()).await;
    assert_ne!(first_session, second_session);
    assert_eq!(sessions(&server).await, 2);
    server.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_rejected_and_a_dead_service_is_unavailable() {
    let test = TestDb::new(Db::Sqlite).await;
    let server = Server::start(&settings(&test.config)).await;
    let error = RefreshingTokenSource::login(server.channel().await, ADMIN, "wrong-password")
        .await
        .unwrap_err();
    assert!(!error.is_unavailable());
    let status = error.to_status();
    assert_eq!(
        (status.code(), status.message()),
        (
            tonic::Code::Unauthenticated,
            "no access token: invalid username or password"
        )
    );
    server.stop().await;

    // Nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let error = RefreshingTokenSource::new(channel, ADMIN, ADMIN_PASSWORD)
        .token()
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!(error.to_status().code(), tonic::Code::Unavailable);
}
