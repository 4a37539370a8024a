//! Connections: handshake and idle timeouts, `max_connections`, keepalive
//! pings.

use std::time::{Duration, Instant};

use tonic::Code;

use crate::support::*;

/// The client connection preface of HTTP/2 and an empty SETTINGS frame:
/// what a client sends before its first call.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A raw connection to `addr`: silent, or having sent the HTTP/2 preface
/// and nothing after (it answers no PING either).
async fn raw_connection(addr: std::net::SocketAddr, preface: bool) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    if preface {
        stream.write_all(H2_PREFACE).await.unwrap();
    }
    stream
}

/// Whether the server closes `stream` within `within` (whatever it sent
/// before, such as its SETTINGS or a GOAWAY, is read and dropped).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

/// The value of the sample `line` (name and labels) in the server's metrics.
fn sample(keel: &keel_rpc::Keel, line: &str) -> u64 {
    let text = keel.metrics().render();
    (text.lines())
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line} in:\n{text}"))
}

async fn wait_for_sample(keel: &keel_rpc::Keel, line: &str, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(keel, line) != value {
        assert!(
            Instant::now() < deadline,
            "{line} never reached {value}: {}",
            sample(keel, line)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const OPEN: &str = "keel_server_connections";

fn closed_for(reason: &str) -> String {
    format!(r#"keel_server_connections_closed_total{{reason="{reason}"}}"#)
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_while_calls_go_on() {
    let mut config = timings(0, 1000);
    config.server.handshake_timeout = Duration::from_millis(300);
    config.server.idle_timeout = Duration::from_secs(1);
    // What a client sent GOAWAY gets to close before it is dropped.
    config.server.keepalive_timeout = Duration::from_millis(300);
    let server = start(config).await;
    let started = Instant::now();
    let mut silent = Vec::new();
    let mut prefaced = Vec::new();
    for _ in 0..100 {
        silent.push(raw_connection(server.addr, false).await);
        prefaced.push(raw_connection(server.addr, true).await);
    }
    // A client calling meanwhile is served.
    let ch = channel(server.addr).await;
    let missing = get(ch.clone(), "no-such-user".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // No preface in 300 ms: closed, all of them, and those only (unless the
    // machine took a whole idle timeout to get here).
    wait_for_sample(&server.keel, &closed_for("handshake_timeout"), 100).await;
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(sample(&server.keel, &closed_for("idle")), 0);
    }
    for stream in &mut silent {
        assert!(closed_within(stream, Duration::from_secs(1)).await);
    }
    // A preface and then nothing, and the client's own connection after its
    // call: GOAWAY after the idle timeout (and dropped, for those that
    // answer nothing, 300 ms later).
    wait_for_sample(&server.keel, &closed_for("idle"), 101).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    for stream in &mut prefaced {
        assert!(closed_within(stream, Duration::from_secs(2)).await);
    }
    wait_for_sample(&server.keel, OPEN, 0).await;
    // The client reconnects on its next call.
    let missing = get(ch, "no-such-user".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert_eq!(sample(&server.keel, &closed_for("max_connections")), 0);
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_at_once() {
    let mut config = timings(0, 1000);
    config.server.max_connections = 20;
    let server = start(config).await;
    let ch = channel(server.addr).await;
    let mut held = Vec::new();
    for _ in 0..19 {
        held.push(raw_connection(server.addr, true).await);
    }
    wait_for_sample(&server.keel, OPEN, 20).await;
    // The 21st is closed as it is accepted, and counted…
    let mut refused = raw_connection(server.addr, true).await;
    assert!(closed_within(&mut refused, Duration::from_secs(2)).await);
    assert_eq!(sample(&server.keel, &closed_for("max_connections")), 1);
    // …while calls on the open ones go on.
    let missing = get(ch.clone(), "no-such-user".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    // A closed connection frees its slot.
    held.truncate(10);
    wait_for_sample(&server.keel, OPEN, 11).await;
    let missing = get(channel(server.addr).await, "no-such-user".into())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_that_answers_no_ping_is_closed_and_one_that_does_stays() {
    let mut config = timings(0, 1000);
    config.server.keepalive_interval = Some(Duration::from_millis(200));
    config.server.keepalive_timeout = Duration::from_millis(200);
    let server = start(config).await;
    let ch = channel(server.addr).await;
    get(ch.clone(), "no-such-user".into()).await.unwrap_err();
    let mut mute = raw_connection(server.addr, true).await;
    assert!(closed_within(&mut mute, Duration::from_secs(3)).await);
    // tonic's client answers the pings: its connection is still the one
    // open, and still serves.
    wait_for_sample(&server.keel, OPEN, 1).await;
    let missing = get(ch, "no-such-user".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    for reason in ["handshake_timeout", "idle", "max_connections"] {
        assert_eq!(sample(&server.keel, &closed_for(reason)), 0, "{reason}");
    }
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_that_sent_its_preface_outlives_the_handshake_timeout() {
    let mut config = timings(0, 1000);
    config.server.handshake_timeout = Duration::from_millis(200);
    let server = start(config).await;
    let ch = channel(server.addr).await;
    get(ch.clone(), "no-such-user".into()).await.unwrap_err();
    let mut quiet = raw_connection(server.addr, true).await;
    // Well past the handshake timeout, and with no idle look in between
    // (the default idle timeout is minutes), both are still open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!closed_within(&mut quiet, Duration::from_millis(100)).await);
    assert_eq!(sample(&server.keel, &closed_for("handshake_timeout")), 0);
    assert_eq!(sample(&server.keel, OPEN), 2);
    let missing = get(ch, "no-such-user".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}
