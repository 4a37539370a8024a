//! The graceful shutdown: lame duck, drain and its deadline, open streams,
//! and a second signal.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

#[tokio::test]
async fn sigterm_with_calls_in_flight_loses_none() {
    let server = start(timings(600, 10_000)).await;
    assert_eq!(health_status(server.addr, "").await, ServingStatus::Serving);
    assert_eq!(
        health_status(server.addr, "user.v1.UserService").await,
        ServingStatus::Serving
    );

    let channels = futures_util::future::join_all((0..4).map(|_| channel(server.addr))).await;
    let calls: Vec<_> = (0..64)
        .map(|i| tokio::spawn(get(channels[i % 4].clone(), "sleep-400".into())))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.signals.send(()).await.unwrap();

    // Lame duck: still serving, but health says NOT_SERVING.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        health_status(server.addr, "").await,
        ServingStatus::NotServing
    );
    assert_eq!(
        health_status(server.addr, "user.v1.UserService").await,
        ServingStatus::NotServing
    );
    get(channels[0].clone(), "sleep-1".into())
        .await
        .expect("new calls are served during the lame duck");

    for call in calls {
        let user = call
            .await
            .unwrap()
            .expect("every accepted call completes OK");
        assert_eq!(user.id, "sleep-400");
    }

    // After the lame duck, new connections are refused.
    tokio::time::sleep(Duration::from_millis(700).saturating_sub(started.elapsed())).await;
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "connection accepted after the lame duck");

    let result = tokio::time::timeout(Duration::from_secs(5), server.task).await;
    result
        .expect("server stops")
        .unwrap()
        .expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn calls_still_running_at_the_drain_deadline_get_unavailable() {
    let server = start(timings(0, 300)).await;
    let slow = tokio::spawn(get(channel(server.addr).await, "sleep-10000".into()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.signals.send(()).await.unwrap();
    let status = slow.await.unwrap().unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "server is shutting down")
    );
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn open_watch_streams_do_not_block_shutdown() {
    let server = start(timings(200, 10_000)).await;
    let mut health = HealthClient::new(channel(server.addr).await);
    let mut watch = health
        .watch(HealthCheckRequest { service: "".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let started = Instant::now();
    server.signals.send(()).await.unwrap();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    let end = watch.message().await;
    assert!(
        matches!(&end, Err(s) if s.code() == Code::Unavailable),
        "{end:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_second_signal_ends_everything_at_once() {
    let server = start(timings(10_000, 10_000)).await;
    let slow = tokio::spawn(get(channel(server.addr).await, "sleep-10000".into()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.signals.send(()).await.unwrap();
    server.signals.send(()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(slow.await.unwrap().unwrap_err().code(), Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
