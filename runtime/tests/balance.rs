//! Balanced clients over real sockets: replicas on 127.0.0.2, .3, .4 (and
//! .5) on one port, found through a DNS server in the test
//! ([`TestDns`]: hickory-server, a zone whose A records change during the
//! test), called with the health
//! service's `Check` under a retry policy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
mod common;

use common::HEALTH;
use keel_rpc::client::Client;
use keel_rpc::config::Config;
use keel_rpc::testing::TestDns;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const NAME: &str = "replicas.test.";
const REFRESH: Duration = Duration::from_millis(300);

/// A health service counting the checks it answers, after `delay`.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Health for Counting {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(HealthCheckResponse { status: 1 }))
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

/// One replica: its accept loop and connections, all ended by [`kill`]
/// (no GOAWAY: as a crash).
struct Replica {
    counting: Counting,
    tasks: JoinSet<()>,
}

impl Replica {
    fn serve(listener: TcpListener, counting: Counting) -> Self {
        let routes = tonic::service::Routes::new(HealthServer::new(counting.clone()));
        let mut tasks = JoinSet::new();
        let connections = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let held = connections.clone();
        tasks.spawn(async move {
            let _held = held;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = TowerToHyperService::new(routes.clone());
                connections.lock().expect("lock").spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Replica { counting, tasks }
    }

    fn calls(&self) -> usize {
        self.counting.calls.load(Ordering::Relaxed)
    }

    /// Ends the accept loop (the port closes) and every connection.
    fn kill(&mut self) {
        // The accept task holds the connections' set: aborting it drops them.
        self.tasks.abort_all();
    }
}

/// `count` replicas on 127.0.0.2, .3, … on one ephemeral port.
async fn replicas(count: u8) -> (u16, Vec<Replica>) {
    for _ in 0..20 {
        let first = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0))
            .await
            .expect("bind");
        let port = first.local_addr().expect("address").port();
        let mut listeners = vec![first];
        for last in 3..2 + count {
            match TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), port)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => break,
            }
        }
        if listeners.len() == usize::from(count) {
            let replicas = listeners
                .into_iter()
                .map(|l| Replica::serve(l, Counting::default()))
                .collect();
            return (port, replicas);
        }
    }
    panic!("no port free on every address");
}

/// The DNS server: one zone, `test.`, whose `replicas.test.` A records
/// are `ips`.
async fn dns(ips: &[Ipv4Addr]) -> TestDns {
    let dns = TestDns::start("test.").await.expect("DNS server");
    set(&dns, ips).await;
    dns
}

/// `replicas.test.` is `ips` from now on.
async fn set(dns: &TestDns, ips: &[Ipv4Addr]) {
    let ips: Vec<IpAddr> = ips.iter().copied().map(IpAddr::V4).collect();
    dns.set(NAME, &ips).await.expect("set records");
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A client resolving with `nameserver`, every [`REFRESH`].
fn client(nameserver: SocketAddr, registry: &prometheus::Registry) -> Client {
    let mut config = Config::<()>::default();
    config.client.default_deadline = Duration::from_secs(5);
    config.client.dns.nameservers = vec![nameserver];
    config.client.dns.refresh = REFRESH;
    config.client.dns.min_refresh = Duration::from_millis(100);
    config.client.dns.timeout = Duration::from_millis(300);
    config.client.balance.avoid_after_failure = Duration::from_millis(500);
    Client::new(&config, registry).expect("client")
}

type Checker = HealthClient<keel_rpc::client::Channel>;

fn checker(client: &Client, target: &str) -> Checker {
    let transport = client.connect(target).expect("transport");
    HealthClient::new(client.wrap(&HEALTH, transport))
}

/// `calls` checks, `workers` at a time; the failures.
async fn load(checker: &Checker, calls: usize, workers: usize) -> Vec<Status> {
    let left = Arc::new(AtomicUsize::new(calls));
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (mut checker, left) = (checker.clone(), left.clone());
        tasks.spawn(async move {
            let mut failed = Vec::new();
            while left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                if let Err(status) = checker.check(HealthCheckRequest::default()).await {
                    failed.push(status);
                }
            }
            failed
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failed.extend(done.expect("worker"));
    }
    failed
}

/// Makes the replicas equal, as a fleet's are: each answer takes 2 ms, so
/// the latencies PeakEWMA compares are the replicas' and not the noise of
/// a busy test machine scheduling microsecond calls (which gave CI spreads
/// such as `[1100, 1159, 741]` and `[126, 411, 363]`).
fn equal(replicas: &[Replica]) {
    for replica in replicas {
        replica.counting.delay_ms.store(2, Ordering::Relaxed);
    }
}

fn counts(replicas: &[Replica]) -> Vec<usize> {
    replicas.iter().map(Replica::calls).collect()
}

fn gauge(registry: &prometheus::Registry, family: &str, labels: &[(&str, &str)]) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(name, value)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *name && l.value() == *value)
            })
        })
        .map(|m| m.get_gauge().get_value() + m.get_counter().get_value())
        .sum()
}

