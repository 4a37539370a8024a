//! `CreateUser`'s per-subject rate limit (20 a second, bursts of 40) held
//! by three user-service replicas together, their buckets in a real Redis
//! of the test's own, over real sockets: offered three times the rate for
//! 10 s, spread over the replicas, the fleet admits the rate × 10 s plus
//! the burst (each replica alone would admit as much), and Redis killed
//! midway fails no call (each replica's own bucket decides, the default)
//! until it is back.

mod common;

use std::time::{Duration, Instant};

use common::{Server, config, with_token};
use keel_rpc::testing::{TestRedis, token};
use tokio::task::JoinSet;
use user_service::Users;
use user_service::user_v1::CreateUserRequest;
use user_service::user_v1::user_service_client::UserServiceClient;

/// Three replicas over one store, their rate-limit buckets in `redis`.
async fn fleet(redis: &TestRedis) -> Vec<Server> {
    let mut config = config();
    config.rate_limit.backend = Some(redis.url());
    let users = Users::in_memory().await.expect("store");
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Server::start_with(config.clone(), users.clone()).await);
    }
    replicas
}

/// `CreateUser` calls at `per_second` for `time`, in turn to each of
/// `clients`: the codes of their answers, and the longest call.
async fn offer(
    clients: &[UserServiceClient<tonic::transport::Channel>],
    token: &str,
    per_second: u32,
    time: Duration,
    start: usize,
) -> (Vec<tonic::Code>, Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    let end = Instant::now() + time;
    let mut calls = JoinSet::new();
    let mut i = start;
    while Instant::now() < end {
        tick.tick().await;
        let mut client = clients[i % clients.len()].clone();
        let request = with_token(
            CreateUserRequest {
                name: "Fleet".into(),
                email: format!("fleet{i}@example.com"),
            },
            token,
        );
        calls.spawn(async move {
            let started = Instant::now();
            let code = match client.create_user(request).await {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            };
            (code, started.elapsed())
        });
        i += 1;
    }
    let mut codes = Vec::new();
    let mut longest = Duration::ZERO;
    while let Some(done) = calls.join_next().await {
        let (code, took) = done.expect("call");
        codes.push(code);
        longest = longest.max(took);
    }
    (codes, longest)
}

fn count(codes: &[tonic::Code], code: tonic::Code) -> usize {
    codes.iter().filter(|c| **c == code).count()
}

/// `keel_server_rate_limited_total` of `CreateUser` on a replica.
async fn refused(replica: &Server) -> f64 {
    replica
        .scrape()
        .await
        .lines()
        .filter(|l| l.starts_with("keel_server_rate_limited_total{"))
        .filter(|l| l.contains(r#"grpc_method="CreateUser""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_admit_the_declared_rate_together() {
    let redis = TestRedis::start().await.expect("redis");
    let replicas = fleet(&redis).await;
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.client().await);
    }
    let token = token(&config(), "ada", &["users:write"]).expect("token");

    let (codes, _) = offer(&clients, &token, 60, Duration::from_secs(10), 0).await;
    let admitted = count(&codes, tonic::Code::Ok);
    let over = count(&codes, tonic::Code::ResourceExhausted);
    println!(
        "{} offered, {admitted} admitted, {over} over the limit",
        codes.len()
    );
    assert_eq!(
        admitted + over,
        codes.len(),
        "only the limit refuses: {codes:?}"
    );
    // 20 a second for 10 s, and the burst of 40: 240, ± 10 %.
    assert!((216..=264).contains(&admitted), "{admitted} admitted");
    let mut counted = 0.0;
    for replica in &replicas {
        counted += refused(replica).await;
    }
    assert_eq!(
        counted as usize, over,
        "every refusal counted where it was made"
    );
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_midway_fails_no_call_and_sharing_resumes() {
    let mut redis = TestRedis::start().await.expect("redis");
    let replicas = fleet(&redis).await;
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.client().await);
    }
    let token = token(&config(), "ada", &["users:write"]).expect("token");
    let second = Duration::from_secs(1);

    let (before, _) = offer(&clients, &token, 60, second, 0).await;
    redis.kill();
    let (during, longest) = offer(&clients, &token, 60, second * 2, 1000).await;
    redis.restart().await.expect("restart");
    // The client reconnects (backing off, at most 2 s apart).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (after, _) = offer(&clients, &token, 60, second * 2, 2000).await;

    for codes in [&before, &during, &after] {
        let decided = count(codes, tonic::Code::Ok) + count(codes, tonic::Code::ResourceExhausted);
        assert_eq!(decided, codes.len(), "only the limit refuses: {codes:?}");
    }
    // rate_limit.timeout (50 ms) and a call's own time bound every call.
    assert!(
        longest < Duration::from_millis(500),
        "a call took {longest:?}"
    );
    // Each replica's own bucket (40 at once each) while Redis is down:
    // more than the fleet's 40 + 2 s × 20.
    assert!(count(&during, tonic::Code::Ok) > 80, "{during:?}");
    // Back: one bucket again (fresh, as Redis lost it): its burst and 2 s
    // of the rate, ± 10 %.
    let admitted = count(&after, tonic::Code::Ok);
    assert!(
        (72..=88).contains(&admitted),
        "{admitted} admitted: {after:?}"
    );
    for replica in replicas {
        replica.stop().await;
    }
}
