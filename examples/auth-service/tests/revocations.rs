//! Revoked means refused, everywhere: two user-service replicas (A on
//! 127.0.0.2, B on 127.0.0.3) follow the feed of revoked sessions
//! (`auth.revocations`) of two different auth replicas (X and Y), and
//! sessions are revoked through a third (C); the auth replicas are
//! `auth-service` processes sharing one store. A revoked session's access token, accepted (and cached) by A
//! and B a moment before, is refused by both within 2 s, in 20 trials, while
//! another session of the same user keeps working. Then X is killed
//! (SIGKILL), a session is revoked while A's feed is down, and A catches up
//! once an auth replica answers at X's address again.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use auth_service::auth_v1::{RevokeAllRequest, RevokeRequest, TokenResponse};
use common::*;
use keel_rpc::Keel;
use keel_rpc::config::{Environment, Loader};
use keel_rpc::testing::TestServer;
use tokio::net::TcpListener;
use tonic::Code;
use user_service::user_v1::GetUserRequest;
use user_service::user_v1::user_service_client::UserServiceClient;

/// How soon a revocation must be refused everywhere (issue 32).
const WITHIN: Duration = Duration::from_secs(2);

/// A user-service replica on `ip`, following the feed of `auth`.
struct Replica {
    server: TestServer,
    keel: Keel,
}

impl Replica {
    async fn start(ip: &str, auth: SocketAddr) -> Replica {
        let toml = format!("[auth]\nrevocations = \"http://{auth}\"\n");
        let mut config = Loader::new()
            .environment(Environment::Development)
            .defaults_toml(user_service::DEFAULT_CONFIG)
            .development_toml(user_service::DEVELOPMENT_CONFIG)
            .development_toml(&toml)
            .load()
            .expect("user-service config");
        config.server.lame_duck = Duration::ZERO;
        let keel = Keel::new(&config, user_service::SERVICES).expect("keel");
        let users = user_service::Users::in_memory().await.expect("store");
        let server = user_service::server(&keel, &config, users).expect("server");
        let grpc = TcpListener::bind((ip, 0)).await.expect("bind");
        let listeners = keel_rpc::serve::Listeners {
            grpc,
            metrics: None,
        };
        let server = TestServer::start_on(server, listeners).expect("serve");
        Replica { server, keel }
    }

    fn current(&self) -> bool {
        let revocations = self.keel.verifier().revocations();
        revocations.expect("auth.revocations is set").is_current()
    }

    /// A counter of the replica's registry.
    fn counter(&self, name: &str) -> f64 {
        let families = self.keel.metrics().registry().gather();
        let family = families.iter().find(|f| f.name() == name);
        let family = family.unwrap_or_else(|| panic!("{name} is registered"));
        family.get_metric()[0].get_counter().get_value()
    }

    async fn client(&self) -> UserServiceClient<tonic::transport::Channel> {
        let channel = tonic::transport::Endpoint::from_shared(self.server.url())
            .expect("endpoint")
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect");
        UserServiceClient::new(channel)
    }
}

/// What a replica answers `GetUser` with the token: `NOT_FOUND` (the
/// replica's store is empty) means the token was accepted.
async fn answer(client: &mut UserServiceClient<tonic::transport::Channel>, token: &str) -> Code {
    let request = with_token(
        GetUserRequest {
            id: "u-000404".into(),
        },
        token,
    );
    match client.get_user(request).await {
        Ok(_) => Code::Ok,
        Err(status) => {
            if status.code() == Code::Unauthenticated {
                assert_eq!(status.message(), "session revoked", "{status:?}");
            }
            status.code()
        }
    }
}

