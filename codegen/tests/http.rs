//! `google.api.http` routes: read into the policies, and every mistake a
//! build error at the method's option, all at once.

mod common;

use common::compile;

const MESSAGES: &str = r#"
message Inner { string id = 1; repeated string tags = 2; }
message Req {
  string id = 1;
  repeated string tags = 2;
  Inner inner = 3;
  map<string, string> labels = 4;
}
message Res { string name = 1; }
"#;

fn proto(methods: &str) -> String {
    format!(
        "syntax = \"proto3\";\npackage test.v1;\nimport \"google/api/annotations.proto\";\n{MESSAGES}\nservice Things {{\n{methods}\n}}\n"
    )
}

#[test]
fn routes_reach_the_policies() {
    let (_dir, result) = compile(&proto(
        r#"  rpc Get(Req) returns (Res) {
    option (google.api.http) = {
      get: "/v1/things/{id}"
      additional_bindings { get: "/v1/{inner.id=inner/*}/things" }
    };
  }
  rpc Create(Req) returns (Res) {
    option (google.api.http) = { post: "/v1/things" body: "*" response_body: "name" };
  }
  rpc Verb(Req) returns (Res) {
    option (google.api.http) = { custom: { kind: "HEAD" path: "/v1/things/{id}:probe" } };
  }
  rpc Plain(Req) returns (Res);"#,
    ));
    let generated = result.unwrap_or_else(|e| panic!("{e}"));
    let methods = &generated.policies[0].methods;
    let shown: Vec<Vec<String>> = methods
        .iter()
        .map(|m| m.http.iter().map(ToString::to_string).collect())
        .collect();
    assert_eq!(
        shown,
        vec![
            vec![
                "GET /v1/things/{id}".to_owned(),
                "GET /v1/{inner.id=inner/*}/things".to_owned()
            ],
            vec!["POST /v1/things (body *)".to_owned()],
            vec!["HEAD /v1/things/{id}:probe".to_owned()],
            vec![],
        ]
    );
    assert_eq!(methods[1].http[0].response_body.as_deref(), Some("name"));
}

#[test]
fn every_route_mistake_is_reported_at_its_method() {
    let (_dir, result) = compile(&proto(
        r#"  rpc A(Req) returns (Res) { option (google.api.http) = { get: "/v1//a" }; }
  rpc B(Req) returns (Res) { option (google.api.http) = { get: "/v1/b/{nope}" }; }
  rpc C(Req) returns (Res) { option (google.api.http) = { get: "/v1/c/{tags}" }; }
  rpc D(Req) returns (Res) { option (google.api.http) = { get: "/v1/d/{inner}" }; }
  rpc E(Req) returns (Res) { option (google.api.http) = { post: "/v1/e" body: "nope" }; }
  rpc F(Req) returns (Res) { option (google.api.http) = { get: "/v1/f" body: "*" }; }
  rpc G(Req) returns (Res) { option (google.api.http) = { get: "/v1/b/{id}" }; }
  rpc H(Req) returns (Res) { option (google.api.http) = { get: "/v1/h/{id}" }; }
  rpc I(Req) returns (Res) { option (google.api.http) = { get: "/v1/h/{id}" }; }
  rpc J(Req) returns (Res) { option (google.api.http) = { post: "/v1/j" response_body: "nope" }; }
  rpc K(Req) returns (Res) { option (google.api.http) = { get: "/v1/k/{labels}" }; }
  rpc L(Req) returns (Res) {
    option (google.api.http) = {
      get: "/v1/l"
      additional_bindings { get: "/v1/l2" additional_bindings { get: "/v1/l3" } }
    };
  }"#,
    ));
    let error = result.expect_err("must fail");
    let found: Vec<String> = error
        .diagnostics()
        .iter()
        .map(|d| format!("{}: {}", d.line, d.message))
        .collect();
    let expect = [
        (15, "path \"/v1//a\": an empty segment"),
        (16, "path variable {nope}: no field \"nope\" in test.v1.Req"),
        (17, "path variable {tags}: \"tags\" is a repeated field"),
        (
            18,
            "path variable {inner}: \"inner\" is a message field (test.v1.Inner)",
        ),
        (19, "body \"nope\" is no field of test.v1.Req"),
        (20, "a GET route has no body"),
        // The same shape as B's, whatever the variable is called.
        (21, "GET /v1/b/{id} is also a route of test.v1.Things/B"),
        (23, "GET /v1/h/{id} is also a route of test.v1.Things/H"),
        (24, "response_body \"nope\" is no field of test.v1.Res"),
        (25, "path variable {labels}: \"labels\" is a map field"),
        (29, "additional_bindings may not have their own"),
    ];
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    for ((line, needle), got) in expect.iter().zip(&found) {
        assert!(
            got.starts_with(&format!("{line}: ")) && got.contains(needle),
            "{got} (want {line}: {needle})"
        );
    }
}

#[test]
fn an_openapi_document_describes_the_routes() {
    let (_dir, result) = compile(
        &proto(
            r#"  option (keel.v1.service) = { auth: { scopes: ["things:read"] } };
  // Reads one thing.
  rpc Get(Req) returns (Res) {
    option (google.api.http) = { get: "/v1/things/{id}" };
  }
  rpc Create(Req) returns (Res) {
    option (google.api.http) = { post: "/v1/things" body: "*" };
    option (keel.v1.method) = { auth: { public: true } };
  }
  rpc Plain(Req) returns (Res);"#,
        )
        .replace(
            "import \"google/api/annotations.proto\";",
            "import \"google/api/annotations.proto\";\nimport \"keel/v1/options.proto\";",
        ),
    );
    let generated = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(generated.openapi.len(), 1);
    assert!(generated.openapi[0].ends_with("test.v1.Things.openapi.json"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&generated.openapi[0]).unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let get = &doc["paths"]["/v1/things/{id}"]["get"];
    assert_eq!(get["description"], "Reads one thing.");
    assert_eq!(get["parameters"][0]["in"], "path");
    assert_eq!(get["security"][0]["bearer"][0], "things:read");
    // The other scalar fields are query parameters, by their JSON names, and
    // the deadline.
    let query: Vec<&str> = get["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(query, ["tags", "timeout"]);
    let create = &doc["paths"]["/v1/things"]["post"];
    assert_eq!(
        create["security"],
        serde_json::json!([]),
        "public: no requirement"
    );
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/test.v1.Req"
    );
    assert_eq!(
        doc["components"]["schemas"]["test.v1.Req"]["properties"]["labels"]["additionalProperties"]
            ["type"],
        "string"
    );
    assert_eq!(
        get["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/google.rpc.Status"
    );
}
