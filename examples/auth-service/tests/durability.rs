//! Durability: the real `auth-service` binary is killed with SIGKILL in the
//! middle of a burst of logins and refreshes, restarted on the same store,
//! and every token it had acknowledged is checked:
//!
//! - every acknowledged access token still validates;
//! - the last acknowledged refresh token of each session still refreshes,
//!   unless a refresh of it was in flight at the kill (then it either
//!   refreshes, the in-flight one not having committed, or is reported as
//!   reused, the in-flight one having committed);
//! - an earlier, spent refresh token is refused as reused and revokes its
//!   session, so the session's latest token is refused too.
//!
//! On SQLite (a file in a temporary directory) and on PostgreSQL.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth_service::auth_v1::auth_service_client::AuthServiceClient;
use auth_service::auth_v1::{LoginRequest, RefreshRequest, ValidateRequest};
use common::{ADMIN, ADMIN_PASSWORD, Db, Process, TestDb};
use tonic::Code;
use tonic::transport::Channel;

/// Concurrent clients in the burst.
const WORKERS: usize = 6;
/// The binary is killed once this many operations were acknowledged...
const ACKS_BEFORE_KILL: usize = 150;
/// ...or after this long, whichever comes first.
const MAX_BURST: Duration = Duration::from_secs(20);

/// What the burst learned about one session.
#[derive(Debug, Default)]
struct Session {
    /// Acknowledged refresh tokens, oldest first (the login's, then each
    /// refresh's).
    refresh_tokens: Vec<String>,
    /// Acknowledged access tokens.
    access_tokens: Vec<String>,
    /// A refresh of the last token was sent and not answered.
    in_flight: bool,
}

#[derive(Default)]
struct Ledger {
    sessions: Vec<Session>,
    acks: usize,
}

/// One client: logs in, refreshes a few times, logs in again, … until the
/// server goes away.
async fn worker(mut client: AuthServiceClient<Channel>, ledger: Arc<Mutex<Ledger>>, id: usize) {
    'sessions: for round in 0.. {
        let login = client
            .login(LoginRequest {
                username: ADMIN.into(),
                password: ADMIN_PASSWORD.into(),
            })
            .await;
        let Ok(reply) = login else {
            return;
        };
        let reply = reply.into_inner();
        let index = {
            let mut ledger = ledger.lock().unwrap();
            ledger.acks += 1;
            ledger.sessions.push(Session {
                refresh_tokens: vec![reply.refresh_token],
                access_tokens: vec![reply.access_token],
                in_flight: false,
            });
            ledger.sessions.len() - 1
        };
        for _ in 0..(2 + (id + round) % 5) {
            let token = {
                let mut ledger = ledger.lock().unwrap();
                let session = &mut ledger.sessions[index];
                session.in_flight = true;
                session.refresh_tokens.last().cloned().expect("a token")
            };
            match client
                .refresh(RefreshRequest {
                    refresh_token: token,
                    ..Default::default()
                })
                .await
            {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    let mut ledger = ledger.lock().unwrap();
                    ledger.acks += 1;
                    let session = &mut ledger.sessions[index];
                    session.in_flight = false;
                    session.refresh_tokens.push(reply.refresh_token);
                    session.access_tokens.push(reply.access_token);
                }
                // The server is gone (or going): the refresh stays "in flight".
                Err(_) => return,
            }
            if ledger.lock().unwrap().acks > 100_000 {
                break 'sessions;
            }
        }
    }
}

