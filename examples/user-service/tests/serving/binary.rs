//! The `user-service` executable: its production checks at startup, its
//! signals and its `call` command.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;

use crate::common;
use crate::common::*;

#[test]
fn the_binary_refuses_to_start_in_production_without_a_key_of_its_own() {
    use std::process::Command;
    let start = |vars: &[(&str, &str)]| {
        // Only this test's configuration: no KEEL_* variable of the caller.
        let output = Command::new(env!("CARGO_BIN_EXE_user-service"))
            .env_clear()
            .env("KEEL_SERVER__ADDR", "127.0.0.1:0")
            .env("KEEL_METRICS__ENABLED", "false")
            .envs(vars.iter().copied())
            .output()
            .expect("run user-service");
        assert!(!output.status.success(), "{vars:?}: it started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = start(&[]);
    assert!(
        stderr
            .contains("auth.hmac_secret: missing; required for HS256 (set KEEL_AUTH__HMAC_SECRET)"),
        "{stderr}"
    );
    let stderr = start(&[("KEEL_AUTH__HMAC_SECRET", user_service::DEV_SECRET)]);
    assert!(
        stderr.contains(
            "auth.hmac_secret: is a development credential, not allowed in production; \
             configure one of your own (or set service.environment = \"development\") \
             (from environment variable KEEL_AUTH__HMAC_SECRET)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains(user_service::DEV_SECRET), "{stderr}");
}

#[test]
fn kubernetes_service_variables_starting_with_keel_do_not_stop_the_binary() {
    // Kubernetes puts these into every pod of a namespace that has a Service
    // named `keel-auth`; `print-config` loads and checks the configuration
    // as `serve` does.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"))
        .arg("print-config")
        .env_clear()
        .env("KEEL_SERVICE__ENVIRONMENT", "development")
        .env("KEEL_AUTH_PORT", "tcp://10.0.0.7:50053")
        .env("KEEL_AUTH_PORT_50053_TCP", "tcp://10.0.0.7:50053")
        .env("KEEL_AUTH_SERVICE_HOST", "10.0.0.7")
        .env("KEEL_AUTH_SERVICE_PORT", "50053")
        .output()
        .expect("run user-service print-config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("[server]"));
    // Said once, naming them, with the hint for the look-alike of a key.
    assert_eq!(stderr.matches("warning: ").count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "ignoring environment variables that are not configuration (configuration \
             variables are KEEL_<SECTION>__<KEY>): KEEL_AUTH_PORT (did you mean KEEL_AUTH__PORT?)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("KEEL_AUTH_SERVICE_HOST"), "{stderr}");
    assert!(
        !stderr.contains("10.0.0.7"),
        "values are not repeated: {stderr}"
    );

    // A known section with an unknown key is still refused.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"))
        .arg("print-config")
        .env_clear()
        .env("KEEL_SERVICE__ENVIRONMENT", "development")
        .env("KEEL_AUTH__PORT", "50053")
        .output()
        .expect("run user-service print-config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("auth.port: unknown key"), "{stderr}");
}

#[test]
fn the_binary_exits_0_on_sigterm_and_at_once_on_a_second() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let spawn = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_user-service"))
            .env("KEEL_SERVICE__ENVIRONMENT", "development")
            .env("KEEL_SERVER__ADDR", "127.0.0.1:0")
            .env("KEEL_METRICS__ENABLED", "false")
            .env("KEEL_SERVER__LAME_DUCK", "300ms")
            .env("KEEL_SERVER__DRAIN_TIMEOUT", "2s")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start user-service");
        // Wait for the startup line.
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = lines.next().expect("output").expect("utf-8");
            if line.contains("serving gRPC") {
                break;
            }
            assert!(Instant::now() < deadline, "no startup line");
        }
        std::thread::spawn(move || lines.for_each(drop));
        child
    };
    let term = |child: &std::process::Child| {
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    let wait = |child: &mut std::process::Child, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let mut child = spawn();
    let started = Instant::now();
    term(&child);
    let status = wait(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the lame duck was kept"
    );

    let mut child = spawn();
    term(&child);
    std::thread::sleep(Duration::from_millis(50));
    term(&child);
    let status = wait(&mut child, Duration::from_millis(250));
    assert_eq!(status.code(), Some(130));
}

#[tokio::test]
async fn the_call_command_prints_the_proto3_json_mapping() {
    let server = common::Server::start(common::config()).await;
    let token = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let url = format!("http://{}", server.grpc);
    let call = |args: &'static [&'static str]| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"))
                .args(["call", "--url", &url, "--token", &token])
                .args(args)
                .env_remove("ACCESS_TOKEN")
                .output()
                .expect("run user-service call");
            assert!(output.status.success(), "{output:?}");
            serde_json::from_slice::<serde_json::Value>(&output.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
        })
    };
    let created = call(&["create", "Ada", "ada@example.com"]).await.unwrap();
    assert_eq!(created["name"], "Ada");
    assert_eq!(created["id"], "u-000001");
    // camelCase names; a Timestamp as an RFC 3339 string.
    let created_at = created["createdAt"].as_str().expect("createdAt");
    assert!(
        created_at.ends_with('Z') && created_at.contains('T'),
        "{created}"
    );
    let listed = call(&["list"]).await.unwrap();
    assert_eq!(listed["users"][0]["email"], "ada@example.com", "{listed}");
    // An enum by its name.
    let health = call(&["health"]).await.unwrap();
    assert_eq!(health["status"], "STATUS_SERVING", "{health}");
    server.stop().await;
}

/// Runs the binary with only `vars` in its environment.
fn run_binary(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_user-service"))
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("run user-service")
}

#[test]
fn a_failed_command_prints_one_error_without_debug_or_backtrace() {
    let output = run_binary(&["print-config"], &[("RUST_BACKTRACE", "1")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr,
        "error: invalid configuration:\n  - auth.hmac_secret: missing; required for HS256 \
         (set KEEL_AUTH__HMAC_SECRET)\n"
    );
}

#[test]
fn mint_token_signs_with_the_services_key_for_the_scopes_its_methods_require() {
    let development = [("KEEL_SERVICE__ENVIRONMENT", "development")];
    let output = run_binary(&["mint-token", "--sub", "ada", "--ttl", "5m"], &development);
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).expect("utf-8");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_audience(&["keel-examples"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(user_service::DEV_SECRET.as_bytes()),
        &validation,
    )
    .expect("signed with the development secret")
    .claims;
    assert_eq!(claims["sub"], "ada");
    assert_eq!(claims["scope"], "users:read users:write");
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 300);

    // Not in production, even with a key of its own.
    let output = run_binary(
        &["mint-token"],
        &[(
            "KEEL_AUTH__HMAC_SECRET",
            "a-production-secret-of-32-bytes-or-more",
        )],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: mint-token is for development"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn a_refused_call_prints_its_code_and_message() {
    let server = common::Server::start(common::config()).await;
    let url = format!("http://{}", server.grpc);
    let output = tokio::task::spawn_blocking(move || {
        run_binary(&["call", "--url", &url, "get", "u-000001"], &[])
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: Unauthenticated: missing bearer token\n"
    );
    server.stop().await;
}