/// One test at a time: they measure how calls spread by latency, which
/// the others' load would skew.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn within<F: std::future::Future>(limit: Duration, test: F) -> F::Output {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(limit, test)
        .await
        .expect("the test took too long")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_evenly_over_three_replicas() {
    within(Duration::from_secs(30), async {
        let (port, replicas) = replicas(3).await;
        equal(&replicas);
        let dns = dns(&[ip(2), ip(3), ip(4)]).await;
        let registry = prometheus::Registry::new();
        let target = format!("dns:///replicas.test:{port}");
        let checker = checker(&client(dns.addr(), &registry), &target);

        // Connected, and the first calls' latency (connecting included)
        // forgotten: PeakEWMA would keep calls off the replica that was
        // slowest to connect for a few `latency_decay`s.
        assert!(load(&checker, 300, 8).await.is_empty());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = counts(&replicas);
        let failed = load(&checker, 3000, 8).await;
        assert!(failed.is_empty(), "{failed:?}");
        let counts: Vec<usize> = counts(&replicas)
            .iter()
            .zip(&before)
            .map(|(after, before)| after - before)
            .collect();
        println!("calls per replica: {counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 3000);
        for count in &counts {
            assert!((25..=41).contains(&(count * 100 / 3000)), "{counts:?}");
        }
        let endpoints = [("target", target.as_str()), ("state", "ready")];
        assert_eq!(gauge(&registry, "keel_client_endpoints", &endpoints), 3.0);
        let resolved = [("target", target.as_str()), ("result", "ok")];
        assert!(gauge(&registry, "keel_client_resolutions_total", &resolved) >= 1.0);
        drop(dns);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_to_dns_gets_calls_within_refresh() {
    within(Duration::from_secs(30), async {
        let (port, replicas) = replicas(4).await;
        equal(&replicas);
        let dns = dns(&[ip(2), ip(3), ip(4)]).await;
        let registry = prometheus::Registry::new();
        let checker = checker(
            &client(dns.addr(), &registry),
            &format!("dns:///replicas.test:{port}"),
        );
        assert!(load(&checker, 300, 4).await.is_empty());
        assert_eq!(replicas[3].calls(), 0, "not in DNS yet");

        set(&dns, &[ip(2), ip(3), ip(4), ip(5)]).await;
        // Under load while the next resolution finds it.
        let during = {
            let checker = checker.clone();
            tokio::spawn(async move { load(&checker, 400, 4).await })
        };
        tokio::time::sleep(REFRESH * 2).await;
        assert!(during.await.expect("load").is_empty());
        // Its first calls paid for its connection, which PeakEWMA holds
        // against it for a moment: what follows is measured once it has
        // answered a few.
        assert!(load(&checker, 200, 8).await.is_empty());
        let before = counts(&replicas);
        assert!(load(&checker, 2000, 8).await.is_empty());
        let after = counts(&replicas);
        let added = after[3] - before[3];
        assert!(added * 100 / 2000 >= 15, "{before:?} → {after:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_fails_no_retried_call_and_gets_none_once_ejected() {
    within(Duration::from_secs(40), async {
        let (port, mut replicas) = replicas(3).await;
        let dns = dns(&[ip(2), ip(3), ip(4)]).await;
        let registry = prometheus::Registry::new();
        let target = format!("dns:///replicas.test:{port}");
        let checker = checker(&client(dns.addr(), &registry), &target);
        assert!(load(&checker, 300, 4).await.is_empty());

        let during = {
            let checker = checker.clone();
            tokio::spawn(async move { load(&checker, 3000, 8).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        replicas[2].kill();
        let failed = during.await.expect("load");
        // Every call the replica had not begun to answer is sent again. One
        // whose answer it was writing when it died is committed (its
        // headers came: gRFC A6 retries no such call) and fails UNKNOWN
        // (tonic's code for a body cut short), so of the eight in flight,
        // those may fail, and only so.
        assert!(
            failed.len() <= 8 && failed.iter().all(|s| s.code() == tonic::Code::Unknown),
            "{} failed: {:?}",
            failed.len(),
            failed.first()
        );

        // Failed calls in a row eject it (5 by default), as soon as the
        // replica that just failed is tried again.
        let ejected = [("target", target.as_str()), ("state", "ejected")];
        for _ in 0..100 {
            if gauge(&registry, "keel_client_endpoints", &ejected) == 1.0 {
                break;
            }
            assert!(load(&checker, 50, 4).await.is_empty());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(gauge(&registry, "keel_client_endpoints", &ejected), 1.0);

        // Back on its address, it gets nothing while its ejection (30 s)
        // lasts.
        let listener = TcpListener::bind(SocketAddr::from((ip(4), port)))
            .await
            .expect("bind again");
        let back = Replica::serve(listener, Counting::default());
        let failed = load(&checker, 1000, 8).await;
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(back.calls(), 0, "an ejected replica got calls");
        drop((back, dns));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_gets_few_calls() {
    within(Duration::from_secs(30), async {
        let (port, replicas) = replicas(3).await;
        replicas[1].counting.delay_ms.store(100, Ordering::Relaxed);
        let dns = dns(&[ip(2), ip(3), ip(4)]).await;
        let registry = prometheus::Registry::new();
        let checker = checker(
            &client(dns.addr(), &registry),
            &format!("dns:///replicas.test:{port}"),
        );
        let failed = load(&checker, 2000, 8).await;
        assert!(failed.is_empty(), "{failed:?}");
        let counts = counts(&replicas);
        assert!(counts[1] * 100 / 2000 < 10, "{counts:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_removed_from_dns_stops_getting_calls_and_nothing_fails() {
    within(Duration::from_secs(30), async {
        let (port, replicas) = replicas(3).await;
        let dns = dns(&[ip(2), ip(3), ip(4)]).await;
        let registry = prometheus::Registry::new();
        let checker = checker(
            &client(dns.addr(), &registry),
            &format!("dns:///replicas.test:{port}"),
        );
        assert!(load(&checker, 300, 4).await.is_empty());

        let during = {
            let checker = checker.clone();
            tokio::spawn(async move { load(&checker, 1000, 8).await })
        };
        set(&dns, &[ip(2), ip(3)]).await;
        tokio::time::sleep(REFRESH * 2).await;
        assert!(during.await.expect("load").is_empty());
        let before = counts(&replicas);
        assert!(load(&checker, 1000, 8).await.is_empty());
        let after = counts(&replicas);
        assert_eq!(after[2], before[2], "{before:?} → {after:?}");
        assert_eq!(after[0] + after[1] - before[0] - before[1], 1000);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_down_at_start_fails_calls_at_once_naming_the_target() {
    within(Duration::from_secs(20), async {
        // A port where no DNS server answers.
        let nobody = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = nobody.local_addr().expect("address");
        drop(nobody);
        let registry = prometheus::Registry::new();
        let target = "dns:///replicas.test:50051";
        let mut checker = checker(&client(addr, &registry), target);
        let started = std::time::Instant::now();
        let status = checker
            .check(HealthCheckRequest::default())
            .await
            .expect_err("no replica");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains(target), "{status:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let failed = [("target", target), ("result", "error")];
        assert!(gauge(&registry, "keel_client_resolutions_total", &failed) >= 1.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_down_later_keeps_the_last_set_serving() {
    within(Duration::from_secs(30), async {
        let (port, replicas) = replicas(3).await;
        let mut dns = dns(&[ip(2), ip(3), ip(4)]).await;
        let registry = prometheus::Registry::new();
        let target = format!("dns:///replicas.test:{port}");
        let checker = checker(&client(dns.addr(), &registry), &target);
        assert!(load(&checker, 300, 4).await.is_empty());

        dns.stop().await;
        tokio::time::sleep(REFRESH * 3).await;
        let before = counts(&replicas);
        assert!(load(&checker, 900, 8).await.is_empty());
        let after = counts(&replicas);
        for (b, a) in before.iter().zip(&after) {
            assert!(a - b >= 50, "{before:?} → {after:?}");
        }
        let failed = [("target", target.as_str()), ("result", "error")];
        assert!(gauge(&registry, "keel_client_resolutions_total", &failed) >= 1.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_is_balanced_by_the_same_machinery() {
    within(Duration::from_secs(20), async {
        let (port, replicas) = replicas(3).await;
        equal(&replicas);
        let registry = prometheus::Registry::new();
        let client = client(SocketAddr::from((ip(1), 53)), &registry);
        let endpoints = [2, 3, 4].map(|last| {
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.{last}:{port}"))
                .expect("endpoint")
        });
        let transport = client.balance("list", endpoints).expect("transport");
        assert!(transport.is_balanced());
        let checker = HealthClient::new(client.wrap(&HEALTH, transport));
        assert!(load(&checker, 900, 8).await.is_empty());
        println!("calls per replica: {:?}", counts(&replicas));
        for count in counts(&replicas) {
            assert!(count >= 150, "{:?}", counts(&replicas));
        }
    })
    .await;
}