async fn acknowledged_tokens_survive_kill_9(db: Db) {
    let test = TestDb::new(db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = test.config.url.expose().to_owned();

    let mut first = Process::start(&url, dir.path(), "first");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut workers = Vec::new();
    for id in 0..WORKERS {
        let client = first.client().await;
        workers.push(tokio::spawn(worker(client, ledger.clone(), id)));
    }
    let started = Instant::now();
    while ledger.lock().unwrap().acks < ACKS_BEFORE_KILL && started.elapsed() < MAX_BURST {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill9();
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(30), worker)
            .await
            .expect("workers stop once the server is gone")
            .expect("worker");
    }
    let ledger = Arc::try_unwrap(ledger)
        .ok()
        .expect("workers done")
        .into_inner()
        .unwrap();
    assert!(
        ledger.acks >= ACKS_BEFORE_KILL / 2,
        "the burst acknowledged only {} operations:\n{}",
        ledger.acks,
        first.log()
    );

    let mut second = Process::start(&url, dir.path(), "second");
    let mut client = second.client().await;

    // Every acknowledged access token validates.
    let mut access_tokens = 0;
    for session in &ledger.sessions {
        for token in &session.access_tokens {
            let reply = client
                .validate(ValidateRequest {
                    access_token: token.clone(),
                })
                .await
                .expect("validate")
                .into_inner();
            assert!(reply.valid, "acknowledged access token: {}", reply.reason);
            access_tokens += 1;
        }
    }

    let refresh = |token: &str| RefreshRequest {
        refresh_token: token.to_owned(),
        ..Default::default()
    };
    let (mut continued, mut reuse_checked, mut uncertain) = (0, 0, 0);
    for (i, session) in ledger.sessions.iter().enumerate() {
        let last = session.refresh_tokens.last().expect("a token");
        if session.in_flight {
            // The in-flight refresh may or may not have committed.
            uncertain += 1;
            match client.refresh(refresh(last)).await {
                Ok(_) => {}
                Err(status) => assert_eq!(
                    (status.code(), status.message()),
                    (
                        Code::Unauthenticated,
                        "refresh token already used; its session has been revoked"
                    ),
                    "session {i}"
                ),
            }
        } else if session.refresh_tokens.len() >= 2 && i % 2 == 0 {
            // A spent token is still known as spent: reuse revokes the session.
            reuse_checked += 1;
            let spent = &session.refresh_tokens[session.refresh_tokens.len() - 2];
            let status = client.refresh(refresh(spent)).await.unwrap_err();
            assert_eq!(
                (status.code(), status.message()),
                (
                    Code::Unauthenticated,
                    "refresh token already used; its session has been revoked"
                ),
                "session {i}"
            );
            let status = client.refresh(refresh(last)).await.unwrap_err();
            assert_eq!(
                (status.code(), status.message()),
                (Code::Unauthenticated, "session revoked; log in again"),
                "session {i}"
            );
        } else {
            // The latest acknowledged token is still usable.
            continued += 1;
            client
                .refresh(refresh(last))
                .await
                .unwrap_or_else(|status| {
                    panic!("session {i}: last acknowledged refresh token refused: {status:?}")
                });
        }
    }
    assert!(
        continued > 0 && reuse_checked > 0,
        "both kinds of check ran"
    );
    eprintln!(
        "{db:?}: {} acks before kill -9; {access_tokens} access tokens valid; sessions: \
         {continued} refreshed, {reuse_checked} reuse-revoked, {uncertain} in flight",
        ledger.acks
    );
    second.kill9();
}

keel_rpc::on_both_backends!(acknowledged_tokens_survive_kill_9);

