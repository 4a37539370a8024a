//! `[rate_limit] backend`: the buckets of rate-limited methods kept in a
//! real Redis (a `redis-server` of each test's own, [`TestRedis`]),
//! through the pipeline in the process (no network but Redis): runtimes
//! sharing a bucket, keys that expire, and what each
//! `rate_limit.on_backend_error` mode does while Redis is down or hangs.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, RateKey, RateLimit, ServicePolicy};
use keel_rpc::config::{AuthConfig, Config, OnBackendError, Secret};
use keel_rpc::testing::TestRedis;
use tokio::task::JoinSet;
use tower::ServiceExt;

const fn limited(name: &'static str, path: &'static str, limit: RateLimit) -> MethodPolicy {
    MethodPolicy {
        rate_limit: Some(limit),
        ..MethodPolicy::new(name, path, MethodKind::Unary, Access::Public)
    }
}

static POLICY: ServicePolicy = ServicePolicy {
    name: "test.v1.Shared",
    methods: &[
        // One bucket per address: 1 a second, 5 at once.
        limited(
            "PerPeer",
            "/test.v1.Shared/PerPeer",
            RateLimit {
                per_second: 1.0,
                burst: 5,
                key: RateKey::Peer,
            },
        ),
        // One bucket: 10 a second, 10 at once.
        limited(
            "Global",
            "/test.v1.Shared/Global",
            RateLimit {
                per_second: 10.0,
                burst: 10,
                key: RateKey::Global,
            },
        ),
    ],
    route: |path| match path {
        "/test.v1.Shared/PerPeer" => Some(0),
        "/test.v1.Shared/Global" => Some(1),
        _ => None,
    },
};

type Counted = keel_rpc::pipeline::CountingBody<tonic::body::Body>;
type Shared = keel_rpc::Pipeline<
    tower::util::ServiceFn<
        fn(
            http::Request<Counted>,
        ) -> std::future::Ready<Result<http::Response<tonic::body::Body>, Infallible>>,
    >,
>;

fn ok(
    _: http::Request<Counted>,
) -> std::future::Ready<Result<http::Response<tonic::body::Body>, Infallible>> {
    let response = http::Response::builder()
        .header("grpc-status", "0")
        .body(tonic::body::Body::empty())
        .expect("response");
    std::future::ready(Ok(response))
}

/// A runtime (a replica, for the buckets' sake) of `POLICY` whose buckets
/// are in `redis`.
fn replica(redis: &TestRedis, prefix: &str, on_error: OnBackendError) -> (keel_rpc::Keel, Shared) {
    runtime(&replica_config(redis, prefix, on_error))
}

/// The runtime of `config`, and `POLICY` wrapped by it.
fn runtime(config: &Config<()>) -> (keel_rpc::Keel, Shared) {
    let keel = keel_rpc::Keel::new(config, &[&POLICY]).expect("keel");
    let handler: fn(_) -> _ = ok;
    let service = keel
        .wrap(&POLICY, tower::service_fn(handler))
        .expect("wrap");
    (keel, service)
}

/// The configuration of a [`replica`].
fn replica_config(redis: &TestRedis, prefix: &str, on_error: OnBackendError) -> Config<()> {
    let mut config = Config::<()> {
        auth: AuthConfig {
            hmac_secret: Some(Secret::new("0123456789abcdef0123456789abcdef-test")),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    config.rate_limit.backend = Some(redis.url());
    config.rate_limit.key_prefix = prefix.to_owned();
    config.rate_limit.on_backend_error = on_error;
    config.rate_limit.timeout = Duration::from_millis(50);
    config.rate_limit.retry_after = Duration::from_millis(300);
    config
}

/// A call of `path` from `from`, as tonic's server hands it on.
fn request(path: &str, from: [u8; 4]) -> http::Request<tonic::body::Body> {
    let mut req = http::Request::post(path)
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::empty())
        .expect("request");
    req.extensions_mut()
        .insert(tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(std::net::SocketAddr::from((from, 40_000))),
        });
    req
}

/// The `grpc-status` of a call of `path` from `from`, and how long it took.
async fn call(service: &Shared, path: &str, from: [u8; 4]) -> (String, Duration) {
    let started = Instant::now();
    let res = service
        .clone()
        .oneshot(request(path, from))
        .await
        .expect("answered");
    let status = res
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .unwrap_or_else(|| "trailers".into());
    (status, started.elapsed())
}

