//! The quick start, as a test: the auth service and the user service on
//! their embedded defaults (same development secret, issuer and audience);
//! a client logs in and calls the user service with the token.

mod common;

use std::time::Duration;

use auth_service::RefreshingTokenSource;
use auth_service::auth_v1::CreateCredentialRequest;
use common::*;
use keel::auth::TokenSource;
use keel::config::{Environment, Loader};
use tokio::net::TcpListener;
use tonic::Code;
use user_service::user_v1::user_service_client::UserServiceClient;
use user_service::user_v1::{CreateUserRequest, GetUserRequest};

/// The user service on its embedded defaults (users in memory), on an
/// ephemeral port, until the returned sender sends (or is dropped).
async fn user_service() -> (std::net::SocketAddr, tokio::sync::mpsc::Sender<()>) {
    let mut config = Loader::new()
        .environment(Environment::Development)
        .defaults_toml(user_service::DEFAULT_CONFIG)
        .development_toml(user_service::DEVELOPMENT_CONFIG)
        .load()
        .expect("user-service defaults");
    config.server.lame_duck = Duration::ZERO;
    let keel = keel::Keel::new(&config, user_service::SERVICES).expect("keel");
    let users = user_service::Users::in_memory().await.expect("store");
    let server = user_service::server(&keel, &config, users).expect("server");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::mpsc::channel(2);
    tokio::spawn(server.serve_on(
        keel::serve::Listeners {
            grpc: listener,
            metrics: None,
        },
        tokio_stream::wrappers::ReceiverStream::new(stopped),
    ));
    (addr, stop)
}

async fn get_user(
    client: &mut UserServiceClient<tonic::transport::Channel>,
    source: &dyn TokenSource,
    id: &str,
) -> Result<user_service::user_v1::User, tonic::Status> {
    let token = source.token().await.map_err(|e| e.to_status())?;
    client
        .get_user(with_token(GetUserRequest { id: id.into() }, &token))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn log_in_with_the_auth_service_and_call_the_user_service() {
    let test = TestDb::new(Db::Sqlite).await;
    let auth = Server::start(&settings(&test.config)).await;
    let (users_addr, stop_users) = user_service().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{users_addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let mut users = UserServiceClient::new(channel);

    // The bootstrap administrator has users:read and users:write.
    let admin = RefreshingTokenSource::login(auth.channel().await, ADMIN, ADMIN_PASSWORD)
        .await
        .expect("login");
    let token = admin.token().await.unwrap();
    let create = CreateUserRequest {
        name: "Ada".into(),
        email: "ada@example.com".into(),
    };
    let ada = users
        .create_user(with_token(create, &token))
        .await
        .expect("CreateUser")
        .into_inner();
    let got = get_user(&mut users, &admin, &ada.id)
        .await
        .expect("GetUser");
    assert_eq!(got.email, "ada@example.com");

    // A reader created by the administrator can read, not write.
    auth.client()
        .await
        .create_credential(with_token(
            CreateCredentialRequest {
                username: "reader".into(),
                password: "reader-password".into(),
                scopes: vec!["users:read".into()],
            },
            &token,
        ))
        .await
        .expect("CreateCredential");
    let reader = RefreshingTokenSource::login(auth.channel().await, "reader", "reader-password")
        .await
        .expect("reader login");
    assert_eq!(
        get_user(&mut users, &reader, &ada.id).await.unwrap().id,
        ada.id
    );
    let reader_token = reader.token().await.unwrap();
    let create = CreateUserRequest {
        name: "Eve".into(),
        email: "eve@example.com".into(),
    };
    let status = users
        .create_user(with_token(create, &reader_token))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::PermissionDenied, "missing scope users:write")
    );
    // Without a token: the user service's own answer.
    let status = users
        .get_user(GetUserRequest { id: ada.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let _ = stop_users.send(()).await;
    auth.stop().await;
}

/// The generated Keel client of the user service, with the token source:
/// every call gets `authorization: Bearer` from it, no code per call.
#[tokio::test]
async fn the_generated_client_takes_its_token_from_the_refreshing_source() {
    let test = TestDb::new(Db::Sqlite).await;
    let auth = Server::start(&settings(&test.config)).await;
    let (users_addr, stop_users) = user_service().await;

    let config = Loader::new()
        .environment(Environment::Development)
        .defaults_toml(user_service::DEFAULT_CONFIG)
        .development_toml(user_service::DEVELOPMENT_CONFIG)
        .load()
        .expect("defaults");
    let metrics = keel::Metrics::new(&[]).expect("metrics");
    let source = RefreshingTokenSource::new(auth.channel().await, ADMIN, ADMIN_PASSWORD);
    let client = keel::client::Client::new(&config, metrics.registry())
        .expect("client")
        .with_token_source(source);
    let mut users =
        user_service::user_v1::user_service_client(format!("http://{users_addr}"), &client)
            .expect("generated client");
    let ada = users
        .create_user(CreateUserRequest {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        })
        .await
        .expect("CreateUser with the source's token")
        .into_inner();
    let got = users
        .get_user(GetUserRequest { id: ada.id.clone() })
        .await
        .expect("GetUser")
        .into_inner();
    assert_eq!(got.email, "ada@example.com");

    // Wrong credentials: the call fails UNAUTHENTICATED before leaving.
    let other_metrics = keel::Metrics::new(&[]).expect("metrics");
    let refused = keel::client::Client::new(&config, other_metrics.registry())
        .expect("client")
        .with_token_source(RefreshingTokenSource::new(
            auth.channel().await,
            ADMIN,
            "wrong-password",
        ));
    let mut users =
        user_service::user_v1::user_service_client(format!("http://{users_addr}"), &refused)
            .expect("generated client");
    let status = users
        .get_user(GetUserRequest { id: ada.id })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("invalid username or password"),
        "{}",
        status.message()
    );

    let _ = stop_users.send(()).await;
    auth.stop().await;
}
