//! A dependency that fails everything for a while, called by many workers
//! through a Keel client over a real socket: its retry budget and breaker
//! keep the calls reaching it below the calls made, callers fail fast, and
//! traffic resumes on its own once it answers again.

use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::HEALTH;
use keel_rpc::client::Client;
use keel_rpc::config::Config;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// A health service that answers `UNAVAILABLE` while `failing`, counting
/// every attempt that reaches it.
#[derive(Clone, Default)]
struct Dependency {
    failing: Arc<AtomicBool>,
    reached: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Health for Dependency {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.reached.fetch_add(1, Ordering::Relaxed);
        match self.failing.load(Ordering::Relaxed) {
            true => Err(Status::unavailable("overloaded")),
            false => Ok(Response::new(HealthCheckResponse { status: 1 })),
        }
    }

    type WatchStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// The dependency on 127.0.0.2, an ephemeral port; its URL.
async fn serve(dependency: Dependency) -> String {
    let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0))
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(dependency))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    url
}

type Checker = HealthClient<keel_rpc::client::Channel>;

fn checker(config: &Config, registry: &prometheus::Registry, url: &str) -> Checker {
    let client = Client::new(config, registry).expect("client");
    let transport = client.connect(url).expect("transport");
    HealthClient::new(client.wrap(&HEALTH, transport))
}

/// What the workers saw over a phase.
#[derive(Debug, Default)]
struct Phase {
    calls: usize,
    ok: usize,
    /// How long each failed call took.
    failures: Vec<Duration>,
    /// The last failure's status.
    last_failure: Option<Status>,
    /// When the first successful call started, after the phase's start.
    first_ok: Option<Duration>,
}

/// Calls from `workers` tasks, each pausing 1 ms between calls, for `length`.
async fn drive(checker: &Checker, workers: usize, length: Duration) -> Phase {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let mut checker = checker.clone();
        tasks.spawn(async move {
            let mut phase = Phase::default();
            while start.elapsed() < length {
                let began = Instant::now();
                let result = checker.check(HealthCheckRequest::default()).await;
                phase.calls += 1;
                match result {
                    Ok(_) => {
                        phase.ok += 1;
                        phase.first_ok.get_or_insert(began - start);
                    }
                    Err(status) => {
                        phase.failures.push(began.elapsed());
                        phase.last_failure = Some(status);
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            phase
        });
    }
    let mut all = Phase::default();
    while let Some(done) = tasks.join_next().await {
        let phase = done.expect("worker");
        all.calls += phase.calls;
        all.ok += phase.ok;
        all.failures.extend(phase.failures);
        all.last_failure = all.last_failure.or(phase.last_failure);
        all.first_ok = match (all.first_ok, phase.first_ok) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    all
}

fn percentile(durations: &mut [Duration], p: f64) -> Duration {
    durations.sort();
    let at = ((durations.len() as f64 * p) as usize).min(durations.len().saturating_sub(1));
    durations.get(at).copied().unwrap_or_default()
}

fn value(registry: &prometheus::Registry, family: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_gauge().get_value() + m.get_counter().get_value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_not_made_worse_and_calls_resume_when_it_ends() {
    tokio::time::timeout(Duration::from_secs(40), async {
        let dependency = Dependency::default();
        let url = serve(dependency.clone()).await;
        let registry = prometheus::Registry::new();
        let checker = checker(&Config::default(), &registry, &url);

        let healthy = drive(&checker, 4, Duration::from_millis(500)).await;
        assert_eq!(healthy.ok, healthy.calls, "{healthy:?}");

        // Ten seconds of UNAVAILABLE: the first two, while the breaker's
        // window (2 s) fills with failures, then eight.
        dependency.failing.store(true, Ordering::Relaxed);
        let reached = || dependency.reached.load(Ordering::Relaxed);
        let before = reached();
        let start = drive(&checker, 4, Duration::from_secs(2)).await;
        let middle = reached();
        let mut outage = drive(&checker, 4, Duration::from_secs(8)).await;
        let (first, last) = (middle - before, reached() - middle);
        println!(
            "outage: {} and {} calls made, {first} and {last} reached the dependency",
            start.calls, outage.calls
        );
        assert_eq!(start.ok + outage.ok, 0);
        let calls = start.calls + outage.calls;
        assert!(
            (first + last) as f64 <= 1.1 * calls as f64,
            "{} attempts for {calls} calls",
            first + last
        );
        // Then a probe every second or so.
        assert!(last <= 12, "{last} reached the dependency in 8 s");
        let p99 = percentile(&mut outage.failures, 0.99);
        println!("outage: failed calls' p99 {p99:?}");
        assert!(p99 < Duration::from_millis(10), "p99 {p99:?}");
        let refused = outage.last_failure.clone().expect("calls failed");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(
            refused
                .message()
                .starts_with("grpc.health.v1.Health is failing"),
            "{refused:?}"
        );
        assert!(value(&registry, "keel_client_breaker_rejected_total") > 0.0);
        assert_eq!(value(&registry, "keel_client_breaker_open"), 1.0);

        // It answers again: within a probe's `open_for` (1 s ± 10 %), and
        // everything after the first success succeeds.
        dependency.failing.store(false, Ordering::Relaxed);
        let recovery = drive(&checker, 4, Duration::from_secs(3)).await;
        let first_ok = recovery.first_ok.expect("calls succeed again");
        println!(
            "recovery: first success after {first_ok:?}, {} of {} calls ok",
            recovery.ok, recovery.calls
        );
        assert!(first_ok < Duration::from_secs(5), "{first_ok:?}");
        let after = drive(&checker, 4, Duration::from_millis(500)).await;
        assert_eq!(after.ok, after.calls, "{after:?}");
        assert_eq!(value(&registry, "keel_client_breaker_open"), 0.0);
    })
    .await
    .expect("the test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_breaker_the_retry_budget_alone_bounds_the_attempts() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let dependency = Dependency::default();
        let url = serve(dependency.clone()).await;
        let registry = prometheus::Registry::new();
        let mut config = Config::<()>::default();
        config.client.breaker.enabled = false;
        config.client.retry_budget.max_tokens = 10;
        let checker = checker(&config, &registry, &url);

        dependency.failing.store(true, Ordering::Relaxed);
        let outage = drive(&checker, 4, Duration::from_secs(2)).await;
        let reached = dependency.reached.load(Ordering::Relaxed);
        println!(
            "{} calls made, {reached} reached the dependency",
            outage.calls
        );
        // Every call is sent once, and retried only while the budget lasts:
        // 10 tokens, retried while more than 5 are left, so at most four
        // retries (three when one call's last attempt takes a token).
        let retries = value(&registry, "keel_client_retries_total");
        assert!((3.0..=4.0).contains(&retries), "{retries} retries");
        assert_eq!(reached, outage.calls + retries as usize, "{outage:?}");
        assert!(value(&registry, "keel_client_retries_throttled_total") > 0.0);

        // Successes give tokens back (0.1 each): after 100 calls (+10
        // tokens, back to the maximum), a failure is retried again.
        dependency.failing.store(false, Ordering::Relaxed);
        let healthy = drive(&checker, 1, Duration::from_millis(500)).await;
        assert!(healthy.calls >= 100, "{healthy:?}");
        dependency.failing.store(true, Ordering::Relaxed);
        let mut checker = checker.clone();
        let _ = checker.check(HealthCheckRequest::default()).await;
        // 10 → 9 and 8: retried; 7, after the last attempt: not.
        assert_eq!(value(&registry, "keel_client_retries_total"), retries + 2.0);
    })
    .await
    .expect("the test took too long");
}
