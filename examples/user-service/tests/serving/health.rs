//! The standard health service.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

#[tokio::test]
async fn watch_of_an_unknown_service_sends_service_unknown_and_stays_open() {
    let server = start(timings(0, 1000)).await;
    let mut health = HealthClient::new(channel(server.addr).await);
    let unknown = health
        .check(HealthCheckRequest {
            service: "later.v1.Cache".into(),
        })
        .await
        .expect_err("Check of an unknown service");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "later.v1.Cache".into(),
        })
        .await
        .expect("Watch of an unknown service is not an error")
        .into_inner();
    let first = watch.message().await.expect("a message, not a status");
    assert_eq!(first.unwrap().status(), ServingStatus::ServiceUnknown);
    // The process reports the name later: the open stream hears of it.
    server.health.set("later.v1.Cache", ServingStatus::Serving);
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the status change arrives")
        .expect("a message");
    assert_eq!(next.unwrap().status(), ServingStatus::Serving);
    assert_eq!(
        health_status(server.addr, "later.v1.Cache").await,
        ServingStatus::Serving
    );
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}
