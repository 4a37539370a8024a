//! The quick start, as a test: the auth service and the user service on
//! their embedded defaults (same development secret, issuer and audience);
//! a client logs in and calls the user service with the token.

mod common;

use std::time::Duration;

use auth_service::RefreshingTokenSource;
use auth_service::auth_v1::CreateCredentialRequest;
use common::*;
use keel_rpc::auth::TokenSource;
use keel_rpc::config::{Environment, Loader};
use tokio::net::TcpListener;
use tonic::Code;
use user_service::user_v1::user_service_client::UserServiceClient;
use user_service::user_v1::{CreateUserRequest, GetUserRequest};

/// The user service on its embedded defaults (users in memory), on an
/// ephemeral port, until the returned sender sends (or is dropped).
async fn user_service() -> (std::net::SocketAddr, tokio::sync::mpsc::Sender<()>) {
    let (addr, stop, _) = user_service_with("").await;
    (addr, stop)
}

/// [`user_service`] with `toml` layered over its development defaults; also
/// returns its runtime.
async fn user_service_with(
    toml: &str,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Sender<()>,
    keel_rpc::Keel,
) {
    let mut config = Loader::new()
        .environment(Environment::Development)
        .defaults_toml(user_service::DEFAULT_CONFIG)
        .development_toml(user_service::DEVELOPMENT_CONFIG)
        .development_toml(toml)
        .load()
        .expect("user-service defaults");
    config.server.lame_duck = Duration::ZERO;
    let keel = keel_rpc::Keel::new(&config, user_service::SERVICES).expect("keel");
    let users = user_service::Users::in_memory().await.expect("store");
    let server = user_service::server(&keel, &config, users).expect("server");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::mpsc::channel(2);
    tokio::spawn(server.serve_on(
        keel_rpc::serve::Listeners {
            grpc: listener,
            metrics: None,
        },
        tokio_stream::wrappers::ReceiverStream::new(stopped),
    ));
    (addr, stop, keel)
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
    let metrics = keel_rpc::Metrics::new(&[]).expect("metrics");
    let source = RefreshingTokenSource::new(auth.channel().await, ADMIN, ADMIN_PASSWORD);
    let client = keel_rpc::client::Client::new(&config, metrics.registry())
        .expect("client")
        .with_token_source(source);
    let mut users =
        user_service::user_v1::connect_user_service(format!("http://{users_addr}"), &client)
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
    let other_metrics = keel_rpc::Metrics::new(&[]).expect("metrics");
    let refused = keel_rpc::client::Client::new(&config, other_metrics.registry())
        .expect("client")
        .with_token_source(RefreshingTokenSource::new(
            auth.channel().await,
            ADMIN,
            "wrong-password",
        ));
    let mut users =
        user_service::user_v1::connect_user_service(format!("http://{users_addr}"), &refused)
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

#[tokio::test]
async fn a_running_user_service_follows_the_auth_service_s_key_rotation_through_its_jwks_url() {
    let test = TestDb::new(Db::Sqlite).await;
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../user-service/tests/fixtures"
    );
    let keys = |keys: &[(&str, &str, &str)], signing: &str| {
        let entries: Vec<String> = keys
            .iter()
            .map(|(kid, alg, file)| {
                format!(
                    r#"{{ kid = "{kid}", algorithm = "{alg}", private_key_file = "{fixtures}/{file}" }}"#
                )
            })
            .collect();
        let toml = format!(
            "[auth]\nkeys = [{}]\n[tokens]\nsigning_kid = \"{signing}\"\n",
            entries.join(", ")
        );
        settings_with(&test.config, &toml)
    };
    const EC: (&str, &str, &str) = ("ec-1", "ES256", "ec_private.pem");
    const ED: (&str, &str, &str) = ("ed-2", "EdDSA", "ed_private.pem");
    // The auth service's HTTP port stays the same across its restarts.
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let auth = Server::start_with_http(&keys(&[EC], "ec-1"), Some(http)).await;

    let jwks_url = format!("http://{http_addr}{}", auth_service::JWKS_PATH);
    let (users_addr, stop_users, users_keel) = user_service_with(&format!(
        "[auth]\njwks_url = \"{jwks_url}\"\njwks_min_refresh = \"50ms\"\n"
    ))
    .await;
    let users = UserServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{users_addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let call = |token: String| {
        let mut users = users.clone();
        async move {
            users
                .get_user(with_token(GetUserRequest { id: "u-404".into() }, &token))
                .await
                .map(drop)
                .unwrap_err()
        }
    };
    let old = auth.login(ADMIN, ADMIN_PASSWORD).await.access_token;
    assert_eq!(
        call(old.clone()).await.code(),
        Code::NotFound,
        "ec-1 verifies"
    );
    // jwks_url replaced the development secret: its tokens are refused.
    let hs = keel_rpc::auth::mint_access_token(
        &keel_rpc::config::AuthConfig {
            hmac_secret: Some(keel_rpc::config::Secret::new(auth_service::DEV_SECRET)),
            issuer: Some("keel-dev".into()),
            audience: Some("keel-examples".into()),
            ..Default::default()
        },
        ADMIN,
        &["users:read"],
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(call(hs).await.code(), Code::Unauthenticated);

    // The auth service is down: a refresh (asked for by an unknown kid)
    // fails, is counted, and the keys in use stay.
    auth.stop().await;
    let refreshes = |result: &str| {
        let families = users_keel.metrics().registry().gather();
        let family = families
            .iter()
            .find(|f| f.name() == "keel_jwks_refreshes_total")
            .expect("the refresh counter");
        let metric = family
            .get_metric()
            .iter()
            .find(|m| m.get_label()[0].value() == result);
        metric.map_or(0.0, |m| m.get_counter().get_value())
    };
    assert_eq!(
        (refreshes("ok"), refreshes("error")),
        (1.0, 0.0),
        "the startup fetch"
    );
    let _ = call(forged_kid(&old)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refreshes("error") < 1.0 {
        assert!(std::time::Instant::now() < deadline, "no refresh was tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        call(old.clone()).await.code(),
        Code::NotFound,
        "the last good keys stay"
    );

    // Rotation: ed-2 is published beside ec-1 and signs from now on.
    let http = TcpListener::bind(http_addr)
        .await
        .expect("the same HTTP port");
    let auth = Server::start_with_http(&keys(&[EC, ED], "ed-2"), Some(http)).await;
    let new = auth.login(ADMIN, ADMIN_PASSWORD).await.access_token;
    // The first call with the unknown kid has user-service fetch the JWKS
    // again; within a few tries (bounded) the new key verifies.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = call(new.clone()).await;
        if status.code() == Code::NotFound {
            break;
        }
        assert_eq!(status.message(), "unknown signing key", "{status:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "ed-2 was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        call(old.clone()).await.code(),
        Code::NotFound,
        "ec-1 while published"
    );

    // ec-1 is retired: once user-service refreshes, its tokens are refused.
    auth.stop().await;
    let http = TcpListener::bind(http_addr)
        .await
        .expect("the same HTTP port");
    let auth = Server::start_with_http(&keys(&[ED], "ed-2"), Some(http)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // A token of a third key names an unknown kid and so asks for a refresh.
        let status = call(old.clone()).await;
        if status.code() == Code::Unauthenticated {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ec-1 was never retired"
        );
        let _ = call(forged_kid(&new)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(new).await.code(), Code::NotFound);
    auth.stop().await;
    let _ = stop_users.send(()).await;
}

/// `token` with its header's `kid` changed to one no key has.
fn forged_kid(token: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (header, rest) = token.split_once('.').unwrap();
    let mut header: serde_json::Value =
        serde_json::from_slice(&b64.decode(header).unwrap()).unwrap();
    header["kid"] = "nobody".into();
    format!("{}.{rest}", b64.encode(header.to_string()))
}

#[tokio::test]
async fn a_jwks_url_that_does_not_answer_is_a_startup_error() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let config = Loader::new()
        .environment(Environment::Development)
        .defaults_toml(user_service::DEFAULT_CONFIG)
        .development_toml(user_service::DEVELOPMENT_CONFIG)
        .env_from([("KEEL_AUTH__JWKS_URL", url.as_str())])
        .load()
        .expect("configuration");
    let keel = keel_rpc::Keel::new(&config, user_service::SERVICES).expect("keel");
    let users = user_service::Users::in_memory().await.expect("store");
    let server = user_service::server(&keel, &config, users).expect("server");
    let listeners = keel_rpc::serve::Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        metrics: None,
    };
    let served = tokio::time::timeout(
        Duration::from_secs(20),
        server.serve_on(listeners, tokio_stream::pending()),
    )
    .await
    .expect("serve gives up");
    let error = served.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("auth.jwks_url: fetching {url}: ")),
        "{error}"
    );
}
