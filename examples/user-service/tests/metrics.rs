//! Exact metric values after a known sequence of calls, scraped from the real
//! `/metrics` endpoint, and the exposition checked by `promtool`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use jsonwebtoken::Algorithm;
use tonic::Code;
use user_service::user_v1::{CreateUserRequest, ExportUsersRequest, GetUserRequest};

/// One parsed sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition (label values here contain no `",`).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split("\",")
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label pair");
                            (k.to_owned(), v.strip_suffix('"').unwrap_or(v).to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            (name.to_owned(), labels, value.parse().expect("number"))
        })
        .collect()
}

/// The value of the one `name` sample of `method`'s gRPC calls that has the
/// `extra` labels.
fn value(samples: &[Sample], name: &str, method: &str, extra: &[(&str, &str)]) -> f64 {
    let hits: Vec<&Sample> = samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && [("grpc_method", method), ("protocol", "grpc")]
                    .iter()
                    .chain(extra)
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(hits.len(), 1, "{name} {method} {extra:?}: {hits:?}");
    hits[0].2
}

#[tokio::test]
async fn counts_every_outcome_exactly() {
    let server = Server::start(config()).await;
    let mut client = server.client().await;
    let reader = sign_hs(Algorithm::HS256, &claims("users:read"));
    let writer = sign_hs(Algorithm::HS256, &claims("users:read users:write"));

    // HealthCheck ×2: OK (public).
    client.health_check(()).await.unwrap();
    client.health_check(()).await.unwrap();
    // GetUser: Unauthenticated (no token), NotFound, then OK.
    assert_eq!(
        client
            .get_user(GetUserRequest { id: "u-1".into() })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        client
            .get_user(with_token(GetUserRequest { id: "u-404".into() }, &reader))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let new = |n: u8| CreateUserRequest {
        name: format!("user {n}"),
        email: format!("u{n}@example.com"),
    };
    let created = client
        .create_user(with_token(new(1), &writer))
        .await
        .unwrap()
        .into_inner();
    client
        .get_user(with_token(
            GetUserRequest {
                id: created.id.clone(),
            },
            &reader,
        ))
        .await
        .unwrap();
    // CreateUser: OK above, PermissionDenied, InvalidArgument.
    assert_eq!(
        client
            .create_user(with_token(new(2), &reader))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let bad = CreateUserRequest {
        name: "x".into(),
        email: "nope".into(),
    };
    assert_eq!(
        client
            .create_user(with_token(bad, &writer))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // ImportUsers (client stream): 3 messages OK, then 2 messages failing on the 2nd.
    let batch: Vec<_> = (3..6).map(new).collect();
    let imported = client
        .import_users(with_token(tokio_stream::iter(batch), &writer))
        .await
        .unwrap();
    assert_eq!(imported.get_ref().users.len(), 3);
    let failing = vec![
        new(6),
        CreateUserRequest {
            name: "".into(),
            email: "e@example.com".into(),
        },
    ];
    let status = client
        .import_users(with_token(tokio_stream::iter(failing), &writer))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::InvalidArgument,
            "message 1: name: must be at least 1 character; name: must not be blank"
        )
    );
    // ExportUsers (server stream): 4 users, status in the trailers.
    let mut stream = client
        .export_users(with_token(ExportUsersRequest {}, &reader))
        .await
        .unwrap()
        .into_inner();
    let mut exported = 0;
    while stream.message().await.unwrap().is_some() {
        exported += 1;
    }
    assert_eq!(exported, 4);

    let text = server.scrape().await;
    let s = samples(&text);
    let started = |m| value(&s, "grpc_server_started_total", m, &[]);
    let handled = |m, code| value(&s, "grpc_server_handled_total", m, &[("grpc_code", code)]);
    let received = |m| value(&s, "grpc_server_msg_received_total", m, &[]);
    let sent = |m| value(&s, "grpc_server_msg_sent_total", m, &[]);

    assert_eq!(started("HealthCheck"), 2.0);
    assert_eq!(handled("HealthCheck", "OK"), 2.0);
    assert_eq!(started("GetUser"), 3.0);
    assert_eq!(handled("GetUser", "OK"), 1.0);
    assert_eq!(handled("GetUser", "NotFound"), 1.0);
    assert_eq!(handled("GetUser", "Unauthenticated"), 1.0);
    assert_eq!(
        received("GetUser"),
        2.0,
        "the rejected call's message is never read"
    );
    assert_eq!(sent("GetUser"), 1.0);
    assert_eq!(started("CreateUser"), 3.0);
    assert_eq!(handled("CreateUser", "OK"), 1.0);
    assert_eq!(handled("CreateUser", "PermissionDenied"), 1.0);
    assert_eq!(handled("CreateUser", "InvalidArgument"), 1.0);
    assert_eq!(started("ImportUsers"), 2.0);
    assert_eq!(handled("ImportUsers", "OK"), 1.0);
    assert_eq!(handled("ImportUsers", "InvalidArgument"), 1.0);
    assert_eq!(received("ImportUsers"), 5.0);
    assert_eq!(sent("ImportUsers"), 1.0);
    assert_eq!(handled("ExportUsers", "OK"), 1.0);
    assert_eq!(sent("ExportUsers"), 4.0);
    assert_eq!(received("ExportUsers"), 1.0);
    let histogram_count = value(&s, "grpc_server_handling_seconds_count", "GetUser", &[]);
    assert_eq!(histogram_count, 3.0);

    // Series start at zero for every method and code, with the annotation labels.
    assert_eq!(started("ListUsers"), 0.0);
    assert_eq!(
        value(
            &s,
            "grpc_server_handled_total",
            "ListUsers",
            &[("grpc_code", "DataLoss"), ("tier", "batch")]
        ),
        0.0
    );
    // One series per code and protocol it is served by: gRPC, and REST (its route).
    for protocol in ["grpc", "rest"] {
        let codes = s
            .iter()
            .filter(|(n, l, _)| {
                n == "grpc_server_handled_total"
                    && l["grpc_method"] == "ListUsers"
                    && l["protocol"] == protocol
            })
            .count();
        assert_eq!(codes, 17, "{protocol}");
    }
    let methods_without_routes = s
        .iter()
        .filter(|(n, l, _)| {
            n == "grpc_server_started_total"
                && l["grpc_method"] == "ImportUsers"
                && l["protocol"] != "grpc"
        })
        .count();
    assert_eq!(methods_without_routes, 0, "no REST series without a route");
    assert_eq!(
        value(
            &s,
            "grpc_server_started_total",
            "GetUser",
            &[
                ("team", "identity"),
                ("tier", "critical"),
                ("grpc_type", "unary")
            ]
        ),
        3.0
    );
    assert_eq!(
        value(
            &s,
            "grpc_server_started_total",
            "ImportUsers",
            &[("grpc_type", "client_stream")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "grpc_server_started_total",
            "ExportUsers",
            &[("grpc_type", "server_stream")]
        ),
        1.0
    );
    // HealthCheck has no tier: the label is empty, which Prometheus reads as absent.
    assert_eq!(
        value(
            &s,
            "grpc_server_started_total",
            "HealthCheck",
            &[("tier", "")]
        ),
        2.0
    );

    promtool_check(&text);
    server.stop().await;
}

#[tokio::test]
async fn unknown_methods_are_not_counted() {
    let server = Server::start(config()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/user.v1.UserService/NoSuchMethod");
    let status = grpc
        .unary::<(), (), _>(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let text = server.scrape().await;
    assert!(
        !text.contains("NoSuchMethod"),
        "unbounded label values must not appear"
    );
    server.stop().await;
}

/// `promtool check metrics` (Debian package `prometheus`) must accept the exposition.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package `prometheus`; `cargo xtask test` installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool rejected the exposition:\n{report}"
    );
    // promtool prints lint findings (and still exits 0 for some): there must be none.
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}"
    );
}
