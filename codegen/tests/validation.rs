//! `buf.validate` rules: every mistake fails the build at the rule's
//! file:line:column, all of them at once; a rule Keel does not implement is
//! an error, never skipped; valid rules give `impl Validate` and a server
//! that decodes with the validating codec (its client keeps tonic's codec).

mod common;

use common::compile;
use std::path::Path;

/// A proto with one message holding `fields` (from line 5 on) and a
/// service taking it.
fn with_fields(fields: &str) -> String {
    format!(
        r#"syntax = "proto3";
package test.v1;
import "buf/validate/validate.proto";
message Req {{
{fields}
}}
message Res {{}}
service Things {{
  rpc Get(Req) returns (Res);
}}
"#
    )
}

/// The diagnostics of `source`, as `line:column: message`.
fn diagnostics(source: &str) -> Vec<String> {
    let (_dir, result) = compile(source);
    let err = result.expect_err("must fail");
    err.diagnostics()
        .iter()
        .map(|d| {
            assert!(d.file.ends_with(Path::new("test/v1/svc.proto")), "{d}");
            format!("{}:{}: {}", d.line, d.column, d.message)
        })
        .collect()
}

#[test]
fn every_rule_mistake_is_reported_at_its_field_at_once() {
    let found = diagnostics(&with_fields(
        r#"  string a = 1 [(buf.validate.field).string.pattern = "(unclosed"];
  string b = 2 [(buf.validate.field).string = { min_len: 5, max_len: 2 }];
  int32 c = 3 [(buf.validate.field).string.min_len = 1];
  string d = 4 [(buf.validate.field).cel = { id: "d.bad", expression: "this ==" }];
  repeated string e = 5 [(buf.validate.field).string.min_len = 1];
  string f = 6 [(buf.validate.field).repeated.min_items = 1];
  string g = 7 [(buf.validate.field).string.well_known_regex = KNOWN_REGEX_HTTP_HEADER_NAME];
  repeated int32 h = 8 [(buf.validate.field).repeated = { min_items: 3, max_items: 1 }];"#,
    ));
    let expect = [
        (
            "5:",
            "string.pattern \"(unclosed\" is not a valid regular expression",
        ),
        (
            "6:",
            "string.min_len (5) is greater than string.max_len (2)",
        ),
        ("7:", "`string` rules on field `c` of type int32"),
        ("8:", "CEL rule `d.bad` does not parse"),
        (
            "9:",
            "`string` rules on the repeated field `e`; rules of its items go in `repeated.items`",
        ),
        (
            "10:",
            "`repeated` rules on field `f`, which is not a repeated field",
        ),
        (
            "11:",
            "rule `string.well_known_regex` is not supported by Keel",
        ),
        (
            "12:",
            "repeated.min_items (3) is greater than repeated.max_items (1)",
        ),
    ];
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    for ((line, needle), got) in expect.iter().zip(&found) {
        assert!(
            got.starts_with(line) && got.contains(needle),
            "{got} (want {line} {needle})"
        );
        // The column points into the line, at the field or its option.
        let column: usize = got.split(':').nth(1).unwrap().parse().unwrap();
        assert!(column >= 3, "{got}");
    }
}

#[test]
fn unimplemented_rule_types_and_bad_oneof_rules_are_errors() {
    let found = diagnostics(
        r#"syntax = "proto3";
package test.v1;
import "buf/validate/validate.proto";
import "google/protobuf/any.proto";
message Req {
  option (buf.validate.message).oneof = { fields: ["a", "nope"] };
  string a = 1;
  google.protobuf.Any at = 2 [(buf.validate.field).any.in = "type.googleapis.com/x.Y"];
}
"#,
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("8:")
            && found[0].contains("`any` rules are not supported by Keel yet"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("6:")
            && found[1].contains("names `nope`, which is no field of test.v1.Req"),
        "{found:#?}"
    );
}

#[test]
fn rules_give_checks_and_a_validating_server_codec() {
    let (dir, result) = compile(&with_fields(
        r#"  string name = 1 [(buf.validate.field).string.min_len = 1];
  int32 size = 2 [(buf.validate.field).int32 = { gt: 0, lt: 10 }];"#,
    ));
    let generated = result.unwrap();
    let code = std::fs::read_to_string(dir.path().join("out/test.v1.rs")).unwrap();
    assert!(
        code.contains("impl ::keel_rpc::validate::Validate for Req"),
        "{code}"
    );
    assert!(
        code.contains(r#""int32.gt_lt""#)
            && code.contains("must be greater than 0 and less than 10")
    );
    // The server decodes with the validating codec, the client with tonic's.
    let server = &code[code.find("pub mod things_server").unwrap()..];
    let client = &code
        [code.find("pub mod things_client").unwrap()..code.find("pub mod things_server").unwrap()];
    assert!(server.contains("::keel_rpc::validate::ValidatingCodec::default()"));
    assert!(
        client.contains("tonic_prost::ProstCodec::default()")
            && !client.contains("ValidatingCodec")
    );
    assert!(generated.policies[0].methods[0].validated);
}

#[test]
fn a_service_without_rules_keeps_tonics_codec() {
    let (dir, result) = compile(&with_fields("  string name = 1;"));
    let generated = result.unwrap();
    let code = std::fs::read_to_string(dir.path().join("out/test.v1.rs")).unwrap();
    assert!(!code.contains("ValidatingCodec"), "{code}");
    assert!(!generated.policies[0].methods[0].validated);
}
