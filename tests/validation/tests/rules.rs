//! The generated checks of `rules.proto` (each rule kept and broken), and the
//! served service: a request that breaks a rule is answered
//! `INVALID_ARGUMENT` with a `BadRequest` listing every violation and never
//! reaches the handler; each message of a client stream is checked; a rule
//! that cannot be evaluated is `INTERNAL` with nothing internal said.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keel_rpc::validate::{Validate, Violations};
use tokio::net::TcpListener;
use tonic::Code;
use tonic_types::StatusExt;
use validation_tests::Handler;
use validation_tests::rules_v1::rules_client::RulesClient;
use validation_tests::rules_v1::{self, Address, Broken, Color, Everything, Plain, everything};

/// A message that keeps every rule.
fn valid() -> Everything {
    Everything {
        name: "keel".into(),
        email: "ada@example.com".into(),
        host: String::new(),
        kind: "a".into(),
        start: 1,
        end: 2,
        outside: 11,
        count: 2,
        ratio: 0.5,
        token: vec![1, 2, 3],
        agreed: true,
        color: Color::Red as i32,
        tags: vec!["x".into(), "y".into()],
        limits: [("cpu".to_owned(), 2)].into(),
        address: Some(Address {
            city: "Oslo".into(),
            zip: "01234".into(),
        }),
        previous: vec![],
        age: None,
        contact: Some(everything::Contact::Pager("p".into())),
        nickname: "k".into(),
        alias: String::new(),
        shout: "hey!".into(),
        id: String::new(),
    }
}

