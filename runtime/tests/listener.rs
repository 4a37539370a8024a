//! The gRPC port's listen backlog (`server.listen_backlog`): a burst of new
//! connections waits in the kernel's queue until the accept loop takes
//! them, rather than being dropped past std's and tokio's 128. On
//! 127.0.0.1 only, with at most 600 connections, in well under 10 s.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use keel_rpc::config::{AuthConfig, Config, Secret};
use keel_rpc::testing::TestServer;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Connections of the burst: past 128, within the default backlog.
const BURST: usize = 600;

/// The kernel's cap on a backlog, where it says.
fn somaxconn() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?;
    text.trim().parse().ok()
}

/// A server with nothing but health, `listen_backlog` set when given,
/// whose accept loop runs: it has answered a call.
async fn serving(listen_backlog: Option<u32>) -> TestServer {
    let mut config = Config::<()> {
        auth: AuthConfig {
            hmac_secret: Some(Secret::new("0123456789abcdef0123456789abcdef-test")),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    config.metrics.enabled = false;
    config.server.lame_duck = Duration::ZERO;
    if let Some(backlog) = listen_backlog {
        config.server.listen_backlog = backlog;
    }
    let keel = keel_rpc::Keel::new(&config, &[]).unwrap();
    let server = TestServer::start(keel.server(&config)).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");
    server
}

/// Opens `count` connections to `addr`, each given `timeout` to be
/// established; the first that is not, its index and error.
fn burst(addr: SocketAddr, count: usize, timeout: Duration) -> Result<Vec<TcpStream>, String> {
    (0..count)
        .map(|i| {
            TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("connection {i} of a burst of {count}: {e}"))
        })
        .collect()
}

// The test's runtime is its one thread, which the burst blocks: the server
// accepts nothing until it is over, so every connection of it waits in the
// backlog, as under a burst faster than the accept loop.
#[tokio::test]
async fn a_burst_of_connections_waits_in_the_default_backlog() {
    let cap = somaxconn().unwrap_or(u32::MAX);
    if cap < BURST as u32 + 8 {
        eprintln!("skipped: net.core.somaxconn is {cap}, below a burst of {BURST}");
        return;
    }
    let server = serving(None).await;
    let connected = burst(server.addr(), BURST, Duration::from_millis(500));
    // Closed before the server takes them, so it only reads their end.
    let connected = connected.map(|open| open.len());
    assert_eq!(connected, Ok(BURST));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_listener_gets_the_configured_backlog() {
    let server = serving(Some(4096)).await;
    // `ss` shows a listening socket's backlog as its Send-Q.
    let Ok(output) = std::process::Command::new("ss").args(["-ltnH"]).output() else {
        eprintln!("skipped: no `ss` to read the backlog with");
        return server.stop().await.unwrap();
    };
    let local = format!("{}", server.addr());
    let table = String::from_utf8_lossy(&output.stdout);
    let line = (table.lines())
        .find(|line| line.split_whitespace().nth(3) == Some(local.as_str()))
        .unwrap_or_else(|| panic!("{local} in\n{table}"));
    let backlog: u32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(backlog, 4096.min(somaxconn().unwrap_or(4096)), "{line}");
    server.stop().await.unwrap();
}
