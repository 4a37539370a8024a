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

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth_service::auth_v1::auth_service_client::AuthServiceClient;
use auth_service::auth_v1::{LoginRequest, RefreshRequest, ValidateRequest};
use common::{ADMIN, ADMIN_PASSWORD, Db, TestDb};
use tonic::Code;
use tonic::transport::Channel;

/// Concurrent clients in the burst.
const WORKERS: usize = 6;
/// The binary is killed once this many operations were acknowledged...
const ACKS_BEFORE_KILL: usize = 150;
/// ...or after this long, whichever comes first.
const MAX_BURST: Duration = Duration::from_secs(20);

/// A running `auth-service` child process, killed when dropped.
struct Process {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Process {
    fn start(store_url: &str, dir: &std::path::Path, name: &str) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_auth-service"));
        // Only this test's configuration: no KEEL_* variable of the caller.
        for (key, _) in std::env::vars_os() {
            if key
                .to_string_lossy()
                .to_ascii_uppercase()
                .starts_with("KEEL_")
            {
                command.env_remove(key);
            }
        }
        command
            .current_dir(dir)
            .env("KEEL_SERVICE__ENVIRONMENT", "development")
            .env("KEEL_SERVER__ADDR", addr.to_string())
            .env("KEEL_METRICS__ENABLED", "false")
            .env("KEEL_STORE__URL", store_url)
            .env("KEEL_PASSWORDS__MEMORY_KIB", "64")
            .env("KEEL_PASSWORDS__ITERATIONS", "1")
            .env("KEEL_BOOTSTRAP__ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = command.spawn().expect("spawn auth-service");
        Process { child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A connected client, once the service answers (within 30 s).
    async fn client(&mut self) -> AuthServiceClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("auth-service exited with {status}:\n{}", self.log());
            }
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
                .expect("endpoint")
                .timeout(Duration::from_secs(10));
            if let Ok(channel) = endpoint.connect().await {
                let mut client = AuthServiceClient::new(channel);
                if client
                    .get_jwks(auth_service::auth_v1::GetJwksRequest {})
                    .await
                    .is_ok()
                {
                    return client;
                }
            }
            assert!(
                Instant::now() < deadline,
                "auth-service did not come up:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

on_both_backends!(acknowledged_tokens_survive_kill_9);