/// The (field, rule) of every violation of `message`.
fn violations(message: &Everything) -> Vec<(String, String)> {
    let mut found = Violations::default();
    message.validate_into(&mut found);
    found
        .found()
        .iter()
        .map(|v| (v.field.clone(), v.rule.to_string()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(f, r)| (f.to_string(), r.to_string()))
        .collect()
}

#[test]
fn a_valid_message_has_no_violations() {
    assert_eq!(violations(&valid()), vec![]);
    // The optional and ignored-when-zero fields, set to good values.
    let mut set = valid();
    set.age = Some(30);
    set.host = "api.example.com".into();
    set.id = "0190a4e0-7c5f-7cc5-9d3c-6c6e1f3f4a2b".into();
    set.outside = 4;
    // Lengths are in characters: four of them, in seven bytes.
    set.name = "kæøå".into();
    assert_eq!(violations(&set), vec![]);
}

/// Changes a valid message so that it breaks some rule.
type Break = fn(&mut Everything);

#[test]
fn each_rule_is_broken_on_its_own() {
    let cases: Vec<(Break, Vec<(&str, &str)>)> = vec![
        (|m| m.name = "k".into(), vec![("name", "string.min_len")]),
        (
            |m| m.name = "kkkkkk".into(),
            vec![("name", "string.max_len")],
        ),
        (
            |m| m.name = "kæøåüé".into(),
            vec![("name", "string.max_len")],
        ),
        (|m| m.name = "abc".into(), vec![("name", "string.prefix")]),
        (
            |m| m.email = String::new(),
            vec![("email", "string.email_empty")],
        ),
        (|m| m.email = "ada".into(), vec![("email", "string.email")]),
        (
            |m| m.host = "-bad-".into(),
            vec![("host", "string.hostname")],
        ),
        (|m| m.kind = "c".into(), vec![("kind", "string.in")]),
        // gt 10, lt 5: outside 5..=10.
        (
            |m| m.outside = 5,
            vec![("outside", "int32.gt_lt_exclusive")],
        ),
        (
            |m| m.outside = 10,
            vec![("outside", "int32.gt_lt_exclusive")],
        ),
        (|m| m.count = 0, vec![("count", "uint64.gte_lte")]),
        (|m| m.count = 4, vec![("count", "uint64.gte_lte")]),
        (
            |m| m.ratio = f64::INFINITY,
            vec![("ratio", "double.finite")],
        ),
        (
            |m| m.ratio = f64::NAN,
            vec![("ratio", "double.finite"), ("ratio", "double.gte")],
        ),
        (|m| m.ratio = -1.0, vec![("ratio", "double.gte")]),
        (|m| m.token = vec![1], vec![("token", "bytes.min_len")]),
        (|m| m.token = vec![2, 2], vec![("token", "bytes.prefix")]),
        (|m| m.agreed = false, vec![("agreed", "bool.const")]),
        (|m| m.color = 9, vec![("color", "enum.defined_only")]),
        (
            |m| m.color = Color::Green as i32,
            vec![("color", "enum.not_in")],
        ),
        (|m| m.tags = vec![], vec![("tags", "repeated.min_items")]),
        (
            |m| m.tags = vec!["a".into(), "b".into(), "c".into(), "d".into()],
            vec![("tags", "repeated.max_items")],
        ),
        (
            |m| m.tags = vec!["a".into(), "a".into()],
            vec![("tags", "repeated.unique")],
        ),
        (
            |m| m.tags = vec!["a".into(), String::new()],
            vec![("tags[1]", "string.min_len")],
        ),
        (
            |m| m.limits = [("Cpu".to_owned(), 0)].into(),
            vec![
                ("limits[\"Cpu\"]", "string.pattern"),
                ("limits[\"Cpu\"]", "int32.gt"),
            ],
        ),
        (
            |m| {
                m.limits = [
                    ("a".to_owned(), 1),
                    ("b".to_owned(), 1),
                    ("c".to_owned(), 1),
                ]
                .into()
            },
            vec![("limits", "map.max_pairs")],
        ),
        (|m| m.address = None, vec![("address", "required")]),
        (
            |m| {
                m.address = Some(Address {
                    city: String::new(),
                    zip: "1".into(),
                })
            },
            vec![
                ("address.city", "string.min_len"),
                ("address.zip", "string.pattern"),
            ],
        ),
        (
            |m| {
                m.previous = vec![
                    Address {
                        city: "A".into(),
                        zip: "12345".into(),
                    },
                    Address {
                        city: String::new(),
                        zip: "12345".into(),
                    },
                ]
            },
            vec![("previous[1].city", "string.min_len")],
        ),
        (|m| m.age = Some(17), vec![("age", "int32.gte")]),
        (|m| m.contact = None, vec![("contact", "required")]),
        (
            |m| m.contact = Some(everything::Contact::Phone("12".into())),
            vec![("phone", "string.min_len")],
        ),
        (|m| m.alias = "also".into(), vec![("", "message.oneof")]),
        (|m| m.shout = "hey".into(), vec![("shout", "shout.bang")]),
        (|m| m.start = 3, vec![("", "window")]),
        (|m| m.id = "not-a-uuid".into(), vec![("id", "string.uuid")]),
    ];
    for (i, (breaks, expected)) in cases.into_iter().enumerate() {
        let mut message = valid();
        breaks(&mut message);
        let mut found = violations(&message);
        let mut expected = pairs(&expected);
        found.sort();
        expected.sort();
        assert_eq!(found, expected, "case {i}: {message:?}");
    }
}

#[test]
fn timestamps_and_durations_are_compared_as_times() {
    use prost_types::{Duration, Timestamp};
    use validation_tests::rules_v1::Times;
    let now = keel_rpc::validate::now().0;
    let at = |seconds: i64| Some(Timestamp { seconds, nanos: 0 });
    let valid = Times {
        created: at(1_600_000_000),
        seen: at(now - 60),
        ttl: Some(Duration {
            seconds: 5,
            nanos: 0,
        }),
        fixed: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 500_000_000,
        }),
    };
    let rules = |m: &Times| {
        let mut found = Violations::default();
        m.validate_into(&mut found);
        found
            .found()
            .iter()
            .map(|v| (v.field.clone(), v.rule.to_string(), v.message.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(rules(&valid), vec![]);
    // Unset: no rule applies (none is required).
    assert_eq!(rules(&Times::default()), vec![]);
    let broken = Times {
        created: at(1_500_000_000),
        seen: at(now - 7200),
        ttl: Some(Duration {
            seconds: 30,
            nanos: 0,
        }),
        fixed: at(1_700_000_000),
    };
    let found: Vec<(String, String)> = rules(&broken).into_iter().map(|(f, r, _)| (f, r)).collect();
    assert_eq!(
        found,
        pairs(&[
            ("created", "timestamp.gt"),
            ("seen", "timestamp.within"),
            ("ttl", "duration.not_in"),
            ("fixed", "timestamp.const"),
        ])
    );
    let messages: Vec<String> = rules(&broken).into_iter().map(|(_, _, m)| m).collect();
    assert_eq!(
        messages,
        [
            "must be greater than 2020-01-01T00:00:00Z",
            "must be within 3600s of now",
            "must not be in list [30s]",
            "must equal 2023-11-14T22:13:20.5Z",
        ]
    );
    let future = Times {
        created: at(now + 3600),
        ttl: Some(Duration {
            seconds: 0,
            nanos: 500_000_000,
        }),
        ..valid
    };
    assert_eq!(
        rules(&future),
        vec![
            (
                "created".to_owned(),
                "timestamp.lt_now".to_owned(),
                "must be less than now".to_owned()
            ),
            (
                "ttl".to_owned(),
                "duration.gte_lte".to_owned(),
                "must be greater than or equal to 1s and less than or equal to 90s".to_owned()
            ),
        ]
    );
}

#[test]
fn messages_say_what_the_rule_wants_and_never_the_value() {
    let mut message = valid();
    message.name = "secret-value".into();
    message.shout = "quiet".into();
    message.start = 9;
    let status = keel_rpc::validate::check(&message).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "name: must be at most 5 characters; name: does not have prefix `k`; \
         shout: must end with !; start must not be after end"
    );
    assert!(!status.message().contains("secret-value"));
    let bad_request = status
        .get_details_bad_request()
        .expect("a BadRequest detail");
    let listed: Vec<_> = bad_request
        .field_violations
        .iter()
        .map(|v| (v.field.as_str(), v.reason.as_str(), v.description.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("name", "string.max_len", "must be at most 5 characters"),
            ("name", "string.prefix", "does not have prefix `k`"),
            ("shout", "shout.bang", "must end with !"),
            ("", "window", "start must not be after end"),
        ]
    );
}

#[test]
fn a_huge_list_of_bad_items_keeps_the_error_small() {
    let mut message = valid();
    message.previous = vec![Address::default(); 10_000];
    let status = keel_rpc::validate::check(&message).unwrap_err();
    let listed = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .len();
    assert_eq!(listed, keel_rpc::validate::MAX_VIOLATIONS);
    assert!(
        status.message().ends_with("(and 19936 more)"),
        "{}",
        status.message()
    );
}

/// The service on 127.0.0.1, stopped when dropped.
struct Served {
    addr: SocketAddr,
    handler: Handler,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

const CONFIG: &str = r#"
[service]
name = "validation-tests"

[metrics]
enabled = false

[auth]
algorithm = "HS256"
hmac_secret = "validation-tests-secret-no-token-is-ever-verified"
"#;

async fn serve() -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = keel_rpc::config::Loader::new()
        .defaults_toml(CONFIG)
        .load()
        .unwrap();
    config.server.addr = addr;
    let keel = keel_rpc::Keel::new(&config, &[&rules_v1::RULES_POLICY]).unwrap();
    let handler = Handler::default();
    let service = rules_v1::rules(handler.clone(), &keel).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        keel.server(&config)
            .add_service(service)
            .serve_on(
                keel_rpc::serve::Listeners {
                    grpc: listener,
                    metrics: None,
                },
                keel_rpc::serve::shutdown_on(async {
                    let _ = stopped.await;
                }),
            )
            .await
    });
    Served {
        addr,
        handler,
        stop: Some(stop),
    }
}

