//! `debug_redact = true` fields: codegen replaces prost's derived `Debug` of
//! their messages (and of the messages and oneofs nested in them) with one
//! that prints `[REDACTED]` for those fields.

fn generate(source: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let protos = dir.path().join("protos/test/v1");
    std::fs::create_dir_all(&protos).unwrap();
    std::fs::write(protos.join("secrets.proto"), source).unwrap();
    let generated = keel_rpc_codegen::configure()
        .out_dir(dir.path().join("out"))
        .emit_rerun_if_changed(false)
        .compile(
            &[protos.join("secrets.proto")],
            &[dir.path().join("protos")],
        )
        .expect("compiles");
    std::fs::read_to_string(&generated.files[0]).unwrap()
}

const SECRETS: &str = r#"syntax = "proto3";
package test.v1;
message Login {
  string user = 1;
  string password = 2 [debug_redact = true];
  oneof proof {
    string otp = 3 [debug_redact = true];
    int32 attempt = 4;
  }
  message Device {
    string name = 1;
  }
  Device device = 5;
}
message Plain {
  string note = 1;
}
"#;

#[test]
fn redacted_fields_and_oneof_variants_print_redacted() {
    let code = generate(SECRETS);
    let login = code
        .find("impl ::core::fmt::Debug for Login")
        .expect("Login's Debug");
    let body = &code[login..];
    assert!(body.contains(r#"s.field("user", &self.user)"#), "{code}");
    assert!(
        body.contains(r#"s.field("password", &::core::format_args!("[REDACTED]"))"#),
        "{code}"
    );
    assert!(!body.contains("self.password"), "{code}");
    // The oneof prints through its own Debug, which redacts `otp` only.
    let proof = code
        .find("impl ::core::fmt::Debug for login::Proof")
        .expect("the oneof's Debug");
    let proof = &code[proof..];
    assert!(proof.contains("Self::Otp(_) =>"), "{code}");
    assert!(
        proof.contains(r#"f.debug_tuple("Otp").field(&::core::format_args!("[REDACTED]"))"#),
        "{code}"
    );
    assert!(
        proof.contains(r#"Self::Attempt(value) => f.debug_tuple("Attempt").field(value)"#),
        "{code}"
    );
    // prost-build's skip_debug of Login covers its nested message: written too.
    assert!(
        code.contains("impl ::core::fmt::Debug for login::Device"),
        "{code}"
    );
    // A message without redacted fields keeps prost's derived Debug.
    assert!(
        !code.contains("impl ::core::fmt::Debug for Plain"),
        "{code}"
    );
    assert_eq!(
        code.matches("#[prost(skip_debug)]").count(),
        3,
        "Login, its oneof, Device:\n{code}"
    );
}