/// Three replicas on one PostgreSQL database balanced per call
/// (`Client::balance`, which ejects a replica whose calls fail in a row and
/// steers retries away from one that just failed), called through the generated client: one is killed with SIGKILL
/// in the middle of a burst of logins and refreshes, and no call fails (the
/// client's retry policy from auth.proto sends the calls it was serving to
/// the others, and a refresh whose answer was lost is recognised by its
/// `request_id`). Two refreshes of one token sent to two replicas at once
/// still give exactly one success.
#[tokio::test]
async fn three_replicas_one_killed_mid_burst_no_call_fails() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    tokio::time::timeout(Duration::from_secs(120), async {
        let test = TestDb::new(Db::Postgres).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = test.config.url.expose().to_owned();
        let mut replicas = Vec::new();
        for name in ["a", "b", "c"] {
            // (Six workers log in as one user at once, more than the
            // per-username throttle's burst: on its defaults, since only
            // failures count and 8 logins of a user may be in flight.)
            let mut replica = Process::start(&url, dir.path(), name);
            replica.client().await;
            replicas.push(replica);
        }
        let endpoints = replicas.iter().map(|r| {
            tonic::transport::Endpoint::from_shared(format!("http://{}", r.addr))
                .expect("endpoint")
                .connect_timeout(Duration::from_secs(1))
        });
        let metrics = keel_rpc::Metrics::new(&[]).expect("metrics");
        let client = keel_rpc::client::Client::from_parts(
            Duration::from_secs(10),
            keel_rpc::metrics::ClientMetrics::new(metrics.registry()).expect("client metrics"),
        );
        let auth = auth_service::auth_v1::connect_auth_service(
            client.balance("auth", endpoints).expect("balanced channel"),
            &client,
        )
        .expect("generated client");

        let acks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let (mut auth, acks, stop, failures) =
                    (auth.clone(), acks.clone(), stop.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut refreshes = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let login = auth
                            .login(LoginRequest {
                                username: ADMIN.into(),
                                password: ADMIN_PASSWORD.into(),
                            })
                            .await;
                        let mut token = match login {
                            Ok(reply) => reply.into_inner().refresh_token,
                            Err(status) => {
                                failures.lock().unwrap().push(format!("login: {status:?}"));
                                return;
                            }
                        };
                        acks.fetch_add(1, Ordering::SeqCst);
                        for _ in 0..3 {
                            // One id per refresh; the client's retries resend it.
                            refreshes += 1;
                            let refresh = RefreshRequest {
                                refresh_token: token,
                                request_id: format!("w{worker}-{refreshes}"),
                            };
                            match auth.refresh(refresh).await {
                                Ok(reply) => token = reply.into_inner().refresh_token,
                                Err(status) => {
                                    failures
                                        .lock()
                                        .unwrap()
                                        .push(format!("refresh: {status:?}"));
                                    return;
                                }
                            }
                            acks.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        let wait_for = |count: usize| {
            let acks = acks.clone();
            async move {
                let started = Instant::now();
                while acks.load(Ordering::SeqCst) < count && started.elapsed() < MAX_BURST {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        wait_for(ACKS_BEFORE_KILL).await;
        replicas[1].kill9();
        let at_kill = acks.load(Ordering::SeqCst);
        wait_for(at_kill + ACKS_BEFORE_KILL).await;
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            worker.await.expect("worker");
        }
        let failures = failures.lock().unwrap().clone();
        let after_kill = acks.load(Ordering::SeqCst) - at_kill;
        let logs: Vec<String> = replicas.iter().map(Process::log).collect();
        assert!(
            failures.is_empty(),
            "calls failed: {failures:#?}\nlogs: {logs:#?}"
        );
        assert!(
            after_kill >= ACKS_BEFORE_KILL,
            "only {after_kill} calls answered after the kill\nlogs: {logs:#?}"
        );
        let retries: f64 = metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("keel_client_retries_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        eprintln!("{at_kill} calls before the kill, {after_kill} after; {retries} retries");

        // One token, two replicas, at once: exactly one refresh succeeds.
        let mut a = replicas[0].client().await;
        let mut c = replicas[2].client().await;
        for _ in 0..5 {
            let login = a
                .login(LoginRequest {
                    username: ADMIN.into(),
                    password: ADMIN_PASSWORD.into(),
                })
                .await
                .expect("login")
                .into_inner();
            let refresh = |id: &str| RefreshRequest {
                refresh_token: login.refresh_token.clone(),
                request_id: id.to_owned(),
            };
            let (first, second) =
                tokio::join!(a.refresh(refresh("one")), c.refresh(refresh("two")));
            let won = [first.is_ok(), second.is_ok()];
            assert_eq!(
                won.iter().filter(|w| **w).count(),
                1,
                "{first:?} {second:?}"
            );
            let lost = first.err().or(second.err()).expect("a loser");
            assert_eq!(lost.code(), Code::Unauthenticated, "{lost:?}");
        }
    })
    .await
    .expect("within 120 s");
}
