//! Every auth outcome, through the generated client over a real socket.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use keel_rpc::config::{Algorithm as ConfigAlgorithm, Loader};
use serde_json::json;
use tonic::Code;
use user_service::user_v1::{CreateUserRequest, GetUserRequest, ListUsersRequest};

fn get(id: &str) -> GetUserRequest {
    GetUserRequest { id: id.into() }
}

/// Calls GetUser with `token` and returns the status (OK → NotFound for an unknown id).
async fn get_user_status(server: &Server, token: &str) -> (Code, String) {
    let mut client = server.client().await;
    match client.get_user(with_token(get("u-404"), token)).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

async fn assert_rejected(server: &Server, token: &str, message: &str) {
    let (code, got) = get_user_status(server, token).await;
    assert_eq!((code, got.as_str()), (Code::Unauthenticated, message));
}

#[tokio::test]
async fn public_method_needs_no_token() {
    let server = Server::start(config()).await;
    let reply = server
        .client()
        .await
        .health_check(())
        .await
        .expect("public call");
    assert_eq!(reply.get_ref().status, 1, "SERVING");
    assert!(reply.get_ref().timestamp.is_some());
    server.stop().await;
}

#[tokio::test]
async fn missing_token_is_unauthenticated() {
    let server = Server::start(config()).await;
    let status = server
        .client()
        .await
        .get_user(get("u-1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "missing bearer token");
    server.stop().await;
}

#[tokio::test]
async fn valid_token_reaches_the_handler() {
    let server = Server::start(config()).await;
    let token = sign_hs(Algorithm::HS256, &claims("users:read"));
    let (code, message) = get_user_status(&server, &token).await;
    assert_eq!(code, Code::NotFound, "the handler answered: {message}");
    assert_eq!(message, "user \"u-404\" not found");
    server.stop().await;
}

#[tokio::test]
async fn missing_scope_is_permission_denied_and_never_reaches_the_handler() {
    let server = Server::start(config()).await;
    let mut client = server.client().await;
    let reader = sign_hs(Algorithm::HS256, &claims("users:read"));
    let new = || CreateUserRequest {
        name: "Ada".into(),
        email: "ada@example.com".into(),
    };
    let status = client
        .create_user(with_token(new(), &reader))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "missing scope users:write");

    let listed = client
        .list_users(with_token(ListUsersRequest::default(), &reader))
        .await
        .unwrap();
    assert!(
        listed.get_ref().users.is_empty(),
        "rejected CreateUser created nothing"
    );

    let writer = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let user = client
        .create_user(with_token(new(), &writer))
        .await
        .unwrap()
        .into_inner();
    let got = client
        .get_user(with_token(get(&user.id), &reader))
        .await
        .unwrap();
    assert_eq!(got.get_ref().email, "ada@example.com");
    server.stop().await;
}

#[tokio::test]
async fn time_claims_are_enforced_with_leeway() {
    let server = Server::start(config()).await;
    let now = now();
    let mut expired = claims("users:read");
    expired["exp"] = json!(now - 120);
    assert_rejected(
        &server,
        &sign_hs(Algorithm::HS256, &expired),
        "token expired",
    )
    .await;

    // Within the 30 s leeway: still accepted.
    let mut just_expired = claims("users:read");
    just_expired["exp"] = json!(now - 5);
    let (code, _) = get_user_status(&server, &sign_hs(Algorithm::HS256, &just_expired)).await;
    assert_eq!(code, Code::NotFound);

    let mut early = claims("users:read");
    early["nbf"] = json!(now + 120);
    assert_rejected(
        &server,
        &sign_hs(Algorithm::HS256, &early),
        "token not yet valid",
    )
    .await;

    let mut no_exp = claims("users:read");
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_rejected(
        &server,
        &sign_hs(Algorithm::HS256, &no_exp),
        "missing claim exp",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_token_issued_in_the_future_or_for_nobody_is_unauthenticated() {
    let server = Server::start(config()).await;
    let now = now();
    // Ten years ahead, as a forger with a stolen key might write it.
    let mut future = claims("users:read");
    future["iat"] = json!(now + 10 * 365 * 24 * 3600);
    assert_rejected(
        &server,
        &sign_hs(Algorithm::HS256, &future),
        "token issued in the future",
    )
    .await;

    // Within the 30 s leeway: a clock a little ahead is tolerated.
    let mut slightly_ahead = claims("users:read");
    slightly_ahead["iat"] = json!(now + 10);
    let (code, _) = get_user_status(&server, &sign_hs(Algorithm::HS256, &slightly_ahead)).await;
    assert_eq!(code, Code::NotFound);

    for sub in ["", "   ", "\t"] {
        let mut nobody = claims("users:read");
        nobody["sub"] = json!(sub);
        assert_rejected(
            &server,
            &sign_hs(Algorithm::HS256, &nobody),
            "token subject is empty",
        )
        .await;
    }
    let mut no_sub = claims("users:read");
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_rejected(
        &server,
        &sign_hs(Algorithm::HS256, &no_sub),
        "missing claim sub",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn algorithm_is_pinned_by_configuration() {
    let server = Server::start(config()).await;
    let good = claims("users:read");
    assert_rejected(
        &server,
        &sign_hs(Algorithm::HS512, &good),
        "algorithm not allowed",
    )
    .await;

    // `alg: none` with an empty signature.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(good.to_string())
    );
    let (code, message) = get_user_status(&server, &none).await;
    assert_eq!(code, Code::Unauthenticated);
    assert!(
        message == "algorithm not allowed" || message == "malformed token",
        "{message}"
    );
    server.stop().await;
}

#[tokio::test]
async fn signature_issuer_audience_and_kind_are_checked() {
    let server = Server::start(config()).await;
    let other_key =
        jsonwebtoken::EncodingKey::from_secret(b"another-secret-that-is-long-enough-0123");
    let forged = sign_with(Algorithm::HS256, &claims("users:read"), &other_key);
    assert_rejected(&server, &forged, "bad signature").await;

    // Change one character inside the signature (not the last one, whose low
    // bits are base64 padding).
    let token = sign_hs(Algorithm::HS256, &claims("users:read"));
    let at = token.rfind('.').unwrap() + 5;
    let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
    assert_ne!(tampered, token);
    assert_rejected(&server, &tampered, "bad signature").await;

    let mut iss = claims("users:read");
    iss["iss"] = json!("someone-else");
    assert_rejected(&server, &sign_hs(Algorithm::HS256, &iss), "wrong issuer").await;

    let mut aud = claims("users:read");
    aud["aud"] = json!("another-api");
    assert_rejected(&server, &sign_hs(Algorithm::HS256, &aud), "wrong audience").await;

    let mut refresh = claims("users:read");
    refresh["token_use"] = json!("refresh");
    assert_rejected(
        &server,
        &sign_hs(Algorithm::HS256, &refresh),
        "not an access token",
    )
    .await;

    let mut kindless = claims("users:read");
    kindless.as_object_mut().unwrap().remove("token_use");
    assert_rejected(
        &server,
        &sign_hs(Algorithm::HS256, &kindless),
        "not an access token",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn garbage_and_oversized_headers_are_rejected() {
    let server = Server::start(config()).await;
    assert_rejected(&server, "not-a-jwt", "malformed token").await;
    assert_rejected(&server, "a.b.c", "malformed token").await;

    let mut client = server.client().await;
    let status = client
        .get_user(with_auth(get("u-1"), "Basic YWxpY2U6c2VjcmV0"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "authorization header must use the Bearer scheme"
    );

    let status = client
        .get_user(with_auth(get("u-1"), "Bearer "))
        .await
        .unwrap_err();
    assert_eq!(status.message(), "missing bearer token");

    let mut twice = with_token(
        get("u-1"),
        &sign_hs(Algorithm::HS256, &claims("users:read")),
    );
    twice
        .metadata_mut()
        .append("authorization", "Bearer x".parse().unwrap());
    let status = client.get_user(twice).await.unwrap_err();
    assert_eq!(status.message(), "malformed authorization header");

    // Larger than auth.max_token_bytes (8 KiB), smaller than the HTTP/2 header limit.
    let big = "a".repeat(10 * 1024);
    assert_rejected(&server, &big, "token too large").await;

    // Far larger than the HTTP/2 header list limit: refused before any layer,
    // and the server keeps serving.
    let huge = "a".repeat(200 * 1024);
    let status = client
        .get_user(with_token(get("u-1"), &huge))
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    let reply = server.client().await.health_check(()).await;
    assert!(reply.is_ok(), "server still serves: {reply:?}");
    server.stop().await;
}

#[tokio::test]
async fn asymmetric_keys_verify_and_hs_rs_confusion_is_refused() {
    let cases = [
        (ConfigAlgorithm::RS256, Algorithm::RS256, "rsa"),
        (ConfigAlgorithm::ES256, Algorithm::ES256, "ec"),
        (ConfigAlgorithm::EdDSA, Algorithm::EdDSA, "ed"),
    ];
    for (configured, alg, key) in cases {
        let mut config = config();
        config.auth.algorithm = configured;
        config.auth.hmac_secret = None;
        config.auth.public_key_pem = Some(fixture(&format!("{key}_public.pem")));
        let server = Server::start(config).await;

        let private = fixture(&format!("{key}_private.pem"));
        let signing = match key {
            "rsa" => jsonwebtoken::EncodingKey::from_rsa_pem(private.as_bytes()),
            "ec" => jsonwebtoken::EncodingKey::from_ec_pem(private.as_bytes()),
            _ => jsonwebtoken::EncodingKey::from_ed_pem(private.as_bytes()),
        }
        .unwrap();
        let token = sign_with(alg, &claims("users:read"), &signing);
        let (code, message) = get_user_status(&server, &token).await;
        assert_eq!(code, Code::NotFound, "{key}: {message}");

        // The classic confusion attack: HS256 keyed with the public key's PEM.
        let public = fixture(&format!("{key}_public.pem"));
        let confused = sign_with(
            Algorithm::HS256,
            &claims("users:read"),
            &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
        );
        assert_rejected(&server, &confused, "algorithm not allowed").await;
        server.stop().await;
    }
}

#[tokio::test]
async fn standard_health_service_is_public() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let server = Server::start(config()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "user.v1.UserService"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("{service:?}: {s}"));
        assert_eq!(
            reply.get_ref().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_config_file_switching_to_rs256_leaves_no_development_secret_active() {
    let dir = tempfile::tempdir().unwrap();
    let public_key = dir.path().join("rsa_public.pem");
    std::fs::write(&public_key, fixture("rsa_public.pem")).unwrap();
    let file = dir.path().join("rs256.toml");
    let toml = format!(
        "[auth]\nalgorithm = \"RS256\"\npublic_key_file = {:?}\n",
        public_key.display().to_string()
    );
    std::fs::write(&file, toml).unwrap();
    let private = fixture("rsa_private.pem");
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(private.as_bytes()).unwrap();

    // In development (the development secret is layered in below the file)
    // and in production (where it is not there at all) alike.
    let production = user_service_loader_with_env(&[]);
    for (name, loader) in [("development", development()), ("production", production)] {
        let mut config = loader.file(&file).load().expect(name);
        assert_eq!(config.auth.algorithm, ConfigAlgorithm::RS256, "{name}");
        assert!(config.auth.hmac_secret.is_none(), "{name}");
        config.server.lame_duck = std::time::Duration::ZERO;
        let server = Server::start(config).await;

        let token = sign_with(Algorithm::RS256, &claims("users:read"), &rsa);
        let (code, message) = get_user_status(&server, &token).await;
        assert_eq!(
            code,
            Code::NotFound,
            "{name}: the RS256 token is accepted: {message}"
        );
        let development_token = sign_hs(Algorithm::HS256, &claims("users:read"));
        assert_rejected(&server, &development_token, "algorithm not allowed").await;
        server.stop().await;
    }
}

#[test]
fn production_refuses_to_start_without_a_key_or_with_the_development_secret() {
    let error = user_service_loader_with_env(&[])
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        error
            .contains("auth.hmac_secret: missing; required for HS256 (set KEEL_AUTH__HMAC_SECRET)"),
        "{error}"
    );

    let error =
        user_service_loader_with_env(&[("KEEL_AUTH__HMAC_SECRET", user_service::DEV_SECRET)])
            .load()
            .unwrap_err()
            .to_string();
    assert!(
        error.contains("auth.hmac_secret: is a development credential, not allowed in production"),
        "{error}"
    );
    assert!(error.contains("KEEL_AUTH__HMAC_SECRET"), "{error}");

    let own = "a-secret-of-this-deployment-0123456789";
    let config = user_service_loader_with_env(&[("KEEL_AUTH__HMAC_SECRET", own)])
        .load()
        .expect("production with its own secret");
    assert!(!config.service.environment.is_development());
}

/// The example's layers as its binary builds them, with `vars` as the environment.
fn user_service_loader_with_env(vars: &[(&str, &str)]) -> Loader {
    Loader::new()
        .defaults_toml(user_service::DEFAULT_CONFIG)
        .development_toml(user_service::DEVELOPMENT_CONFIG)
        .env_from(vars.iter().copied())
}
