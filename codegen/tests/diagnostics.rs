//! Every invalid annotation fails code generation with the proto file, line
//! and column of the offending field or value inside its option (else of the
//! option), a close name suggested where one was meant; a valid file yields
//! the policy table.

mod common;

use common::compile;
use std::path::Path;

/// A proto whose `Get` method carries `method_option` (one line, line 9).
fn with_method_option(method_option: &str) -> String {
    format!(
        r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {{}}
message Res {{}}
service Things {{
  rpc List(Req) returns (Res);
  rpc Get(Req) returns (Res) {{
    {method_option}
  }}
}}
"#
    )
}

/// Asserts one diagnostic at `line:column` of svc.proto whose message contains `needle`.
fn assert_diagnostic(source: &str, line: usize, column: usize, needle: &str) {
    let (_dir, result) = compile(source);
    let err = result.expect_err("must fail");
    let text = err.to_string();
    let diagnostics = err.diagnostics();
    assert_eq!(diagnostics.len(), 1, "{text}");
    let d = diagnostics[0];
    assert!(d.file.ends_with(Path::new("test/v1/svc.proto")), "{text}");
    assert!(
        d.file.is_file(),
        "the path points at the file on disk: {text}"
    );
    assert_eq!((d.line, d.column), (line, column), "{text}");
    assert!(d.message.contains(needle), "{text}");
    assert!(
        text.contains(&format!("svc.proto:{line}:{column}: ")),
        "{text}"
    );
}

#[test]
fn invalid_label_name() {
    assert_diagnostic(
        &with_method_option(
            r#"option (keel.v1.method) = { labels: { key: "9tier" value: "x" } };"#,
        ),
        9,
        48,
        "invalid Prometheus label name \"9tier\"",
    );
}

#[test]
fn reserved_label_key() {
    assert_diagnostic(
        &with_method_option(
            r#"option (keel.v1.method) = { labels: { key: "grpc_code" value: "x" } };"#,
        ),
        9,
        48,
        "reserved by Keel's own metrics",
    );
}

#[test]
fn duplicate_label_keys() {
    assert_diagnostic(
        &with_method_option(
            r#"option (keel.v1.method) = { labels: { key: "tier" value: "a" } labels: { key: "tier" value: "b" } };"#,
        ),
        9,
        83,
        "duplicate key \"tier\"",
    );
}

#[test]
fn empty_scope() {
    assert_diagnostic(
        &with_method_option(
            r#"option (keel.v1.method) = { auth: { scopes: ["users:read", ""] } };"#,
        ),
        9,
        64,
        "empty scope",
    );
}

#[test]
fn scopes_on_a_public_method() {
    assert_diagnostic(
        &with_method_option(
            r#"option (keel.v1.method) = { auth: { public: true scopes: ["a"] } };"#,
        ),
        9,
        63,
        "public method cannot require scopes",
    );
}

#[test]
fn malformed_peer_identities() {
    for (peer, needle) in [
        (
            "gateway",
            "must be a URI SAN (spiffe://trust-domain/path) or dns:name",
        ),
        ("spiffe:///ns/prod", "has no authority"),
        ("spiffe://example.org/ns//sa", "is not a SPIFFE ID"),
        (
            "spiffe://example.org/sa?x=1",
            "must not contain whitespace, a query or a fragment",
        ),
        ("Spiffe://example.org/sa", "has an invalid URI scheme"),
        ("dns:-bad-.example.org", "is not a DNS name"),
        ("dns:", "is not a DNS name"),
    ] {
        assert_diagnostic(
            &with_method_option(&format!(
                r#"option (keel.v1.method) = {{ auth: {{ peers: ["{peer}"] }} }};"#
            )),
            9,
            49,
            needle,
        );
    }
    assert_diagnostic(
        &with_method_option(
            r#"option (keel.v1.method) = { auth: { peers: ["dns:a.example", "dns:a.example"] } };"#,
        ),
        9,
        66,
        "listed twice",
    );
    assert_diagnostic(
        &with_method_option(
            r#"option (keel.v1.method) = { auth: { public: true peers: ["dns:a.example"] } };"#,
        ),
        9,
        62,
        "public method cannot require peers",
    );
}

