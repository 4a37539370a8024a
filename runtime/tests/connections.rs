//! The gRPC port's connections over real sockets, on 127.0.0.0/8:
//! - `server.max_connection_age`: clients behind one address (an L4
//!   balancer in the test) spread over a replica added after they
//!   connected, and recycling their connections fails no call, of a method
//!   without a retry policy (Keel's clients send a call a `GOAWAY` refused
//!   again, at once). Which replica answered is told by the health status
//!   each one gives the name `who`: `SERVING` on 127.0.0.2, `NOT_SERVING`
//!   on 127.0.0.3.
//! - a `dns:///` client resolves again when a replica's connection ages
//!   out, so it finds a replica added to DNS long before `client.dns.refresh`;
//! - keepalive enforcement: a client (the h2 crate's) pinging without
//!   calls is sent `GOAWAY` `ENHANCE_YOUR_CALM`; one pinging between calls
//!   is not.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, ServicePolicy};
use keel_rpc::config::{AuthConfig, Config, Secret};
use keel_rpc::serve::Listeners;
use keel_rpc::testing::{TestDns, TestServer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// `Check` without a retry policy: a call that fails, fails.
static HEALTH: ServicePolicy = ServicePolicy {
    name: "grpc.health.v1.Health",
    methods: &[MethodPolicy::new(
        "Check",
        "/grpc.health.v1.Health/Check",
        MethodKind::Unary,
        Access::Public,
    )],
    route: |path| match path {
        "/grpc.health.v1.Health/Check" => Some(0),
        _ => None,
    },
};

const AGE: Duration = Duration::from_secs(1);

/// A replica on `ip` (ephemeral port), whose connections live [`AGE`],
/// answering `who` with `status`.
async fn replica(ip: Ipv4Addr, status: ServingStatus) -> TestServer {
    let grpc = TcpListener::bind((ip, 0)).await.expect("bind");
    replica_on(grpc, status).await
}

/// [`replica`], on `grpc`.
async fn replica_on(grpc: TcpListener, status: ServingStatus) -> TestServer {
    let mut config = config();
    config.server.max_connection_age = Some(AGE);
    config.server.max_connection_age_grace = Some(Duration::from_secs(10));
    let keel = keel_rpc::Keel::new(&config, &[]).expect("keel");
    let server = keel.server(&config);
    server.health().set("who", status);
    let listeners = Listeners {
        grpc,
        metrics: Some(TcpListener::bind("127.0.0.1:0").await.expect("bind")),
    };
    TestServer::start_on(server, listeners).expect("start")
}

/// A server's configuration: production, no lame duck.
fn config() -> Config<()> {
    let mut config = Config::<()> {
        auth: AuthConfig {
            hmac_secret: Some(Secret::new("0123456789abcdef0123456789abcdef-test")),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    config.server.lame_duck = Duration::ZERO;
    config
}

/// An L4 balancer: each connection it accepts goes to the next of its
/// backends, round robin, and stays there.
struct L4 {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    _accepting: JoinSet<()>,
}

impl L4 {
    async fn start(backends: Vec<SocketAddr>) -> L4 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let backends = Arc::new(Mutex::new(backends));
        let shared = backends.clone();
        let mut accepting = JoinSet::new();
        accepting.spawn(async move {
            let mut next = 0;
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let backend = {
                    let backends = shared.lock().expect("lock");
                    next += 1;
                    backends[next % backends.len()]
                };
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        L4 {
            addr,
            backends,
            _accepting: accepting,
        }
    }

    fn add(&self, backend: SocketAddr) {
        self.backends.lock().expect("lock").push(backend);
    }
}

type Checker = HealthClient<keel_rpc::client::Channel>;

/// Calls `Check { service: "who" }` for `time`, `workers` at a time over
/// the checkers in turn: how many each replica answered, and the failures.
async fn load(checkers: &[Checker], time: Duration, workers: usize) -> ([usize; 2], Vec<String>) {
    let end = tokio::time::Instant::now() + time;
    let answered = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let mut checker = checkers[worker % checkers.len()].clone();
        let answered = answered.clone();
        tasks.spawn(async move {
            let mut failed = Vec::new();
            while tokio::time::Instant::now() < end {
                let request = HealthCheckRequest {
                    service: "who".into(),
                };
                match checker.check(request).await {
                    Ok(response) => match response.into_inner().status() {
                        ServingStatus::Serving => answered[0].fetch_add(1, Ordering::Relaxed),
                        _ => answered[1].fetch_add(1, Ordering::Relaxed),
                    },
                    Err(status) => {
                        failed.push(format!("{:?}: {}", status.code(), status.message()));
                        0
                    }
                };
            }
            failed
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failed.extend(done.expect("worker"));
    }
    let answered = [0, 1].map(|i| answered[i].load(Ordering::Relaxed));
    (answered, failed)
}

/// The value of `server`'s `/metrics` series `series` (its name and
/// labels, as printed), 0 when it is not there.
async fn scrape(server: &TestServer, series: &str) -> f64 {
    let text = server.scrape().await.expect("/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_one_address_reach_a_replica_added_later_and_no_call_fails() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let first = replica(Ipv4Addr::new(127, 0, 0, 2), ServingStatus::Serving).await;
        let second = replica(Ipv4Addr::new(127, 0, 0, 3), ServingStatus::NotServing).await;
        let balancer = L4::start(vec![first.addr()]).await;

        // Four connections through the balancer, all to the first replica.
        let registry = prometheus::Registry::new();
        let mut config = Config::<()>::default();
        config.client.default_deadline = Duration::from_secs(5);
        let client = keel_rpc::client::Client::new(&config, &registry).expect("client");
        let url = format!("http://{}", balancer.addr);
        let checkers: Vec<Checker> = (0..4)
            .map(|_| HealthClient::new(client.wrap(&HEALTH, client.connect(&url).expect("url"))))
            .collect();
        let (answered, failed) = load(&checkers, Duration::from_millis(500), 8).await;
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(
            answered[1], 0,
            "the second replica is not behind the balancer yet"
        );

        // Added: clients reach it as their connections age and reconnect.
        balancer.add(second.addr());
        let (_, failed) = load(&checkers, AGE * 3, 8).await;
        let aged = r#"keel_server_connections_closed_total{reason="max_connection_age"}"#;
        let recycled = scrape(&first, aged).await;
        assert!(recycled >= 4.0, "{recycled} connections aged out");
        assert!(
            failed.is_empty(),
            "{} of the calls made while connections were recycled failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );

        let (answered, failed) = load(&checkers, Duration::from_secs(1), 8).await;
        assert!(failed.is_empty(), "{failed:?}");
        let share = answered[1] * 100 / (answered[0] + answered[1]).max(1);
        assert!(share >= 20, "the added replica answered {answered:?}");
        let transparent = registry
            .gather()
            .iter()
            .filter(|f| f.name() == "keel_client_transparent_retries_total")
            .flat_map(|f| f.get_metric().iter())
            .map(|m| m.get_counter().get_value())
            .sum::<f64>();
        println!("{recycled} connections recycled, {transparent} calls sent again, {answered:?}");
        first.stop().await.expect("stop");
        second.stop().await.expect("stop");
    })
    .await
    .expect("the test took too long");
}

/// A `Check` over a raw HTTP/2 connection: its `grpc-status`.
async fn check(send: &mut h2::client::SendRequest<bytes::Bytes>, addr: SocketAddr) -> String {
    let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let ready = send.clone().ready().await.expect("ready");
    *send = ready;
    let (response, mut stream) = send.send_request(request, false).expect("send");
    // An empty HealthCheckRequest: no compression, length 0.
    stream
        .send_data(bytes::Bytes::from_static(&[0; 5]), true)
        .expect("data");
    let mut body = response.await.expect("response").into_body();
    while let Some(data) = body.data().await {
        let data = data.expect("data");
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    let status = trailers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    status.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinging_without_calls_is_told_to_calm_down() {
    tokio::time::timeout(Duration::from_secs(20), async {
        // The default: 5 min between pings without calls.
        let keel_config = config();
        let keel = keel_rpc::Keel::new(&keel_config, &[]).expect("keel");
        let server = TestServer::start(keel.server(&keel_config))
            .await
            .expect("start");
        let addr = server.addr();

        // Pings between calls are fine, however often.
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut send, mut connection) = h2::client::handshake(tcp).await.expect("handshake");
        let mut pings = connection.ping_pong().expect("pings");
        let calm = tokio::spawn(connection);
        for _ in 0..5 {
            assert_eq!(check(&mut send, addr).await, "0");
            pings.ping(h2::Ping::opaque()).await.expect("pong");
        }
        assert_eq!(check(&mut send, addr).await, "0", "still served");
        drop((send, pings));
        assert!(calm.await.expect("task").is_ok(), "closed cleanly");

        // Pings alone: the third too soon gets GOAWAY ENHANCE_YOUR_CALM.
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (send, mut connection) = h2::client::handshake(tcp).await.expect("handshake");
        let mut pings = connection.ping_pong().expect("pings");
        let ended = tokio::spawn(connection);
        let mut answered = 0;
        for _ in 0..6 {
            if pings.ping(h2::Ping::opaque()).await.is_err() {
                break;
            }
            answered += 1;
        }
        let error = ended
            .await
            .expect("task")
            .expect_err("the server ends the connection");
        assert_eq!(
            error.reason(),
            Some(h2::Reason::ENHANCE_YOUR_CALM),
            "{error}"
        );
        assert!(error.is_go_away() && error.is_remote(), "{error}");
        assert!(answered <= 4, "{answered} pings answered");
        drop(send);

        let refused = r#"keel_server_connections_closed_total{reason="too_many_pings"}"#;
        assert_eq!(scrape(&server, refused).await, 1.0);
        server.stop().await.expect("stop");
    })
    .await
    .expect("the test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_has_a_dns_client_resolve_again_before_its_refresh() {
    tokio::time::timeout(Duration::from_secs(30), async {
        // Two replicas on one port, of 127.0.0.2 and .3.
        let (first, second) = 'ports: {
            for _ in 0..20 {
                let a = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0))
                    .await
                    .expect("bind");
                let port = a.local_addr().expect("address").port();
                if let Ok(b) = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 3), port)).await {
                    break 'ports (a, b);
                }
            }
            panic!("no port free on both addresses");
        };
        let port = first.local_addr().expect("address").port();
        let first = replica_on(first, ServingStatus::Serving).await;
        let second = replica_on(second, ServingStatus::NotServing).await;
        let dns = TestDns::start("test.").await.expect("DNS");
        dns.set("who.test.", &[Ipv4Addr::new(127, 0, 0, 2).into()])
            .await
            .expect("records");

        // Resolving every minute, at most every 100 ms when nudged.
        let registry = prometheus::Registry::new();
        let mut config = Config::<()>::default();
        config.client.default_deadline = Duration::from_secs(5);
        config.client.dns.nameservers = vec![dns.addr()];
        config.client.dns.refresh = Duration::from_secs(60);
        config.client.dns.min_refresh = Duration::from_millis(100);
        let client = keel_rpc::client::Client::new(&config, &registry).expect("client");
        let target = format!("dns:///who.test:{port}");
        let checker =
            HealthClient::new(client.wrap(&HEALTH, client.connect(&target).expect("target")));
        let checkers = [checker];
        let (answered, failed) = load(&checkers, Duration::from_millis(300), 4).await;
        assert!(
            failed.is_empty() && answered[1] == 0,
            "{answered:?} {failed:?}"
        );

        // Added to DNS: found once the first replica's connection, idle,
        // ages out (no call fails to tell the client), and a call
        // reconnects.
        dns.set(
            "who.test.",
            &[
                Ipv4Addr::new(127, 0, 0, 2).into(),
                Ipv4Addr::new(127, 0, 0, 3).into(),
            ],
        )
        .await
        .expect("records");
        tokio::time::sleep(AGE * 2).await;
        let (answered, failed) = load(&checkers, Duration::from_millis(500), 4).await;
        assert!(failed.is_empty(), "{failed:?}");
        assert!(
            answered[1] > 0,
            "the added replica got no call: {answered:?}"
        );
        first.stop().await.expect("stop");
        second.stop().await.expect("stop");
    })
    .await
    .expect("the test took too long");
}