async fn client(served: &Served) -> RulesClient<tonic::transport::Channel> {
    RulesClient::connect(format!("http://{}", served.addr))
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_requests_never_reach_the_handler() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let served = serve().await;
        let mut client = client(&served).await;
        let seen = || served.handler.seen.load(Ordering::SeqCst);

        assert_eq!(client.check(valid()).await.unwrap().get_ref().seen, 1);
        let mut bad = valid();
        bad.email = "nope".into();
        bad.address = None;
        let status = client.check(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "email: must be a valid email address; address: value is required"
        );
        let fields: Vec<_> = status
            .get_details_bad_request()
            .expect("BadRequest over the wire")
            .field_violations
            .into_iter()
            .map(|v| (v.field, v.reason))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("email".to_owned(), "string.email".to_owned()),
                ("address".to_owned(), "required".to_owned()),
            ]
        );
        assert_eq!(seen(), 1, "the bad request never reached the handler");

        // A client stream: the handler sees the good messages before the
        // bad one, never the bad one, and the call fails with its violation.
        let mut bad = valid();
        bad.tags = vec![];
        let stream = tokio_stream::iter(vec![valid(), valid(), bad, valid()]);
        let status = client.check_many(stream).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "tags: must contain at least 1 item");
        assert_eq!(seen(), 3);

        // A bidi stream: each message is answered until the bad one ends it.
        let mut bad = valid();
        bad.agreed = false;
        let before = seen();
        let mut replies = client
            .check_each(tokio_stream::iter(vec![valid(), bad, valid()]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(replies.message().await.unwrap().unwrap().seen, before + 1);
        let status = replies.message().await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, "agreed: must equal true")
        );
        assert_eq!(seen(), before + 1);

        // A method whose input has no rules takes anything.
        assert_eq!(
            client
                .echo(Plain {
                    text: String::new()
                })
                .await
                .unwrap()
                .get_ref()
                .seen,
            5
        );

        // A rule that cannot be evaluated: INTERNAL, saying nothing internal.
        let status = client.r#break(Broken { n: 1 }).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "a validation rule could not be evaluated");
        assert_eq!(seen(), 5);
    })
    .await
    .expect("within 30 s");
}
