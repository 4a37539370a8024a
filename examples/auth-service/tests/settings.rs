//! The auth service's configuration in production: no development credential,
//! no administrator without a password of its own.

use auth_service::{DEFAULT_CONFIG, DEV_ADMIN_PASSWORD, DEV_SECRET, DEVELOPMENT_CONFIG, Settings};
use keel_rpc::config::Loader;

/// The service's layers as its binary builds them, with `vars` as the environment.
fn load(vars: &[(&str, &str)]) -> Result<Settings, Vec<String>> {
    let loader = Loader::new()
        .defaults_toml(DEFAULT_CONFIG)
        .development_toml(DEVELOPMENT_CONFIG)
        .env_from(vars.iter().copied());
    Settings::from_loader(&loader).map_err(|e| e.problems().to_vec())
}

fn has(problems: &[String], start: &str) -> bool {
    problems.iter().any(|p| p.starts_with(start))
}

#[test]
fn production_needs_its_own_signing_key_and_administrator_password() {
    // No key at all: nothing could sign or verify a token.
    let problems = load(&[]).unwrap_err();
    assert!(
        has(&problems, "auth.hmac_secret: missing; required for HS256"),
        "{problems:#?}"
    );

    // A key, but neither a signing kid nor the administrator's password.
    let problems = load(&[(
        "KEEL_AUTH__HMAC_SECRET",
        "this-deployment-s-own-secret-0123456789",
    )])
    .unwrap_err();
    assert!(
        has(&problems, "tokens.signing_kid: missing"),
        "{problems:#?}"
    );
    assert!(
        has(
            &problems,
            "bootstrap.admin_password: missing; required with bootstrap.admin_username \
             (set KEEL_BOOTSTRAP__ADMIN_PASSWORD)"
        ),
        "{problems:#?}"
    );
}

#[test]
fn production_refuses_the_development_password_and_secret() {
    let problems = load(&[
        ("KEEL_BOOTSTRAP__ADMIN_PASSWORD", DEV_ADMIN_PASSWORD),
        ("KEEL_AUTH__HMAC_SECRET", DEV_SECRET),
    ])
    .unwrap_err();
    for key in ["bootstrap.admin_password", "auth.hmac_secret"] {
        assert!(
            has(&problems, &format!("{key}: is a development credential")),
            "{key}: {problems:#?}"
        );
    }
    for problem in &problems {
        assert!(!problem.contains(DEV_ADMIN_PASSWORD) && !problem.contains(DEV_SECRET));
    }
}

#[test]
fn production_with_its_own_key_and_password_loads_and_may_have_no_administrator() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    std::fs::write(
        &file,
        "[[auth.keys]]\nkid = \"k1\"\nalgorithm = \"HS256\"\n\
         hmac_secret = \"this-deployment-s-own-secret-0123456789\"\n\
         [tokens]\nsigning_kid = \"k1\"\n",
    )
    .unwrap();
    let loader = |vars: &[(&str, &str)]| {
        Loader::new()
            .defaults_toml(DEFAULT_CONFIG)
            .development_toml(DEVELOPMENT_CONFIG)
            .file(&file)
            .env_from(vars.iter().copied())
    };
    let settings = Settings::from_loader(&loader(&[(
        "KEEL_BOOTSTRAP__ADMIN_PASSWORD",
        "this-deployment-s-own-password",
    )]))
    .expect("production settings");
    assert!(!settings.service.environment.is_development());
    assert_eq!(settings.app.bootstrap.admin(), Some("admin"));

    // `admin_username = ""`: no bootstrap administrator, so no password needed.
    let settings = Settings::from_loader(&loader(&[("KEEL_BOOTSTRAP__ADMIN_USERNAME", "")]))
        .expect("production settings without an administrator");
    assert_eq!(settings.app.bootstrap.admin(), None);
}

#[test]
fn print_config_help_is_the_reference_of_every_key_keels_and_the_services() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_auth-service"))
        .args(["print-config", "--help"])
        .output()
        .expect("auth-service runs");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).expect("UTF-8");
    for row in [
        "| `server.addr` | `\"0.0.0.0:50051\"` | `KEEL_SERVER__ADDR` |",
        "| `tokens.access_ttl` | `\"15m\"` | `KEEL_TOKENS__ACCESS_TTL` |",
        "| `passwords.max_concurrent` | `the number of CPUs` |",
        "| `throttle.username_in_flight` | `8` | `KEEL_THROTTLE__USERNAME_IN_FLIGHT` |",
    ] {
        assert!(help.contains(row), "{row} in:\n{help}");
    }
    let password = help
        .lines()
        .find(|l| l.starts_with("| `bootstrap.admin_password`"))
        .expect("bootstrap.admin_password");
    assert!(password.contains("Redacted"), "{password}");
}
