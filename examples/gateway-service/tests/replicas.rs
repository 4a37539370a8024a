//! The gateway calling three user-service replicas by name, as in
//! Kubernetes behind a headless Service: `dns:///users.test:PORT`, the
//! name served by a DNS server in the test ([`TestDns`]) with one A record
//! per replica (127.0.0.2, .3, .4, on one port; one store). Every call
//! succeeds, each replica serves its share, and a replica taken out of DNS
//! and then stopped, as a scale-down does, fails no call.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gateway_service::gateway_v1::GetProfileRequest;
use gateway_service::gateway_v1::profile_service_client::ProfileServiceClient;
use keel_rpc::config::{Config, Loader};
use keel_rpc::serve::Listeners;
use keel_rpc::testing::{TestDns, TestServer, token, with_token};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use user_service::user_v1::CreateUserRequest;
use user_service::user_v1::user_service_client::UserServiceClient;

const NAME: &str = "users.test.";

fn loader((defaults, development): (&str, &str), extra: &[(&str, &str)]) -> Loader {
    let mut vars = vec![
        ("KEEL_SERVICE__ENVIRONMENT", "development"),
        ("KEEL_TELEMETRY__SAMPLING_RATIO", "0"),
        ("KEEL_SERVER__LAME_DUCK", "0s"),
        ("KEEL_SERVER__DRAIN_TIMEOUT", "2s"),
    ];
    vars.extend_from_slice(extra);
    Loader::new()
        .defaults_toml(defaults)
        .development_toml(development)
        .env_from(vars)
}

/// Three user-service replicas on 127.0.0.2, .3 and .4, one port, one
/// store; each with its own `/metrics` on 127.0.0.1.
async fn replicas(config: &Config) -> (u16, Vec<TestServer>) {
    let users = user_service::Users::in_memory().await.expect("store");
    'ports: for _ in 0..20 {
        let first = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0))
            .await
            .expect("bind");
        let port = first.local_addr().expect("address").port();
        let mut listeners = vec![first];
        for last in [3, 4] {
            match TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), port)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => continue 'ports,
            }
        }
        let mut servers = Vec::new();
        for grpc in listeners {
            let keel = keel_rpc::Keel::new(config, user_service::SERVICES).expect("keel");
            let service = user_service::user_v1::user_service(users.clone(), &keel).expect("wrap");
            let server = keel.server(config).add_service(service);
            let metrics = Some(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
            let listeners = Listeners { grpc, metrics };
            servers.push(TestServer::start_on(server, listeners).expect("start"));
        }
        return (port, servers);
    }
    panic!("no port free on 127.0.0.2, .3 and .4");
}

/// `GetUser` calls a replica answered OK, from its `/metrics`.
async fn served(replica: &TestServer) -> f64 {
    let text = replica.scrape().await.expect("/metrics");
    text.lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{"))
        .filter(|l| l.contains(r#"grpc_method="GetUser""#) && l.contains(r#"grpc_code="OK""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

type Profiles = ProfileServiceClient<tonic::transport::Channel>;

/// `calls` `GetProfile`s of `user_id`, 8 at a time: the failures.
async fn load(profiles: &Profiles, token: &str, user_id: &str, calls: usize) -> Vec<String> {
    let left = Arc::new(AtomicUsize::new(calls));
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let (mut profiles, left) = (profiles.clone(), left.clone());
        let (token, user_id) = (token.to_owned(), user_id.to_owned());
        tasks.spawn(async move {
            let mut failed = Vec::new();
            while left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                let request = GetProfileRequest {
                    user_id: user_id.clone(),
                };
                if let Err(status) = profiles.get_profile(with_token(request, &token)).await {
                    failed.push(format!("{:?}: {}", status.code(), status.message()));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_balances_over_replicas_found_by_dns() {
    tokio::time::timeout(Duration::from_secs(60), scenario())
        .await
        .expect("the test took too long");
}

async fn scenario() {
    let defaults = (
        user_service::DEFAULT_CONFIG,
        user_service::DEVELOPMENT_CONFIG,
    );
    let users_config = loader(defaults, &[]).load().expect("valid configuration");
    let (port, mut replicas) = replicas(&users_config).await;
    let dns = TestDns::start("test.").await.expect("DNS");
    let ips: Vec<IpAddr> = (2..=4)
        .map(|last| Ipv4Addr::new(127, 0, 0, last).into())
        .collect();
    dns.set(NAME, &ips).await.expect("records");

    // The gateway, resolving with the test's DNS server every 200 ms.
    let upstream = format!("dns:///users.test:{port}");
    let nameservers = format!("[\"{}\"]", dns.addr());
    let defaults = (
        gateway_service::DEFAULT_CONFIG,
        gateway_service::DEVELOPMENT_CONFIG,
    );
    let settings = gateway_service::Settings::from_loader(&loader(
        defaults,
        &[
            ("KEEL_UPSTREAM__USER_SERVICE", upstream.as_str()),
            ("KEEL_CLIENT__DNS__NAMESERVERS", nameservers.as_str()),
            ("KEEL_CLIENT__DNS__REFRESH", "200ms"),
            ("KEEL_CLIENT__DNS__MIN_REFRESH", "100ms"),
        ],
    ))
    .expect("valid configuration");
    let keel = keel_rpc::Keel::new(&settings, gateway_service::SERVICES).expect("keel");
    let server = gateway_service::server(&keel, &settings, &settings.app.upstream).expect("server");
    let gateway = TestServer::start(server).await.expect("start the gateway");

    let token = token(&users_config, "ada", &["users:read", "users:write"]).expect("token");
    let mut users = UserServiceClient::connect(replicas[0].url())
        .await
        .expect("connect");
    let ada = users
        .create_user(with_token(
            CreateUserRequest {
                name: "Ada".into(),
                email: "ada@example.com".into(),
            },
            &token,
        ))
        .await
        .expect("create a user")
        .into_inner();
    let profiles = ProfileServiceClient::connect(gateway.url())
        .await
        .expect("connect");

    // Connected, and the first calls' latency (connecting) forgotten.
    assert_eq!(
        load(&profiles, &token, &ada.id, 60).await,
        Vec::<String>::new()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut before = Vec::new();
    for replica in &replicas {
        before.push(served(replica).await);
    }
    assert_eq!(
        load(&profiles, &token, &ada.id, 600).await,
        Vec::<String>::new()
    );
    let mut shares = Vec::new();
    for (replica, before) in replicas.iter().zip(&before) {
        shares.push(served(replica).await - before);
    }
    println!("GetUser calls per replica: {shares:?}");
    assert_eq!(shares.iter().sum::<f64>(), 600.0, "{shares:?}");
    for share in &shares {
        assert!(*share >= 90.0, "each replica serves its share: {shares:?}");
    }

    // Scale-down: out of DNS, then stopped, under load.
    let during = {
        let (profiles, token, id) = (profiles.clone(), token.clone(), ada.id.clone());
        tokio::spawn(async move { load(&profiles, &token, &id, 600).await })
    };
    dns.set(NAME, &ips[..2]).await.expect("records");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let gone = replicas.pop().expect("a replica");
    gone.stop().await.expect("stop");
    assert_eq!(during.await.expect("load"), Vec::<String>::new());

    gateway.stop().await.expect("stop");
    for replica in replicas {
        replica.stop().await.expect("stop");
    }
}