#[test]
fn peer_identities_resolve_with_and_without_scopes() {
    let source = r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {}
service Internal {
  rpc Sync(Req) returns (Req) {
    option (keel.v1.method) = { auth: { peers: ["spiffe://example.org/ns/prod/sa/gateway", "dns:batch.example.org"] } };
  }
  rpc Purge(Req) returns (Req) {
    option (keel.v1.method) = { auth: { peers: ["spiffe://example.org/ns/prod/sa/ops"] scopes: ["admin"] } };
  }
}
"#;
    let (_dir, result) = compile(source);
    let generated = result.unwrap();
    let code = std::fs::read_to_string(&generated.files[0]).unwrap();
    let compact: String = code.split_whitespace().collect();
    assert!(compact.contains(r#"access:::keel_rpc::codegen::Access::Peer{peers:&["spiffe://example.org/ns/prod/sa/gateway","dns:batch.example.org",],scopes:None,}"#), "{code}");
    assert!(compact.contains(r#"access:::keel_rpc::codegen::Access::Peer{peers:&["spiffe://example.org/ns/prod/sa/ops"],scopes:Some(&["admin"]),}"#), "{code}");
}

#[test]
fn unknown_option_field() {
    let (_dir, result) = compile(&with_method_option(
        r#"option (keel.v1.method) = { auht: { public: true } };"#,
    ));
    let err = result.expect_err("must fail");
    let text = err.to_string();
    let d = err.diagnostics()[0].clone();
    assert!(d.file.ends_with(Path::new("test/v1/svc.proto")), "{text}");
    assert_eq!(d.line, 9, "{text}");
    assert!(d.column > 0, "{text}");
    assert!(
        text.contains("field 'auht' not found for message 'keel.v1.MethodOptions'"),
        "{text}"
    );
}

#[test]
fn service_level_errors_point_at_the_service_option() {
    let source = r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {}
service Things {
  option (keel.v1.service) = { labels: { key: "le" value: "x" } };
  rpc Get(Req) returns (Req);
}
"#;
    assert_diagnostic(source, 6, 47, "label key \"le\" is reserved");
}

#[test]
fn every_problem_is_reported_at_once() {
    let source = r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {}
service Things {
  option (keel.v1.service) = { auth: { scopes: [""] } };
  rpc Get(Req) returns (Req) {
    option (keel.v1.method) = { labels: { key: "a-b" value: "x" } };
  }
}
"#;
    let (_dir, result) = compile(source);
    let err = result.expect_err("must fail");
    let positions: Vec<(usize, usize)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.column))
        .collect();
    assert_eq!(positions, vec![(6, 49), (8, 48)], "{err}");
}

#[test]
fn valid_annotations_resolve_with_fail_closed_defaults() {
    let source = r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {}
service Open {
  option (keel.v1.service) = { auth: { public: true } labels: { key: "team" value: "core" } };
  rpc Ping(Req) returns (Req);
  rpc Admin(Req) returns (Req) {
    option (keel.v1.method) = { auth: { scopes: ["admin"] } labels: { key: "team" value: "ops" } };
  }
}
service Closed {
  rpc Get(Req) returns (stream Req);
}
"#;
    let (dir, result) = compile(source);
    let generated = result.unwrap();
    assert_eq!(generated.services, vec!["test.v1.Open", "test.v1.Closed"]);
    assert_eq!(generated.files, vec![dir.path().join("out/test.v1.rs")]);
    let code = std::fs::read_to_string(&generated.files[0]).unwrap();
    assert!(code.starts_with("// @generated"));
    let compact: String = code.split_whitespace().collect();
    // Service default applies; the method overrides auth and the label.
    assert!(compact.contains(r#"name:"Ping",path:"/test.v1.Open/Ping",kind:::keel_rpc::codegen::MethodKind::Unary,access:::keel_rpc::codegen::Access::Public,labels:&[("team","core")]"#), "{code}");
    assert!(compact.contains(r#"name:"Admin",path:"/test.v1.Open/Admin",kind:::keel_rpc::codegen::MethodKind::Unary,access:::keel_rpc::codegen::Access::Token{scopes:&["admin"],},labels:&[("team","ops")]"#), "{code}");
    // No annotation anywhere: a token is required (fail closed).
    assert!(compact.contains(r#"name:"Get",path:"/test.v1.Closed/Get",kind:::keel_rpc::codegen::MethodKind::ServerStreaming,access:::keel_rpc::codegen::Access::Token{scopes:&[],}"#), "{code}");
    assert!(
        compact.contains(r#""/test.v1.Closed/Get"=>Some(0)"#),
        "{code}"
    );
    assert!(
        compact.contains("pubfnclosed<T:closed_server::Closed>"),
        "{code}"
    );
}

#[test]
fn syntax_errors_point_at_the_file() {
    let (_dir, result) = compile("syntax = \"proto3\";\npackage test.v1;\nmessage {\n");
    let err = result.expect_err("must fail");
    let d = err.diagnostics()[0].clone();
    assert!(d.file.ends_with(Path::new("test/v1/svc.proto")), "{err}");
    assert_eq!(d.line, 3, "{err}");
}

#[test]
fn a_timeout_must_be_positive_and_within_its_cap() {
    assert_diagnostic(
        &with_method_option(
            "option (keel.v1.method) = { timeout: { seconds: 10 } max_timeout: { seconds: 5 } };",
        ),
        9,
        33,
        "timeout (10s) is longer than max_timeout (5s)",
    );
    assert_diagnostic(
        &with_method_option("option (keel.v1.method) = { timeout: { seconds: -1 } };"),
        9,
        33,
        "timeout: must be a positive duration",
    );
    assert_diagnostic(
        &with_method_option("option (keel.v1.method) = { max_timeout: {} };"),
        9,
        33,
        "max_timeout: must be a positive duration",
    );
}

#[test]
fn timeouts_and_max_concurrency_reach_the_policy_table_method_over_service() {
    let source = r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {}
service Things {
  option (keel.v1.service) = { auth: { public: true } max_timeout: { seconds: 30 } };
  rpc List(Req) returns (Req);
  rpc Get(Req) returns (Req) {
    option (keel.v1.method) = { timeout: { nanos: 250000000 } max_concurrency: 8 };
  }
}
"#;
    let (_dir, result) = compile(source);
    let code = std::fs::read_to_string(&result.expect("valid").files[0]).unwrap();
    // Whitespace and trailing commas as prettyplease lays them out do not matter.
    let one_line = code
        .split_whitespace()
        .collect::<String>()
        .replace(",)", ")");
    assert!(
        one_line.contains("timeout:::core::option::Option::None,max_timeout:::core::option::Option::Some(::core::time::Duration::from_nanos(30000000000))"),
        "List: the service's cap, no default:\n{code}"
    );
    assert!(
        one_line.contains("timeout:::core::option::Option::Some(::core::time::Duration::from_nanos(250000000)),max_timeout:::core::option::Option::Some(::core::time::Duration::from_nanos(30000000000))"),
        "Get: its own default under the service's cap:\n{code}"
    );
    assert!(
        one_line.contains("max_concurrency:::core::option::Option::Some(8u32)"),
        "Get's max_concurrency:\n{code}"
    );
    assert_eq!(
        one_line
            .matches("max_concurrency:::core::option::Option::None")
            .count(),
        1,
        "List has none:\n{code}"
    );
}

#[test]
fn a_rate_limit_needs_a_rate_and_a_key_the_method_has() {
    assert_diagnostic(
        &with_method_option("option (keel.v1.method) = { rate_limit: { burst: 5 } };"),
        9,
        33,
        "rate_limit: per_second must be at least 0.000001 calls per second (found 0)",
    );
    assert_diagnostic(
        &with_method_option(
            "option (keel.v1.method) = { rate_limit: { per_second: 5 key: \"ip\" } };",
        ),
        9,
        66,
        "rate_limit: key \"ip\" is not one of \"global\", \"peer\", \"subject\" or \"claim:<name>\"",
    );
    assert_diagnostic(
        &with_method_option(
            "option (keel.v1.method) = { rate_limit: { per_second: 5 key: \"claim:\" } };",
        ),
        9,
        66,
        "rate_limit: key \"claim:\" is not one of",
    );
    assert_diagnostic(
        &with_method_option(
            "option (keel.v1.method) = { auth: { public: true } rate_limit: { per_second: 5 key: \"subject\" } };",
        ),
        9,
        89,
        "rate_limit: key \"subject\" comes from the access token, but this method reads none",
    );
}

#[test]
fn rate_limits_reach_the_policy_table_method_over_service() {
    let source = r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {}
service Things {
  option (keel.v1.service) = { rate_limit: { per_second: 2.5 key: "claim:tenant" } };
  rpc List(Req) returns (Req);
  rpc Get(Req) returns (Req) {
    option (keel.v1.method) = { auth: { public: true } rate_limit: { per_second: 100 burst: 20 key: "peer" } };
  }
}
"#;
    let (_dir, result) = compile(source);
    let code = std::fs::read_to_string(&result.expect("valid").files[0]).unwrap();
    let one_line = code
        .split_whitespace()
        .collect::<String>()
        .replace(",)", ")")
        .replace(",}", "}");
    assert!(
        one_line.contains(
            "rate_limit:::core::option::Option::Some(::keel_rpc::codegen::RateLimit{per_second:2.5f64,burst:3u32,key:::keel_rpc::codegen::RateKey::Claim(\"tenant\")})"
        ),
        "List: the service's limit, its burst the rate rounded up:\n{code}"
    );
    assert!(
        one_line.contains(
            "rate_limit:::core::option::Option::Some(::keel_rpc::codegen::RateLimit{per_second:100f64,burst:20u32,key:::keel_rpc::codegen::RateKey::Peer})"
        ),
        "Get: its own:\n{code}"
    );
}

#[test]
fn a_retry_policy_is_checked_whole_and_only_for_unary_methods() {
    let (_dir, result) = compile(&with_method_option(
        "option (keel.v1.method) = { retry: { max_attempts: 9 backoff_multiplier: -1 retryable_codes: [\"OK\", \"NOPE\"] initial_backoff: { seconds: 2 } } };",
    ));
    let text = result.expect_err("must fail").to_string();
    for needle in [
        "svc.proto:9:56: retry: max_attempts must be 2 to 5, the first attempt included (found 9)",
        "svc.proto:9:33: retry: max_backoff is required",
        "svc.proto:9:78: retry: backoff_multiplier must be positive (found -1)",
        "svc.proto:9:99: retry: retryable_codes: \"OK\" is not a status code that can be retried",
        "svc.proto:9:105: retry: retryable_codes: \"NOPE\" is not a status code",
    ] {
        assert!(text.contains(needle), "{needle} in:\n{text}");
    }
    assert_diagnostic(
        &with_method_option(
            "option (keel.v1.method) = { retry: { max_attempts: 3 initial_backoff: { seconds: 2 } max_backoff: { seconds: 1 } backoff_multiplier: 2 retryable_codes: [\"UNAVAILABLE\"] } };",
        ),
        9,
        90,
        "retry: max_backoff (1s) is shorter than initial_backoff (2s)",
    );
    let streaming = r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {}
service Things {
  rpc Watch(Req) returns (stream Req) {
    option (keel.v1.method) = { retry: { max_attempts: 2 initial_backoff: { nanos: 1000 } max_backoff: { seconds: 1 } backoff_multiplier: 1 retryable_codes: ["UNAVAILABLE"] } };
  }
}
"#;
    assert_diagnostic(streaming, 7, 33, "retry: streaming calls are not retried");
}

#[test]
fn retry_policies_and_idempotent_methods_reach_the_table_and_the_service_config() {
    let source = r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {}
service Things {
  option (keel.v1.service) = { auth: { public: true } };
  rpc Get(Req) returns (Req) {
    option idempotency_level = NO_SIDE_EFFECTS;
  }
  rpc Put(Req) returns (Req) {
    option (keel.v1.method) = { retry: { max_attempts: 4 initial_backoff: { nanos: 50000000 } max_backoff: { seconds: 2 } backoff_multiplier: 1.5 retryable_codes: ["UNAVAILABLE", "RESOURCE_EXHAUSTED"] } };
  }
  rpc Post(Req) returns (Req);
  rpc Watch(Req) returns (stream Req) {
    option idempotency_level = NO_SIDE_EFFECTS;
  }
}
"#;
    let (_dir, result) = compile(source);
    let code = std::fs::read_to_string(&result.expect("valid").files[0]).unwrap();
    let one_line = code
        .split_whitespace()
        .collect::<String>()
        .replace(",)", ")")
        .replace(",}", "}")
        .replace(",]", "]");
    assert!(
        one_line.contains("retry:::core::option::Option::Some(::keel_rpc::codegen::RetryPolicy{max_attempts:3u32,initial_backoff:::core::time::Duration::from_nanos(100000000),max_backoff:::core::time::Duration::from_nanos(1000000000),backoff_multiplier:2f64,retryable_codes:&[::tonic::Code::Unavailable]})"),
        "Get: the default of a method without side effects:\n{code}"
    );
    assert!(
        one_line.contains(
            "retryable_codes:&[::tonic::Code::Unavailable,::tonic::Code::ResourceExhausted]"
        ),
        "Put: its own:\n{code}"
    );
    assert_eq!(
        one_line
            .matches("retry:::core::option::Option::None")
            .count(),
        2,
        "Post (no policy) and Watch (streaming):\n{code}"
    );
    let start = code
        .find("THINGS_SERVICE_CONFIG: &str = \"")
        .expect("the service config")
        + 31;
    let literal: String = syn::parse_str::<syn::LitStr>(
        &code[start - 1..][..code[start - 1..].find("\";").unwrap() + 1],
    )
    .unwrap()
    .value();
    let config: serde_json::Value = serde_json::from_str(&literal).unwrap();
    let methods = config["methodConfig"].as_array().unwrap();
    assert_eq!(methods.len(), 2, "{config}");
    assert_eq!(methods[0]["name"][0]["method"], "Get");
    assert_eq!(methods[0]["retryPolicy"]["initialBackoff"], "0.1s");
    assert_eq!(methods[1]["retryPolicy"]["maxAttempts"], 4);
    assert_eq!(methods[1]["retryPolicy"]["backoffMultiplier"], 1.5);
    assert_eq!(
        methods[1]["retryPolicy"]["retryableStatusCodes"][1],
        "RESOURCE_EXHAUSTED"
    );
    assert_eq!(
        config["retryThrottling"],
        serde_json::json!({"maxTokens": 100, "tokenRatio": 0.1})
    );
}

#[test]
fn message_options_of_the_users_own_reach_the_policy_table_encoded() {
    let source = r#"syntax = "proto3";
package test.v1;
import "google/protobuf/descriptor.proto";
import "keel/v1/options.proto";
message Audit { string action = 1; }
extend google.protobuf.MethodOptions {
  Audit audit = 51000;
  bool flag = 51001;
}
message Req {}
service Things {
  rpc Put(Req) returns (Req) {
    option (test.v1.audit) = { action: "put" };
    option (test.v1.flag) = true;
    option (keel.v1.method) = { auth: { public: true } };
  }
  rpc Get(Req) returns (Req);
}
"#;
    let (_dir, result) = compile(source);
    let code = std::fs::read_to_string(&result.expect("valid").files[0]).unwrap();
    let one_line = code.split_whitespace().collect::<String>();
    assert!(
        one_line.contains(r#"options:&[("test.v1.audit",b"\n\x03put")]"#),
        "Put's own message option, and neither Keel's nor a scalar one:\n{code}"
    );
    assert!(one_line.contains("options:&[]"), "Get has none:\n{code}");
    assert!(
        one_line.contains("pubfnthings_with<"),
        "the layered constructor:\n{code}"
    );
}

/// The one diagnostic of `source`, as rendered (`…/svc.proto:line:column: message`).
fn only_diagnostic(source: &str) -> String {
    let (_dir, result) = compile(source);
    let err = result.expect_err("must fail");
    let diagnostics = err.diagnostics();
    assert_eq!(diagnostics.len(), 1, "{err}");
    diagnostics[0].to_string()
}

/// Asserts that `rendered` is at `svc.proto:{at}` and ends with `tail`.
fn assert_at(rendered: &str, at: &str, tail: &str) {
    assert!(
        rendered.contains(&format!("svc.proto:{at}: ")),
        "want {at}: {rendered}"
    );
    assert!(rendered.ends_with(tail), "want …{tail}: {rendered}");
}

#[test]
fn a_misspelt_option_field_is_pointed_at_with_the_field_meant() {
    assert_at(
        &only_diagnostic(&with_method_option(
            r#"option (keel.v1.method) = { auth: { scopez: ["a"] } };"#,
        )),
        "9:41",
        "field 'scopez' not found for message 'keel.v1.Auth'; did you mean `scopes`?",
    );
    assert_at(
        &only_diagnostic(&with_method_option(
            r#"option (keel.v1.method) = { auht: { public: true } };"#,
        )),
        "9:33",
        "field 'auht' not found for message 'keel.v1.MethodOptions'; did you mean `auth`?",
    );
    // Over lines, past a comment naming it.
    assert_at(
        &only_diagnostic(&with_method_option(
            "option (keel.v1.method) = {\n      auth { public: true } # per_secnd\n      rate_limit { per_secnd: 5 }\n    };",
        )),
        "11:20",
        "field 'per_secnd' not found for message 'keel.v1.RateLimit'; did you mean `per_second`?",
    );
}

#[test]
fn a_field_close_to_none_gets_no_suggestion() {
    let rendered = only_diagnostic(&with_method_option("option (keel.v1.method) = { zzz: 1 };"));
    assert_at(
        &rendered,
        "9:33",
        "field 'zzz' not found for message 'keel.v1.MethodOptions'",
    );
    let rendered = only_diagnostic(&with_method_option(
        r#"option (keel.v1.method) = { rate_limit: { per_second: 5 key: "ip" } };"#,
    ));
    assert!(!rendered.contains("did you mean"), "{rendered}");
}

#[test]
fn a_misspelt_option_name_is_pointed_at_with_the_name_meant() {
    assert_at(
        &only_diagnostic(&with_method_option(
            r#"option (keel.v1.method).rate_limt.key = "ip";"#,
        )),
        "9:29",
        "option field '(keel.v1.method).rate_limt' is not defined; did you mean `rate_limit`?",
    );
    assert_at(
        &only_diagnostic(&with_method_option(
            "option (keel.v1.methd) = { auth: { public: true } };",
        )),
        "9:12",
        "'keel.v1.methd' resolves to 'keel.v1.methd', which is not defined; did you mean `(keel.v1.method)`?",
    );
    let validated = "syntax = \"proto3\";\npackage test.v1;\nimport \"buf/validate/validate.proto\";\nmessage Req {\n  string user_id = 1 [(buf.validate.field).string.min_lenn = 1];\n}\n";
    assert_at(
        &only_diagnostic(validated),
        "5:51",
        "option field '(buf.validate.field).string.min_lenn' is not defined; did you mean `min_len`?",
    );
}

#[test]
fn a_wrong_value_is_pointed_at_in_the_option() {
    // Not the first `rate_limit` text of the option: that one is a comment.
    assert_at(
        &only_diagnostic(&with_method_option(
            "option (keel.v1.method) = {\n      // rate_limit { key: \"x\" }\n      rate_limit { per_second: 5 key: \"subjet\" }\n    };",
        )),
        "11:39",
        r#"rate_limit: key "subjet" is not one of "global", "peer", "subject" or "claim:<name>"; did you mean "subject"?"#,
    );
    assert_at(
        &only_diagnostic(&with_method_option(
            r#"option (keel.v1.method) = { rate_limit: { per_second: 5 key: "clam:tenant" } };"#,
        )),
        "9:66",
        r#"did you mean "claim:tenant"?"#,
    );
    assert_at(
        &only_diagnostic(&with_method_option(
            r#"option (keel.v1.method) = { timeout: "5s" };"#,
        )),
        "9:42",
        "expected '{' or '<', but found '\"5s\"'",
    );
    // A statement setting one field of the option.
    assert_at(
        &only_diagnostic(&with_method_option(
            r#"option (keel.v1.method).auth.scopes = "";"#,
        )),
        "9:43",
        "auth: empty scope",
    );
    assert_at(
        &only_diagnostic(&with_method_option(
            r#"option (keel.v1.method) = { retry: { max_attempts: 3 initial_backoff: { seconds: 1 } max_backoff: { seconds: 1 } backoff_multiplier: 2 retryable_codes: ["UNAVAILABLE", "UNAVAILBLE"] } };"#,
        )),
        "9:173",
        r#"retryable_codes: "UNAVAILBLE" is not a status code that can be retried (CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED); did you mean "UNAVAILABLE"?"#,
    );
}

#[test]
fn http_routes_name_the_request_field_meant_where_it_is_written() {
    let source = r#"syntax = "proto3";
package test.v1;
import "google/api/annotations.proto";
message GetUserRequest { string user_id = 1; string name = 2; }
message User { string display_name = 1; }
service Users {
  rpc Get(GetUserRequest) returns (User) { option (google.api.http) = { get: "/v1/users/{usr_id}" }; }
  rpc Put(GetUserRequest) returns (User) {
    option (google.api.http) = {
      put: "/v1/users"
      body: "nmae"
      additional_bindings { post: "/v1/users/{user_id}" response_body: "display_nam" }
    };
  }
  rpc List(GetUserRequest) returns (User) { option (google.api.http) = { get: "/v1/{zzz}" }; }
}
"#;
    let (_dir, result) = compile(source);
    let err = result.expect_err("must fail");
    let found: Vec<String> = err
        .diagnostics()
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect();
    assert_eq!(
        found,
        [
            "7:78: google.api.http: path variable {usr_id}: no field \"usr_id\" in test.v1.GetUserRequest; did you mean `user_id`?",
            "11:13: google.api.http: body \"nmae\" is no field of test.v1.GetUserRequest; did you mean `name`?",
            "12:72: google.api.http: response_body \"display_nam\" is no field of test.v1.User; did you mean `display_name`?",
            "15:79: google.api.http: path variable {zzz}: no field \"zzz\" in test.v1.GetUserRequest",
        ],
        "{err}"
    );
}

#[test]
fn stream_limits_are_checked_at_the_field_and_reach_the_table() {
    // Line 9 is the option of `Get`, a unary method.
    assert_diagnostic(
        &with_method_option("option (keel.v1.method) = { stream_idle_timeout: { seconds: 30 } };"),
        9,
        33,
        "stream_idle_timeout: only a streaming method has streams to limit",
    );
    assert_diagnostic(
        &with_method_option("option (keel.v1.method) = { max_stream_duration: { nanos: -1 } };"),
        9,
        33,
        "max_stream_duration: must be a positive duration",
    );
    let streaming = r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {}
service Things {
  option (keel.v1.service) = { auth: { public: true } max_stream_duration: { seconds: 300 } max_stream_messages: 9 };
  rpc Get(Req) returns (Req);
  rpc Watch(Req) returns (stream Req) {
    option (keel.v1.method) = { max_stream_messages: 5 };
  }
}
"#;
    assert_diagnostic(
        streaming,
        9,
        54,
        "max_stream_messages: counts the messages a client streams",
    );
    let fine = streaming.replace(
        "option (keel.v1.method) = { max_stream_messages: 5 };",
        "option (keel.v1.method) = { stream_idle_timeout: { seconds: 30 } };",
    );
    let (_dir, result) = compile(&fine);
    let code = std::fs::read_to_string(&result.expect("valid").files[0]).unwrap();
    // The service's defaults apply where they can: the duration to the
    // stream, not the count (a server stream's client sends one message),
    // and neither to the unary method.
    let squashed: String = code.split_whitespace().collect();
    assert!(
        squashed.contains(concat!(
            "stream:::keel_rpc::codegen::StreamLimits{",
            "max_duration:::core::option::Option::Some(::core::time::Duration::from_nanos(300000000000),),",
            "idle_timeout:::core::option::Option::Some(::core::time::Duration::from_nanos(30000000000),),",
            "max_messages:::core::option::Option::None,}",
        )),
        "{code}"
    );
    assert_eq!(
        squashed
            .matches("stream:::keel_rpc::codegen::StreamLimits::NONE")
            .count(),
        1,
        "{code}"
    );
}

#[test]
fn criticality_reaches_the_table_method_over_service() {
    let source = r#"syntax = "proto3";
package test.v1;
import "keel/v1/options.proto";
message Req {}
service Things {
  option (keel.v1.service) = { auth: { public: true } criticality: SHEDDABLE };
  rpc Export(Req) returns (Req);
  rpc Get(Req) returns (Req) {
    option (keel.v1.method) = { criticality: CRITICAL_PLUS };
  }
}
"#;
    let (_dir, result) = compile(source);
    let code = std::fs::read_to_string(&result.expect("valid").files[0]).unwrap();
    let squashed: String = code.split_whitespace().collect();
    let order: Vec<&str> = squashed
        .match_indices("criticality:::keel_rpc::codegen::Criticality::")
        .map(|(at, found)| {
            let rest = &squashed[at + found.len()..];
            &rest[..rest.find(',').unwrap()]
        })
        .collect();
    assert_eq!(order, ["Sheddable", "CriticalPlus"], "{code}");
}
