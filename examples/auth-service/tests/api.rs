//! Every method of the auth service through the generated client over a real
//! socket, on SQLite and on PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_service::auth_v1::{
    CreateCredentialRequest, GetJwksRequest, LoginRequest, RefreshRequest, RevokeAllRequest,
    RevokeRequest, ValidateRequest,
};
use auth_service::{DEV_SECRET, RETRY_AFTER_MS, Settings};
use common::*;
use keel_rpc::auth::Verifier;
use keel_rpc::config::{Algorithm, AuthConfig, Secret};
use tonic::Code;

fn login(username: &str, password: &str) -> LoginRequest {
    LoginRequest {
        username: username.into(),
        password: password.into(),
    }
}

fn refresh(token: &str) -> RefreshRequest {
    RefreshRequest {
        refresh_token: token.into(),
        ..Default::default()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// How the user service verifies tokens on its embedded defaults: the
/// default key only (the dev secret, no kid), issuer and audience checked.
fn user_service_verifier() -> Verifier {
    Verifier::from_config(&AuthConfig {
        algorithm: Algorithm::HS256,
        hmac_secret: Some(Secret::new(DEV_SECRET)),
        issuer: Some("keel-dev".into()),
        audience: Some("keel-examples".into()),
        ..AuthConfig::default()
    })
    .unwrap()
}

fn decode_part(token: &str, index: usize) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(index).expect("JWT part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

async fn login_issues_tokens_other_keel_services_accept(db: Db) {
    let test = TestDb::new(db).await;
    let server = Server::start(&settings(&test.config)).await;
    let reply = server.login(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(reply.token_type, "Bearer");
    assert_eq!(reply.scope, "auth:admin users:read users:write");
    assert_eq!(reply.refresh_token.len(), 43);
    let now = now();
    assert!((now + 14 * 60..=now + 15 * 60 + 1).contains(&reply.access_token_expires_at));
    assert!(reply.refresh_token_expires_at >= now + 29 * 24 * 3600);

    let header = decode_part(&reply.access_token, 0);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["kid"], "dev");
    let claims = decode_part(&reply.access_token, 1);
    for claim in [
        "sub",
        "scope",
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "sid",
        "token_use",
    ] {
        assert!(claims.get(claim).is_some(), "{claim} in {claims}");
    }
    assert_eq!(claims["token_use"], "access");
    assert_eq!(claims["sid"], reply.session_id.as_str());

    // The user service's verifier (dev secret as its default key) accepts it.
    let verified = user_service_verifier()
        .verify(&reply.access_token)
        .expect("accepted by the user service's verifier");
    assert_eq!(verified.sub, ADMIN);
    assert!(verified.has_scope("users:read"));
    assert_eq!(verified.aud, vec!["keel-examples".to_owned()]);
    assert_eq!(verified.sid.as_deref(), Some(reply.session_id.as_str()));
    // The refresh token is never a valid access token.
    assert!(
        user_service_verifier()
            .verify(&reply.refresh_token)
            .is_err()
    );

    let mut client = server.client().await;
    let validated = client
        .validate(ValidateRequest {
            access_token: reply.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(validated.valid, "{}", validated.reason);
    assert_eq!(validated.subject, ADMIN);
    assert_eq!(
        validated.scopes,
        ["auth:admin", "users:read", "users:write"]
    );
    assert_eq!(validated.issuer, "keel-dev");
    assert_eq!(validated.audience, ["keel-examples"]);
    assert_eq!(validated.session_id, reply.session_id);
    assert_eq!(validated.expires_at, reply.access_token_expires_at);
    assert!(!validated.token_id.is_empty());
    server.stop().await;
}

async fn login_failures_do_not_reveal_whether_the_user_exists(db: Db) {
    let test = TestDb::new(db).await;
    let server = Server::start(&settings(&test.config)).await;
    let mut client = server.client().await;
    let wrong = client
        .login(login(ADMIN, "not-the-password"))
        .await
        .unwrap_err();
    let unknown = client
        .login(login("nobody", "not-the-password"))
        .await
        .unwrap_err();
    for status in [&wrong, &unknown] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "invalid username or password");
    }
    for (request, message) in [
        // auth.proto's rules, before the handler (and the throttle) sees it.
        (login("", "x"), "username: must be at least 1 character"),
        (login(ADMIN, ""), "password: must be at least 1 character"),
        (
            login(ADMIN, &"x".repeat(1025)),
            "password: must be at most 1024 bytes",
        ),
        (
            login(&"u".repeat(300), "x"),
            "username: must be at most 256 bytes",
        ),
    ] {
        let status = client.login(request).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, message)
        );
    }
    server.stop().await;
}

async fn repeated_failures_are_throttled_with_a_retry_hint(db: Db) {
    let test = TestDb::new(db).await;
    let server = Server::start(&settings_with(
        &test.config,
        "[throttle]\nusername_burst = 3\nusername_interval = \"1m\"\npeer_burst = 5\npeer_interval = \"1m\"\n",
    ))
    .await;
    let mut client = server.client().await;
    for _ in 0..3 {
        let status = client
            .login(login(ADMIN, "wrong-password"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // The username is now throttled, even with the right password.
    let status = client
        .login(login(ADMIN, ADMIN_PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("too many failed logins for this username; retry after"),
        "{}",
        status.message()
    );
    let retry_ms: u64 = status
        .metadata()
        .get(RETRY_AFTER_MS)
        .expect("retry-after-ms")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60_000).contains(&retry_ms), "{retry_ms}");

    // Unknown usernames are throttled the same way, per username...
    for _ in 0..2 {
        let status = client
            .login(login("nobody", "wrong-password"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // ...and the peer has now failed 5 times: every username is refused.
    let status = client
        .login(login("somebody", "wrong-password"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("from this address"),
        "{}",
        status.message()
    );
    assert!(status.metadata().get(RETRY_AFTER_MS).is_some());
    server.stop().await;
}

/// The message of a `RESOURCE_EXHAUSTED` answer, checking its retry hint.
fn refusal(
    result: Result<tonic::Response<auth_service::auth_v1::TokenResponse>, tonic::Status>,
) -> String {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.metadata().get(RETRY_AFTER_MS).is_some(),
        "{status:?}"
    );
    status.message().to_owned()
}

const SHARED_THROTTLE: &str = "[throttle]\nusername_burst = 4\nusername_interval = \"1m\"\npeer_burst = 7\npeer_interval = \"1m\"\n";

async fn failures_on_either_replica_lock_the_username_out_on_both(db: Db) {
    let test = TestDb::new(db).await;
    lock_out_on_both(&settings_with(&test.config, SHARED_THROTTLE)).await;
}

/// With `[rate_limit] backend`, the failures are counted in Redis instead:
/// none in the store, one key per username and address (hashed), each
/// expiring when its failures stop counting.
#[tokio::test]
async fn with_redis_failures_on_either_replica_lock_the_username_out_on_both() {
    let test = TestDb::new(Db::Sqlite).await;
    let redis = keel_rpc::testing::TestRedis::start().await.expect("redis");
    let extra = format!(
        "{SHARED_THROTTLE}[rate_limit]\nbackend = \"{}\"\n",
        redis.url()
    );
    let settings = settings_with(&test.config, &extra);
    lock_out_on_both(&settings).await;
    use keel_rpc::pipeline::redis::{self, AsyncCommands};
    let client = redis::Client::open(redis.url()).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = connection.keys("keel:rl:login:*").await.expect("KEYS");
    // admin, nobody1 to nobody3, and the address.
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert_eq!(keys.iter().filter(|k| k.contains(":peer:")).count(), 1);
    for key in keys {
        let ttl: i64 = connection.pttl(&key).await.expect("PTTL");
        assert!((50_000..=7 * 60_000).contains(&ttl), "{key}: {ttl} ms");
    }
    let store = auth_store(&test).await;
    let rows: i64 = keel_rpc::with_store!(store.store(), pool => {
        keel_rpc::store::sqlx::query_scalar("SELECT COUNT(*) FROM login_failures")
            .fetch_one(pool)
            .await
            .expect("count")
    });
    assert_eq!(rows, 0, "nothing counted in the store");
    // Redis gone: logins are refused, never let through uncounted.
    drop(redis);
    let server = Server::start(&settings).await;
    let status = server
        .client()
        .await
        .login(login(ADMIN, ADMIN_PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    server.stop().await;
}

/// Two replicas of `settings`: failures spread over both lock the username,
/// and then the address, out on both.
async fn lock_out_on_both(settings: &Settings) {
    let settings = settings.clone();
    // Two replicas sharing the store.
    let a = Server::start(&settings).await;
    let b = Server::start(&settings).await;
    let replicas = [a.client().await, b.client().await];
    let on = |replica: usize| replicas[replica].clone();
    for replica in [0, 1, 0, 1] {
        let status = on(replica)
            .login(login(ADMIN, "wrong-password"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // Two failures on each: neither replica alone saw four, both refuse.
    for replica in [0, 1] {
        let message = refusal(on(replica).login(login(ADMIN, ADMIN_PASSWORD)).await);
        assert!(
            message.starts_with("too many failed logins for this username; retry after"),
            "{message}"
        );
    }
    // The address has failed four times; three more, spread likewise...
    for (replica, username) in [(0, "nobody1"), (1, "nobody2"), (0, "nobody3")] {
        let status = on(replica)
            .login(login(username, "wrong-password"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // ...and every username is refused from it, on both.
    for replica in [1, 0] {
        let message = refusal(on(replica).login(login("somebody", "wrong-password")).await);
        assert!(message.contains("from this address"), "{message}");
    }
    a.stop().await;
    b.stop().await;
}

async fn concurrent_correct_logins_all_succeed_and_concurrent_failures_all_count(db: Db) {
    let test = TestDb::new(db).await;
    // The shipped defaults: username_burst = 5, username_in_flight = 8.
    let server = Server::start(&settings(&test.config)).await;
    let client = server.client().await;
    let logins = |password: &'static str, n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move { client.login(login(ADMIN, password)).await })
            })
            .collect();
        async move {
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.expect("login task"));
            }
            results
        }
    };
    // More concurrent correct logins than username_burst, a few rounds:
    // they used to be refused "too many failed logins" (issue 32).
    for _ in 0..3 {
        for result in logins(ADMIN_PASSWORD, 8).await {
            let reply = result.expect("a concurrent correct login succeeds");
            assert!(!reply.into_inner().access_token.is_empty());
        }
    }
    // username_burst concurrent wrong passwords: all checked, all counted...
    for result in logins("wrong-password", 5).await {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // ...so the next attempt is refused, even with the right password.
    let message = refusal(
        server
            .client()
            .await
            .login(login(ADMIN, ADMIN_PASSWORD))
            .await,
    );
    assert!(
        message.starts_with("too many failed logins for this username"),
        "{message}"
    );
    server.stop().await;
}

async fn logins_past_the_bound_in_flight_are_refused_at_once(db: Db) {
    let test = TestDb::new(db).await;
    // A costlier hash, so that logins overlap, and a bound of 2.
    let server = Server::start(&settings_with(
        &test.config,
        "[passwords]\nmemory_kib = 8192\n[throttle]\nusername_in_flight = 2\n",
    ))
    .await;
    let client = server.client().await;
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.login(login(ADMIN, ADMIN_PASSWORD)).await })
        })
        .collect();
    let (mut succeeded, mut refused) = (0, 0);
    for task in tasks {
        match task.await.expect("login task") {
            Ok(_) => succeeded += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(
                    status.message(),
                    "too many concurrent logins for this username; retry after 0.2s"
                );
                let retry_ms = status.metadata().get(RETRY_AFTER_MS).expect("retry hint");
                assert_eq!(retry_ms.to_str().unwrap(), "200");
                refused += 1;
            }
        }
    }
    assert!(succeeded >= 2, "{succeeded} succeeded, {refused} refused");
    assert!(refused >= 1, "{succeeded} succeeded, {refused} refused");
    // Nothing was counted as a failure, and the slots are free again.
    let throttle = server.app.handler.throttle();
    let admin = auth_service::FailureKey {
        scope: auth_service::ThrottleScope::Username,
        target: ADMIN,
    };
    let now = now() * 1000;
    assert_eq!(
        throttle.ledger().standings(&[admin], now).await.unwrap(),
        [None]
    );
    server.login(ADMIN, ADMIN_PASSWORD).await;
    server.stop().await;
}

async fn refresh_rotates_and_reuse_revokes_the_session(db: Db) {
    let test = TestDb::new(db).await;
    let server = Server::start(&settings(&test.config)).await;
    let mut client = server.client().await;
    let first = server.login(ADMIN, ADMIN_PASSWORD).await;
    let second = client
        .refresh(refresh(&first.refresh_token))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(second.scope, first.scope);
    let third = client
        .refresh(refresh(&second.refresh_token))
        .await
        .unwrap()
        .into_inner();

    // A spent token: refused, and the whole session is revoked.
    let status = client
        .refresh(refresh(&first.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "refresh token already used; its session has been revoked"
    );
    let status = client
        .refresh(refresh(&third.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "session revoked; log in again")
    );
    // Its access tokens fail introspection from now on.
    let validated = client
        .validate(ValidateRequest {
            access_token: third.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!validated.valid);
    assert_eq!(validated.reason, "session revoked or ended");
    // Another session of the same user is not affected.
    let other = server.login(ADMIN, ADMIN_PASSWORD).await;
    client.refresh(refresh(&other.refresh_token)).await.unwrap();

    for (token, code, message) in [
        (
            "",
            Code::InvalidArgument,
            "refresh_token: must be at least 1 character",
        ),
        (
            "short",
            Code::InvalidArgument,
            "refresh_token: malformed; expected the 43-character token returned by Login or Refresh",
        ),
        (
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            Code::Unauthenticated,
            "invalid refresh token",
        ),
    ] {
        let status = client.refresh(refresh(token)).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (code, message),
            "{token:?}"
        );
    }
    server.stop().await;
}

/// Concurrent refreshes with one token over separate connections: exactly
/// one succeeds.
async fn concurrent_refreshes_exactly_one_succeeds(db: Db) {
    let test = TestDb::new(db).await;
    let server = Arc::new(Server::start(&settings(&test.config)).await);
    for round in 0..5 {
        let session = server.login(ADMIN, ADMIN_PASSWORD).await;
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(server.client().await);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(clients.len()));
        let calls: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let token = session.refresh_token.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    client.refresh(refresh(&token)).await
                })
            })
            .collect();
        let mut ok = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => ok += 1,
                Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one refresh succeeds");
    }
    match Arc::try_unwrap(server) {
        Ok(server) => server.stop().await,
        Err(_) => panic!("server still shared"),
    }
}

async fn validate_reports_why_a_token_is_not_valid(db: Db) {
    let test = TestDb::new(db).await;
    let server = Server::start(&settings(&test.config)).await;
    let mut client = server.client().await;
    let validate = |token: String| ValidateRequest {
        access_token: token,
    };
    let status = client.validate(validate(String::new())).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::InvalidArgument,
            "access_token: must be at least 1 character"
        )
    );
    let reply = client
        .validate(validate("not.a.jwt".into()))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.valid);
    assert_eq!(reply.reason, "malformed token");
    assert!(reply.subject.is_empty());

    // Signed with the shared secret but not issued here (no kid, no session).
    let minted = keel_rpc::auth::mint_access_token(
        &AuthConfig {
            hmac_secret: Some(Secret::new(DEV_SECRET)),
            issuer: Some("keel-dev".into()),
            audience: Some("keel-examples".into()),
            ..AuthConfig::default()
        },
        "mallory",
        &["auth:admin"],
        Duration::from_secs(60),
    )
    .unwrap();
    let reply = client
        .validate(validate(minted))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.valid);
    assert_eq!(reply.reason, "unknown signing key");

    let session = server.login(ADMIN, ADMIN_PASSWORD).await;
    // A refresh token is not an access token.
    let reply = client
        .validate(validate(session.refresh_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.valid);
    // Revoked by Revoke: the access token of the session is no longer valid.
    client
        .revoke(RevokeRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .unwrap();
    let reply = client
        .validate(validate(session.access_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.valid);
    assert_eq!(reply.reason, "session revoked or ended");
    server.stop().await;
}

async fn revoke_ends_one_session(db: Db) {
    let test = TestDb::new(db).await;
    let server = Server::start(&settings(&test.config)).await;
    let mut client = server.client().await;
    let a = server.login(ADMIN, ADMIN_PASSWORD).await;
    let b = server.login(ADMIN, ADMIN_PASSWORD).await;
    let revoke = |token: &str| RevokeRequest {
        refresh_token: token.into(),
    };
    client.revoke(revoke(&a.refresh_token)).await.unwrap();
    client.revoke(revoke(&a.refresh_token)).await.unwrap();
    // An unknown token is not an error (nothing to reveal); a malformed one is.
    client
        .revoke(revoke("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .await
        .unwrap();
    let status = client.revoke(revoke("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client.refresh(refresh(&a.refresh_token)).await.unwrap_err();
    assert_eq!(status.message(), "session revoked; log in again");
    client.refresh(refresh(&b.refresh_token)).await.unwrap();
    server.stop().await;
}

async fn revoke_all_is_for_oneself_or_an_admin(db: Db) {
    let test = TestDb::new(db).await;
    let server = Server::start(&settings(&test.config)).await;
    let mut client = server.client().await;
    let admin = server.login(ADMIN, ADMIN_PASSWORD).await;
    for name in ["ada", "bob"] {
        client
            .create_credential(with_token(
                CreateCredentialRequest {
                    username: name.into(),
                    password: format!("{name}-password"),
                    scopes: vec!["users:read".into()],
                },
                &admin.access_token,
            ))
            .await
            .unwrap();
    }
    let ada1 = server.login("ada", "ada-password").await;
    let ada2 = server.login("ada", "ada-password").await;
    let bob = server.login("bob", "bob-password").await;

    let status = client
        .revoke_all(RevokeAllRequest {
            subject: "ada".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "missing bearer token")
    );
    let status = client
        .revoke_all(with_token(
            RevokeAllRequest {
                subject: "bob".into(),
            },
            &ada1.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "revoking the sessions of another subject needs scope auth:admin"
    );
    let status = client
        .revoke_all(with_token(
            RevokeAllRequest {
                subject: "bad subject".into(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Empty subject: the caller's own sessions, both of them.
    let own = client
        .revoke_all(with_token(RevokeAllRequest::default(), &ada1.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.sessions_revoked, 2);
    for session in [&ada1, &ada2] {
        let status = client
            .refresh(refresh(&session.refresh_token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // An admin may sign anyone out.
    let other = client
        .revoke_all(with_token(
            RevokeAllRequest {
                subject: "bob".into(),
            },
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.sessions_revoked, 1);
    assert!(client.refresh(refresh(&bob.refresh_token)).await.is_err());
    // The admin's own session is untouched.
    client.refresh(refresh(&admin.refresh_token)).await.unwrap();
    server.stop().await;
}

async fn create_credential_needs_auth_admin_and_checks_its_input(db: Db) {
    let test = TestDb::new(db).await;
    let server = Server::start(&settings(&test.config)).await;
    let mut client = server.client().await;
    let admin = server.login(ADMIN, ADMIN_PASSWORD).await;
    let new = |username: &str, password: &str, scopes: &[&str]| CreateCredentialRequest {
        username: username.into(),
        password: password.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };

    let status = client
        .create_credential(new("ada", "ada-password", &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let created = client
        .create_credential(with_token(
            new(
                "ada",
                "ada-password",
                &["users:read", "users:read", "notes:write"],
            ),
            &admin.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.username, "ada");
    assert_eq!(created.scopes, ["users:read", "notes:write"]);
    assert!(created.created_at > 0);

    let ada = server.login("ada", "ada-password").await;
    assert_eq!(ada.scope, "users:read notes:write");
    let status = client
        .create_credential(with_token(
            new("eve", "eve-password", &[]),
            &ada.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::PermissionDenied, "missing scope auth:admin")
    );

    for (request, code, message) in [
        (
            new("ada", "another-password", &[]),
            Code::AlreadyExists,
            "username \"ada\" is taken",
        ),
        (
            new("", "password-1", &[]),
            Code::InvalidArgument,
            "username: must not be empty",
        ),
        (
            new("a b", "password-1", &[]),
            Code::InvalidArgument,
            "username: ' ' is not allowed; use letters, digits, '.', '_', '-' and '@'",
        ),
        (
            new(&"u".repeat(65), "password-1", &[]),
            Code::InvalidArgument,
            "username: longer than 64 characters",
        ),
        (
            new("eve", "short", &[]),
            Code::InvalidArgument,
            "password: must be at least 8 bytes, got 5",
        ),
        (
            new("eve", "password-1", &["ok", ""]),
            Code::InvalidArgument,
            "scopes: scope 1 is empty",
        ),
        (
            new("eve", "password-1", &["two words"]),
            Code::InvalidArgument,
            "scopes: scope 0 (\"two words\") contains whitespace",
        ),
    ] {
        let status = client
            .create_credential(with_token(request, &admin.access_token))
            .await
            .unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }
    server.stop().await;
}

async fn the_bootstrap_admin_is_created_once(db: Db) {
    let test = TestDb::new(db).await;
    let first = Server::start(&settings(&test.config)).await;
    first.login(ADMIN, ADMIN_PASSWORD).await;
    first.stop().await;
    // A restart with another bootstrap password leaves the credential alone.
    let changed = settings_with(
        &test.config,
        "[bootstrap]\nadmin_password = \"a-different-password\"\n",
    );
    let second = Server::start(&changed).await;
    second.login(ADMIN, ADMIN_PASSWORD).await;
    let status = second
        .client()
        .await
        .login(login(ADMIN, "a-different-password"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    second.stop().await;
}

async fn jwks_is_empty_for_shared_secrets(db: Db) {
    let test = TestDb::new(db).await;
    let server = Server::start(&settings(&test.config)).await;
    let jwks = server
        .client()
        .await
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(jwks.keys.is_empty());
    assert_eq!(auth_service::jwks_json(&jwks), r#"{"keys":[]}"#);
    server.stop().await;
}

/// Asymmetric keys: the JWKS from `GetJwks` lets another service verify
/// tokens locally, through a key rotation.
async fn asymmetric_keys_are_published_and_rotate(db: Db) {
    let test = TestDb::new(db).await;
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../user-service/tests/fixtures"
    );
    let keys = |signing: &str| {
        format!(
            r#"
[auth]
keys = [
  {{ kid = "ec-1", algorithm = "ES256", private_key_file = "{fixtures}/ec_private.pem" }},
  {{ kid = "ed-2", algorithm = "EdDSA", private_key_file = "{fixtures}/ed_private.pem" }},
  {{ kid = "rsa-3", algorithm = "RS256", private_key_file = "{fixtures}/rsa_private.pem" }},
]
[tokens]
signing_kid = "{signing}"
"#
        )
    };
    let before = Server::start(&settings_with(&test.config, &keys("ec-1"))).await;
    let old = before.login(ADMIN, ADMIN_PASSWORD).await;
    let jwks = before
        .client()
        .await
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let kids: BTreeSet<(&str, &str, &str)> = jwks
        .keys
        .iter()
        .map(|k| (k.kid.as_str(), k.alg.as_str(), k.kty.as_str()))
        .collect();
    assert_eq!(
        kids,
        BTreeSet::from([
            ("ec-1", "ES256", "EC"),
            ("ed-2", "EdDSA", "OKP"),
            ("rsa-3", "RS256", "RSA")
        ])
    );
    assert!(jwks.keys.iter().all(|k| k.r#use == "sig"));
    before.stop().await;

    // Rotation: the service now signs with ed-2; tokens signed with ec-1
    // stay valid while ec-1 is published.
    let after = Server::start(&settings_with(&test.config, &keys("ed-2"))).await;
    let new = after.login(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(decode_part(&old.access_token, 0)["kid"], "ec-1");
    assert_eq!(decode_part(&new.access_token, 0)["kid"], "ed-2");

    // Another service, configured with the JWKS only, verifies both locally.
    let remote = Verifier::from_config(&AuthConfig {
        jwks: Some(auth_service::jwks_json(&jwks)),
        issuer: Some("keel-dev".into()),
        audience: Some("keel-examples".into()),
        ..AuthConfig::default()
    })
    .expect("a verifier from the JWKS alone");
    for token in [&old.access_token, &new.access_token] {
        assert_eq!(remote.verify(token).expect("verified").sub, ADMIN);
    }
    // An HS256 token (no such key there) is refused.
    let hs = keel_rpc::auth::mint_access_token(
        &AuthConfig {
            hmac_secret: Some(Secret::new(DEV_SECRET)),
            issuer: Some("keel-dev".into()),
            audience: Some("keel-examples".into()),
            ..AuthConfig::default()
        },
        ADMIN,
        &[],
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(
        remote.verify(&hs).unwrap_err(),
        keel_rpc::auth::AuthError::UnknownKey
    );
    // The auth service itself accepts its old tokens too.
    let validated = after
        .client()
        .await
        .validate(ValidateRequest {
            access_token: old.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(validated.valid, "{}", validated.reason);
    after.stop().await;
}

async fn password_hashes_follow_the_configured_cost(db: Db) {
    let test = TestDb::new(db).await;
    let server = Server::start(&settings(&test.config)).await;
    server.stop().await;
    let store = auth_store(&test).await;
    let admin = store.credential(ADMIN).await.unwrap().unwrap();
    assert!(
        admin
            .password_hash
            .starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
        "{}",
        admin.password_hash
    );
    store.store().close().await;

    // New parameters: the hash is upgraded at the next successful login.
    let stronger = Server::start(&settings_with(
        &test.config,
        "[passwords]\nmemory_kib = 128\n",
    ))
    .await;
    stronger.login(ADMIN, ADMIN_PASSWORD).await;
    let store = stronger.app.handler.store().clone();
    let mut upgraded = false;
    for _ in 0..100 {
        let hash = store
            .credential(ADMIN)
            .await
            .unwrap()
            .unwrap()
            .password_hash;
        if hash.starts_with("$argon2id$v=19$m=128,t=1,p=1$") {
            upgraded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(upgraded, "the hash was upgraded");
    stronger.login(ADMIN, ADMIN_PASSWORD).await;
    stronger.stop().await;
}

keel_rpc::on_both_backends!(
    login_issues_tokens_other_keel_services_accept,
    login_failures_do_not_reveal_whether_the_user_exists,
    repeated_failures_are_throttled_with_a_retry_hint,
    failures_on_either_replica_lock_the_username_out_on_both,
    concurrent_correct_logins_all_succeed_and_concurrent_failures_all_count,
    logins_past_the_bound_in_flight_are_refused_at_once,
    refresh_rotates_and_reuse_revokes_the_session,
    concurrent_refreshes_exactly_one_succeeds,
    validate_reports_why_a_token_is_not_valid,
    revoke_ends_one_session,
    revoke_all_is_for_oneself_or_an_admin,
    create_credential_needs_auth_admin_and_checks_its_input,
    the_bootstrap_admin_is_created_once,
    jwks_is_empty_for_shared_secrets,
    asymmetric_keys_are_published_and_rotate,
    password_hashes_follow_the_configured_cost,
);
