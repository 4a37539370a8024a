//! A handler that panics.

use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_the_server_carries_on() {
    let server = start(timings(0, 1000)).await;
    let ch = channel(server.addr).await;
    let status = get(ch.clone(), "panic".into()).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Internal, "internal error")
    );
    // Same connection, same server: still serving.
    assert_eq!(
        get(ch.clone(), "sleep-1".into()).await.unwrap().id,
        "sleep-1"
    );
    let text = server.keel.metrics().render();
    let internal = text
        .lines()
        .find(|l| {
            l.starts_with("grpc_server_handled_total")
                && l.contains("grpc_code=\"Internal\"")
                && l.contains("GetUser")
        })
        .unwrap();
    assert!(internal.ends_with(" 1"), "{internal}");
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}