/// `count` calls of `Global`, alternating over `replicas`: the codes, and
/// the longest call.
async fn global_calls(replicas: &[&Shared], count: usize) -> (Vec<String>, Duration) {
    let mut codes = Vec::new();
    let mut longest = Duration::ZERO;
    for i in 0..count {
        let (code, took) = call(
            replicas[i % replicas.len()],
            "/test.v1.Shared/Global",
            [10, 0, 0, 1],
        )
        .await;
        codes.push(code);
        longest = longest.max(took);
    }
    (codes, longest)
}

/// `keel_rate_limit_backend_errors_total` of a runtime.
fn backend_errors(keel: &keel_rpc::Keel) -> f64 {
    keel.metrics()
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "keel_rate_limit_backend_errors_total")
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_counter().get_value())
        .sum()
}

fn count(codes: &[String], code: &str) -> usize {
    codes.iter().filter(|c| *c == code).count()
}

async fn redis_command(redis: &TestRedis, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query_async(&mut connection).await.expect("query")
}

async fn keys(redis: &TestRedis) -> i64 {
    match redis_command(redis, &["DBSIZE"]).await {
        redis::Value::Int(n) => n,
        other => panic!("DBSIZE: {other:?}"),
    }
}

async fn used_memory(redis: &TestRedis) -> u64 {
    let info = match redis_command(redis, &["INFO", "memory"]).await {
        redis::Value::VerbatimString { text, .. } => text,
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        other => panic!("INFO: {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
        .expect("used_memory")
}

/// 30 calls of `Global` alternating over two replicas, in well under a
/// second: the burst of 10, and about one more per 100 ms, for both
/// together (each alone would admit 10 more). The codes, and how many were
/// admitted.
async fn one_bucket_for_both(first: &Shared, second: &Shared) -> (Vec<String>, usize) {
    let started = Instant::now();
    let (codes, _) = global_calls(&[first, second], 30).await;
    let refill = (started.elapsed().as_millis() / 100) as usize + 1;
    let admitted = count(&codes, "0");
    assert!(
        (10..=10 + refill).contains(&admitted),
        "{admitted} admitted: {codes:?}"
    );
    (codes, admitted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_is_shared_over_rediss_checked_against_the_client_tls_cas() {
    // A certificate for 127.0.0.1, made here; Redis serves only TLS with it,
    // and wants a password.
    let dir = tempfile::tempdir().expect("temporary directory");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let (cert, key) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    const PASSWORD: &str = "redis-password-of-the-test";
    let redis = TestRedis::start_secured(&cert, &key, PASSWORD)
        .await
        .expect("redis");
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let with = |ca: Option<&std::path::Path>, password: &str| {
        let mut config = replica_config(&redis, "tls:", OnBackendError::Local);
        config.client.tls.ca_file = ca.map(Into::into);
        config.rate_limit.password = Some(Secret::new(password));
        runtime(&config)
    };
    // Two replicas that trust the certificate and know the password draw on
    // one bucket.
    let (_a, first) = with(Some(&cert), PASSWORD);
    let (_b, second) = with(Some(&cert), PASSWORD);
    one_bucket_for_both(&first, &second).await;
    // One that does not trust it (the system's CAs), and one with another
    // password, never get an answer from it: each of their calls is a
    // backend error, decided by the replica's own bucket.
    for (ca, password) in [(None, PASSWORD), (Some(cert.as_path()), "not-the-password")] {
        let (keel, service) = with(ca, password);
        let (codes, _) = global_calls(&[&service], 5).await;
        assert_eq!(count(&codes, "0"), 5, "its own bucket of 10: {codes:?}");
        assert!(backend_errors(&keel) >= 1.0, "{ca:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_draw_on_one_bucket() {
    let redis = TestRedis::start().await.expect("redis");
    let (_a, first) = replica(&redis, "share:", OnBackendError::Local);
    let (_b, second) = replica(&redis, "share:", OnBackendError::Local);
    let (codes, admitted) = one_bucket_for_both(&first, &second).await;
    assert_eq!(
        count(&codes, "8"),
        30 - admitted,
        "the rest RESOURCE_EXHAUSTED: {codes:?}"
    );
    // A replica's refusal says when to retry, as without Redis.
    let req = request("/test.v1.Shared/Global", [10, 0, 0, 1]);
    let res = first.clone().oneshot(req).await.expect("answered");
    let status = tonic::Status::from_header_map(res.headers()).expect("a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d <= Duration::from_millis(100)),
        "{retry:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buckets_of_rotating_callers_expire_and_memory_comes_back() {
    let redis = TestRedis::start().await.expect("redis");
    let (keel, service) = replica(&redis, "rotate:", OnBackendError::Deny);
    let baseline = used_memory(&redis).await;
    // 100 000 callers, one call each: a bucket each, gone a second later.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..64 {
        let (service, next) = (service.clone(), next.clone());
        tasks.spawn(async move {
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 100_000 {
                    return failed;
                }
                let from = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
                if call(&service, "/test.v1.Shared/PerPeer", from).await.0 != "0" {
                    failed += 1;
                }
            }
        });
    }
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        failed += done.expect("caller");
    }
    assert_eq!(failed, 0, "every caller's first call is admitted");
    let peak = keys(&redis).await;
    assert!(peak > 0, "the last second's callers have buckets");
    assert_eq!(backend_errors(&keel), 0.0, "Redis answered every call");
    // Full again after a second: their keys expire.
    let deadline = Instant::now() + Duration::from_secs(10);
    while keys(&redis).await > 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = keys(&redis).await;
    assert!(left <= 10, "{left} keys left of a peak of {peak}");
    let memory = used_memory(&redis).await;
    assert!(
        memory < baseline + 2 * 1024 * 1024,
        "Redis holds {memory} bytes, {baseline} before the callers"
    );
}

/// While Redis hangs, then while it is down, and once it is back: what
/// `mode` makes of 20 calls of `Global` over two replicas each time.
async fn outage(mode: OnBackendError) -> [Vec<String>; 3] {
    let mut redis = TestRedis::start().await.expect("redis");
    let prefix = format!("{mode:?}:");
    let (a, first) = replica(&redis, &prefix, mode);
    let (b, second) = replica(&redis, &prefix, mode);
    let replicas = [&first, &second];
    let errors = || backend_errors(&a) + backend_errors(&b);
    let (codes, _) = global_calls(&replicas, 20).await;
    assert!(
        count(&codes, "0") <= 13,
        "shared while Redis is up: {codes:?}"
    );

    // Hung: each call waits rate_limit.timeout (50 ms) at most, then the
    // mode decides; after a failure calls skip Redis for retry_after.
    redis.pause();
    let (hung, longest) = global_calls(&replicas, 20).await;
    assert!(
        longest < Duration::from_millis(100),
        "a call waited {longest:?}"
    );
    redis.resume();
    redis.kill();
    let (down, longest) = global_calls(&replicas, 20).await;
    assert!(
        longest < Duration::from_millis(100),
        "a call waited {longest:?}"
    );

    assert!(errors() > 0.0, "counted");

    // Back (empty): once the client has reconnected (a round that Redis
    // answered whole) and the bucket has refilled, it is shared again.
    redis.restart().await.expect("restart");
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let before = errors();
        global_calls(&replicas, 2).await;
        if errors() == before {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = errors();
    let (back, _) = global_calls(&replicas, 20).await;
    assert_eq!(errors(), before, "Redis answered: {back:?}");
    [hung, down, back]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_each_mode_decides_without_waiting_and_sharing_resumes() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let shared = |back: &[String]| {
            let admitted = count(back, "0");
            assert!((9..=13).contains(&admitted), "shared again: {back:?}");
            assert_eq!(admitted + count(back, "8"), 20, "{back:?}");
        };
        // local: each replica's own bucket (10 at once each, untouched
        // while Redis answered), then what is left of them.
        let [hung, down, back] = outage(OnBackendError::Local).await;
        assert!(
            count(&hung, "0") >= 18,
            "each replica's own burst: {hung:?}"
        );
        for codes in [&hung, &down] {
            assert_eq!(count(codes, "0") + count(codes, "8"), 20, "{codes:?}");
        }
        shared(&back);
        // allow: every call passes.
        let [hung, down, back] = outage(OnBackendError::Allow).await;
        assert_eq!(count(&hung, "0"), 20, "{hung:?}");
        assert_eq!(count(&down, "0"), 20, "{down:?}");
        shared(&back);
        // deny: every call is refused UNAVAILABLE.
        let [hung, down, back] = outage(OnBackendError::Deny).await;
        assert_eq!(count(&hung, "14"), 20, "{hung:?}");
        assert_eq!(count(&down, "14"), 20, "{down:?}");
        shared(&back);
    })
    .await
    .expect("the test took too long");
}