/// Waits until every replica's feed is current.
async fn until_current(replicas: &[&Replica]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replicas.iter().all(|r| r.current()) {
        assert!(Instant::now() < deadline, "the feeds never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `token` is refused by every client, or `WITHIN` passes;
/// returns how long it took.
async fn refused_everywhere(
    clients: &mut [UserServiceClient<tonic::transport::Channel>],
    token: &str,
) -> Duration {
    let start = Instant::now();
    loop {
        let mut refused = 0;
        for client in clients.iter_mut() {
            if answer(client, token).await == Code::Unauthenticated {
                refused += 1;
            }
        }
        if refused == clients.len() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WITHIN,
            "a revoked session's token still accepted by {} of {} replicas after {WITHIN:?}",
            clients.len() - refused,
            clients.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

type AuthClient =
    auth_service::auth_v1::auth_service_client::AuthServiceClient<tonic::transport::Channel>;

async fn log_in(auth: &mut AuthClient) -> TokenResponse {
    let request = auth_service::auth_v1::LoginRequest {
        username: ADMIN.into(),
        password: ADMIN_PASSWORD.into(),
    };
    auth.login(request).await.expect("Login").into_inner()
}

async fn revoke(auth: &mut AuthClient, session: &TokenResponse) {
    auth.revoke(RevokeRequest {
        refresh_token: session.refresh_token.clone(),
    })
    .await
    .expect("Revoke");
}

async fn a_revoked_session_is_refused_by_every_replica_within_two_seconds(db: Db) {
    let test = TestDb::new(db).await;
    let url = test.config.url.expose().to_owned();
    let dir = tempfile::tempdir().expect("temporary directory");
    // X first: it migrates the store (SQLite takes no lock for that).
    let mut x = Process::start(&url, dir.path(), "x");
    x.client().await;
    let mut y = Process::start(&url, dir.path(), "y");
    let mut c = Process::start(&url, dir.path(), "c");
    y.client().await;
    let mut auth = c.client().await;
    let a = Replica::start("127.0.0.2", x.addr).await;
    let b = Replica::start("127.0.0.3", y.addr).await;
    until_current(&[&a, &b]).await;
    let mut clients = [a.client().await, b.client().await];

    let kept = log_in(&mut auth).await;
    let mut slowest = Duration::ZERO;
    for trial in 0..20 {
        let session = log_in(&mut auth).await;
        for client in clients.iter_mut() {
            assert_eq!(answer(client, &session.access_token).await, Code::NotFound);
        }
        revoke(&mut auth, &session).await;
        let took = refused_everywhere(&mut clients, &session.access_token).await;
        slowest = slowest.max(took);
        // The other session of the same user is not disturbed.
        for client in clients.iter_mut() {
            assert_eq!(
                answer(client, &kept.access_token).await,
                Code::NotFound,
                "trial {trial}"
            );
        }
    }
    eprintln!("slowest of 20 revocations to reach both replicas: {slowest:?}");

    // RevokeAll ends every session of the subject, the kept one too.
    auth.revoke_all(with_token(RevokeAllRequest::default(), &kept.access_token))
        .await
        .expect("RevokeAll");
    refused_everywhere(&mut clients, &kept.access_token).await;

    // A's feed goes down with X; a session revoked meanwhile...
    x.kill9();
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.current() {
        assert!(Instant::now() < deadline, "A never noticed its feed broke");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let missed = log_in(&mut auth).await;
    revoke(&mut auth, &missed).await;
    // ...is refused by B at once, and by A once an auth replica is back at
    // X's address: it reconnects from its cursor and catches up.
    refused_everywhere(&mut clients[1..], &missed.access_token).await;
    assert_eq!(
        answer(&mut clients[0], &missed.access_token).await,
        Code::NotFound
    );
    let lame_duck = [("KEEL_SERVER__LAME_DUCK", "0s")];
    let mut x = Process::start_at(&url, dir.path(), "x-again", x.addr, &lame_duck);
    x.client().await;
    until_current(&[&a]).await;
    refused_everywhere(&mut clients, &missed.access_token).await;
    assert!(a.counter("keel_auth_revocation_feed_reconnects_total") >= 1.0);
    // 20 trials, the kept session, the one missed.
    assert_eq!(a.counter("keel_auth_revocations_received_total"), 22.0);

    // A graceful shutdown ends the streams as it starts draining: it does
    // not wait `server.drain_timeout` (20 s) for A's, which goes elsewhere.
    let took = x.terminate();
    assert!(took < Duration::from_secs(5), "the shutdown took {took:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.current() {
        assert!(Instant::now() < deadline, "A never noticed its feed ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for replica in [a, b] {
        replica.server.stop().await.expect("replica stopped");
    }
}

keel_rpc::on_both_backends!(a_revoked_session_is_refused_by_every_replica_within_two_seconds);
