//! Integration tests of `keel_rpc::config`: layering, decoding errors, validation, redaction.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use keel_rpc::config::*;

/// A valid HMAC secret (>= 32 bytes) that must never show up in any output.
const SECRET: &str = "s3cr3t-value-that-must-never-leak-0123456789";

fn toml_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create temp file");
    file.write_all(contents.as_bytes())
        .expect("write temp file");
    file.flush().expect("flush temp file");
    file
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// A loader with a valid secret in the environment layer and nothing else.
fn env_only<const N: usize>(vars: [(&str, &str); N]) -> Loader {
    let mut all = vec![("KEEL_AUTH__HMAC_SECRET", SECRET)];
    all.extend(vars);
    Loader::new().env_from(all)
}

fn problems_of<A: Section + std::fmt::Debug>(
    result: Result<Config<A>, ConfigError>,
) -> Vec<String> {
    match result {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// The single problem about `key` (problems start with their key).
fn problem_for<'a>(problems: &'a [String], key: &str) -> &'a str {
    let prefix = format!("{key}:");
    let matching: Vec<&String> = problems.iter().filter(|p| p.starts_with(&prefix)).collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one problem for {key} in {problems:#?}"
    );
    matching[0]
}

#[test]
fn built_in_defaults() {
    let config = Config::<()>::default();
    assert_eq!(config.service.name, "keel-service");
    assert_eq!(config.server.addr, addr("0.0.0.0:50051"));
    assert!(config.metrics.enabled);
    assert_eq!(config.metrics.addr, addr("0.0.0.0:9090"));
    assert_eq!(config.auth.algorithm, Algorithm::HS256);
    assert!(config.auth.hmac_secret.is_none());
    assert!(config.auth.public_key_pem.is_none());
    assert!(config.auth.public_key_file.is_none());
    assert!(config.auth.issuer.is_none());
    assert!(config.auth.audience.is_none());
    assert_eq!(config.auth.leeway, Duration::from_secs(30));
    assert_eq!(config.auth.cache_capacity, 10_000);
    assert_eq!(config.auth.max_token_bytes, 8192);

    // Loading with only a secret gives the same defaults.
    let loaded = env_only([]).load().expect("valid");
    assert_eq!(loaded.service.name, "keel-service");
    assert_eq!(loaded.server.addr, addr("0.0.0.0:50051"));
    assert_eq!(loaded.metrics.addr, addr("0.0.0.0:9090"));
    assert_eq!(loaded.auth.leeway, Duration::from_secs(30));
    assert_eq!(
        loaded.auth.hmac_secret.as_ref().map(Secret::expose),
        Some(SECRET)
    );
}

#[test]
fn defaults_alone_are_invalid_without_a_secret() {
    let problems = problems_of(Loader::new().load());
    assert_eq!(
        problems,
        vec!["auth.hmac_secret: missing; required for HS256 (set KEEL_AUTH__HMAC_SECRET)"]
    );
    let problems = problems_of(
        Config::<()>::default()
            .validate()
            .map(|()| Config::<()>::default()),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn precedence_defaults_then_file_then_env() {
    let defaults = format!(
        r#"
        [service]
        name = "from-defaults"
        [server]
        addr = "127.0.0.1:1000"
        [metrics]
        addr = "127.0.0.1:2000"
        [auth]
        hmac_secret = "{SECRET}"
        leeway = "10s"
        issuer = "defaults-issuer"
        "#
    );
    let file = toml_file(
        r#"
        [service]
        name = "from-file"
        [server]
        addr = "127.0.0.1:1001"
        [auth]
        issuer = "file-issuer"
        "#,
    );
    // Call order does not matter: the environment still wins over the file.
    let loader = Loader::new()
        .env_from([("KEEL_SERVICE__NAME", "from-env"), ("PATH", "/ignored")])
        .file(file.path())
        .defaults_toml(&defaults);
    let config = loader.load().expect("valid");
    assert_eq!(config.service.name, "from-env");
    assert_eq!(config.server.addr, addr("127.0.0.1:1001"));
    assert_eq!(config.metrics.addr, addr("127.0.0.1:2000"));
    assert_eq!(config.auth.issuer.as_deref(), Some("file-issuer"));
    assert_eq!(config.auth.leeway, Duration::from_secs(10));
    // Built-in defaults fill what no layer sets.
    assert_eq!(config.auth.max_token_bytes, 8192);
}

#[test]
fn later_files_override_earlier_ones() {
    let first = toml_file("[service]\nname = \"first\"\n[server]\naddr = \"127.0.0.1:1\"\n");
    let second = toml_file("[service]\nname = \"second\"\n");
    let config = env_only([])
        .file(first.path())
        .file(second.path())
        .load()
        .expect("valid");
    assert_eq!(config.service.name, "second");
    assert_eq!(config.server.addr, addr("127.0.0.1:1"));
}

#[test]
fn config_load_convenience_reads_defaults_and_file() {
    let file = toml_file("[server]\naddr = \"127.0.0.1:7000\"\n");
    let defaults = format!("[auth]\nhmac_secret = \"{SECRET}\"\n");
    let config = Config::<()>::load(&defaults, Some(file.path())).expect("valid");
    assert_eq!(config.server.addr, addr("127.0.0.1:7000"));
    let config = Config::<()>::load(&defaults, None).expect("valid");
    assert_eq!(config.server.addr, addr("0.0.0.0:50051"));
}

#[test]
fn nested_env_keys() {
    let config = env_only([
        ("KEEL_SERVICE__NAME", "12345"),
        ("KEEL_SERVER__ADDR", "[::1]:7001"),
        ("KEEL_METRICS__ENABLED", "false"),
        ("KEEL_METRICS__ADDR", "127.0.0.1:7002"),
        ("KEEL_AUTH__ALGORITHM", "HS512"),
        ("KEEL_AUTH__ISSUER", "https://issuer.example"),
        ("KEEL_AUTH__AUDIENCE", "42"),
        ("KEEL_AUTH__CACHE_CAPACITY", "0"),
        ("keel_auth__max_token_bytes", "4096"),
    ])
    .load()
    .expect("valid");
    // Numeric-looking values of string keys stay strings.
    assert_eq!(config.service.name, "12345");
    assert_eq!(config.auth.audience.as_deref(), Some("42"));
    assert_eq!(config.server.addr, addr("[::1]:7001"));
    assert!(!config.metrics.enabled);
    assert_eq!(config.metrics.addr, addr("127.0.0.1:7002"));
    assert_eq!(config.auth.algorithm, Algorithm::HS512);
    assert_eq!(
        config.auth.issuer.as_deref(),
        Some("https://issuer.example")
    );
    assert_eq!(config.auth.cache_capacity, 0);
    assert_eq!(config.auth.max_token_bytes, 4096);
}

#[test]
fn numeric_secret_from_env_is_kept_verbatim() {
    let digits = "00000000000000000000000000000000000001";
    let config = Loader::new()
        .env_from([("KEEL_AUTH__HMAC_SECRET", digits)])
        .load()
        .expect("valid");
    assert_eq!(
        config.auth.hmac_secret.as_ref().map(Secret::expose),
        Some(digits)
    );
}

#[test]
fn variables_without_a_double_underscore_are_not_configuration() {
    // What Kubernetes injects into every pod of a namespace with a Service
    // named `keel-auth`, and a CLI's own variable: neither stops a service.
    let config = env_only([
        ("KEEL_AUTH_PORT", "tcp://10.0.0.7:50053"),
        ("KEEL_AUTH_PORT_50053_TCP_ADDR", "10.0.0.7"),
        ("KEEL_AUTH_SERVICE_HOST", "10.0.0.7"),
        ("KEEL_TOKEN", "eyJhbGciOi"),
        ("KEEL_SERVER_ADDR", "127.0.0.1:1"),
        ("KEEL_SERVICE__NAME", "still-read"),
    ])
    .load()
    .expect("not configuration, so not an error");
    assert_eq!(config.service.name, "still-read");
    assert_ne!(config.server.addr.to_string(), "127.0.0.1:1");
    // A known section with an unknown key stays an error.
    let problems = problems_of(env_only([("KEEL_AUTH__PORT", "50053")]).load());
    let problem = problem_for(&problems, "auth.port");
    assert!(problem.contains("unknown key"), "{problem}");
}

#[test]
fn durations_are_humantime() {
    for (text, expected) in [
        ("250ms", Duration::from_millis(250)),
        ("30s", Duration::from_secs(30)),
        ("2m", Duration::from_secs(120)),
        ("1m 30s", Duration::from_secs(90)),
        ("5m", Duration::from_secs(300)),
    ] {
        let config = env_only([("KEEL_AUTH__LEEWAY", text)]).load().expect(text);
        assert_eq!(config.auth.leeway, expected, "{text}");
        let file = toml_file(&format!("[auth]\nleeway = \"{text}\"\n"));
        let config = env_only([]).file(file.path()).load().expect(text);
        assert_eq!(config.auth.leeway, expected, "{text}");
    }
    // Printed back in the same notation.
    let config = env_only([("KEEL_AUTH__LEEWAY", "250ms")])
        .load()
        .expect("valid");
    assert!(config.to_toml_redacted().contains("leeway = \"250ms\""));
}

#[test]
fn leeway_above_five_minutes_is_rejected() {
    let problems = problems_of(env_only([("KEEL_AUTH__LEEWAY", "15m")]).load());
    let problem = problem_for(&problems, "auth.leeway");
    assert!(problem.contains("15m"), "{problem}");
    assert!(problem.contains("5m"), "{problem}");
    assert!(problem.contains("KEEL_AUTH__LEEWAY"), "{problem}");
}

#[test]
fn bad_socket_address_is_reported_with_value_and_source() {
    let problems = problems_of(env_only([("KEEL_SERVER__ADDR", "nonsense")]).load());
    let problem = problem_for(&problems, "server.addr");
    assert!(problem.contains("\"nonsense\""), "{problem}");
    assert!(problem.contains("KEEL_SERVER__ADDR"), "{problem}");
}

#[test]
fn bad_duration_is_reported() {
    let problems = problems_of(env_only([("KEEL_AUTH__LEEWAY", "abc")]).load());
    let problem = problem_for(&problems, "auth.leeway");
    assert!(problem.contains("\"abc\""), "{problem}");
    assert!(problem.contains("KEEL_AUTH__LEEWAY"), "{problem}");
}

#[test]
fn bad_boolean_is_reported_not_defaulted() {
    let problems = problems_of(env_only([("KEEL_METRICS__ENABLED", "maybe")]).load());
    let problem = problem_for(&problems, "metrics.enabled");
    assert!(problem.contains("\"maybe\""), "{problem}");
    assert!(problem.contains("KEEL_METRICS__ENABLED"), "{problem}");
}

#[test]
fn negative_capacity_is_reported() {
    let problems = problems_of(env_only([("KEEL_AUTH__CACHE_CAPACITY", "-1")]).load());
    let problem = problem_for(&problems, "auth.cache_capacity");
    assert!(problem.contains("-1"), "{problem}");
    assert!(problem.contains("KEEL_AUTH__CACHE_CAPACITY"), "{problem}");
}

#[test]
fn unknown_key_is_reported_with_file_and_without_its_value() {
    let file = toml_file(&format!("[auth]\nhmac_secrte = \"{SECRET}\"\n"));
    let problems = problems_of(env_only([]).file(file.path()).load());
    let problem = problem_for(&problems, "auth.hmac_secrte");
    assert!(problem.contains("unknown key"), "{problem}");
    assert!(
        problem.contains("hmac_secret"),
        "lists the known keys: {problem}"
    );
    assert!(
        problem.contains(&file.path().display().to_string()),
        "{problem}"
    );
    assert!(!problem.contains(SECRET), "{problem}");
    // A transposition is a near miss, and said as one.
    assert!(
        problem.contains(" (did you mean hmac_secret?)"),
        "{problem}"
    );
}

#[test]
fn near_misses_of_sections_and_keys_suggest_the_name_and_far_ones_do_not() {
    let problems = problems_of(
        env_only([
            ("KEEL_SEVRER__ADDR", "127.0.0.1:1"),
            ("KEEL_SERVER__MAX_CONECTIONS", "5"),
            ("KEEL_SERVER__COLOUR", "blue"),
        ])
        .load(),
    );
    let section = problem_for(&problems, "sevrer");
    assert!(section.contains("unknown section"), "{section}");
    assert!(section.contains("(did you mean server?)"), "{section}");
    let key = problem_for(&problems, "server.max_conections");
    assert!(key.contains("(did you mean max_connections?)"), "{key}");
    let far = problem_for(&problems, "server.colour");
    assert!(
        far.contains("unknown key") && !far.contains("did you mean"),
        "{far}"
    );
}

#[test]
fn unknown_algorithms_are_reported_with_the_allowed_list() {
    for bad in ["none", "hs256"] {
        let problems = problems_of(env_only([("KEEL_AUTH__ALGORITHM", bad)]).load());
        let problem = problem_for(&problems, "auth.algorithm");
        assert!(problem.contains(&format!("\"{bad}\"")), "{problem}");
        for name in ["HS256", "RS256", "PS512", "ES384", "EdDSA"] {
            assert!(problem.contains(name), "{problem}");
        }
        assert!(problem.contains("KEEL_AUTH__ALGORITHM"), "{problem}");
    }
    let problems = problems_of(env_only([("KEEL_AUTH__ALGORITHM", "hs256")]).load());
    assert!(
        problems[0].contains("did you mean \"HS256\""),
        "{problems:?}"
    );
}

#[test]
fn every_algorithm_name_is_accepted() {
    let key = tempfile::NamedTempFile::new().expect("temp file");
    for alg in Algorithm::ALL {
        let mut vars = vec![("KEEL_AUTH__ALGORITHM".to_owned(), alg.to_string())];
        if alg.is_hmac() {
            vars.push(("KEEL_AUTH__HMAC_SECRET".to_owned(), SECRET.to_owned()));
        } else {
            vars.push((
                "KEEL_AUTH__PUBLIC_KEY_FILE".to_owned(),
                key.path().display().to_string(),
            ));
        }
        let config = Loader::new()
            .env_from(vars)
            .load()
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(config.auth.algorithm, alg);
        assert_eq!(
            format!("{:?}", config.auth.algorithm.to_jsonwebtoken()),
            alg.as_str()
        );
    }
    assert!(Algorithm::HS384.is_hmac());
    assert!(!Algorithm::EdDSA.is_hmac());
    assert_eq!(
        Algorithm::EdDSA.to_jsonwebtoken(),
        jsonwebtoken::Algorithm::EdDSA
    );
}

#[test]
fn all_problems_are_reported_together() {
    let file =
        toml_file("[auth]\nhmac_secrte = \"x\"\nmax_token_bytes = 100\n[database]\nurl = \"x\"\n");
    let result = Loader::new()
        .file(file.path())
        .env_from([
            ("KEEL_SERVER__ADDR", "nonsense"),
            ("KEEL_METRICS__ENABLED", "maybe"),
            ("KEEL_SERVICE__NAME", ""),
        ])
        .load();
    let problems = problems_of(result);
    for key in [
        "server.addr",
        "metrics.enabled",
        "auth.hmac_secrte",
        "database",
        "service.name",
        "auth.max_token_bytes",
        // The typo leaves the real key unset.
        "auth.hmac_secret",
    ] {
        problem_for(&problems, key);
    }
    assert!(problem_for(&problems, "auth.max_token_bytes").contains("100"));
    assert_eq!(problems.len(), 7, "{problems:#?}");

    // Every bad key of one section is reported, not just serde's first one; checks that read a
    // key which failed to decode are skipped (no "auth.hmac_secret: missing" noise here).
    let problems = problems_of(
        Loader::new()
            .env_from([
                ("KEEL_AUTH__ALGORITHM", "none"),
                ("KEEL_AUTH__LEEWAY", "abc"),
                ("KEEL_AUTH__CACHE_CAPACITY", "-1"),
                ("KEEL_AUTH__MAX_TOKEN_BYTES", "10"),
            ])
            .load(),
    );
    for key in [
        "auth.algorithm",
        "auth.leeway",
        "auth.cache_capacity",
        "auth.max_token_bytes",
    ] {
        problem_for(&problems, key);
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");

    // Semantic problems of several keys come together too.
    let problems = problems_of(
        Loader::new()
            .env_from([
                ("KEEL_AUTH__HMAC_SECRET", "short"),
                ("KEEL_AUTH__LEEWAY", "6m"),
                ("KEEL_AUTH__MAX_TOKEN_BYTES", "100000"),
                ("KEEL_METRICS__ADDR", "0.0.0.0:50051"),
                ("KEEL_SERVICE__NAME", " "),
            ])
            .load(),
    );
    for key in [
        "auth.hmac_secret",
        "auth.leeway",
        "auth.max_token_bytes",
        "metrics.addr",
        "service.name",
    ] {
        problem_for(&problems, key);
    }
    assert_eq!(problems.len(), 5, "{problems:#?}");
}

#[test]
fn error_display_lists_every_problem() {
    let err = match Loader::new()
        .env_from([("KEEL_SERVER__ADDR", "x"), ("KEEL_METRICS__ENABLED", "y")])
        .load()
    {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(text.starts_with("invalid configuration:\n  - "), "{text}");
    assert_eq!(text.matches("\n  - ").count(), err.problems().len());
    assert_eq!(err.problems().len(), 3, "{text}");
    assert!(
        err.problems()[2].starts_with("auth.hmac_secret: missing"),
        "{text}"
    );
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("does-not-exist.toml");
    let problems = problems_of(env_only([]).file(&path).load());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(&path.display().to_string()),
        "{problems:?}"
    );

    let problems = problems_of(Config::<()>::load("", Some(&path)));
    assert!(
        problems[0].contains(&path.display().to_string()),
        "{problems:?}"
    );
}

#[test]
fn malformed_toml_names_the_file_and_line_without_quoting_it() {
    let file = toml_file(&format!(
        "[auth]\nleeway = \"1s\"\nhmac_secret = \"{SECRET}\n"
    ));
    let problems = problems_of(env_only([]).file(file.path()).load());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(&file.path().display().to_string()),
        "{problems:?}"
    );
    assert!(problems[0].contains("line 3"), "{problems:?}");
    assert!(!problems[0].contains(SECRET), "{problems:?}");

    let problems = problems_of(Loader::new().defaults_toml("[service\n").load());
    assert!(problems[0].contains("defaults_toml"), "{problems:?}");
}

#[test]
fn secrets_are_redacted() {
    let config = env_only([]).load().expect("valid");
    let secret = config.auth.hmac_secret.clone().expect("secret set");
    assert_eq!(secret.expose(), SECRET);
    assert_eq!(format!("{secret:?}"), "Secret(\"[redacted]\")");
    assert_eq!(secret.to_string(), "[redacted]");

    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");

    let printed = config.to_toml_redacted();
    assert!(!printed.contains(SECRET), "{printed}");
    assert!(
        printed.contains("hmac_secret = \"[redacted]\""),
        "{printed}"
    );
    assert!(printed.contains("[server]"), "{printed}");
    assert!(printed.contains("addr = \"0.0.0.0:50051\""), "{printed}");
    // A service that names no database has no `[store]` to show.
    assert!(!printed.contains("[store]"), "{printed}");
    let with_store = env_only([("KEEL_STORE__URL", "sqlite://users.db?mode=rwc")])
        .load()
        .expect("loads");
    let printed = with_store.to_toml_redacted();
    assert!(printed.contains("[store]\n"), "{printed}");
    assert!(
        printed.contains("url = \"sqlite://users.db?mode=rwc\""),
        "{printed}"
    );

    let loader_debug = format!("{:?}", env_only([]));
    assert!(!loader_debug.contains(SECRET), "{loader_debug}");
    assert!(
        loader_debug.contains("KEEL_AUTH__HMAC_SECRET"),
        "{loader_debug}"
    );
}

#[test]
fn secret_of_the_wrong_type_is_not_printed() {
    let file = toml_file("[auth]\nhmac_secret = 123456789012345678\n");
    let problems = problems_of(Loader::new().file(file.path()).load());
    let problem = problem_for(&problems, "auth.hmac_secret");
    assert!(!problem.contains("123456789012345678"), "{problem}");
    assert!(problem.contains("[redacted]"), "{problem}");
}

#[test]
fn short_secret_is_rejected_with_its_length_only() {
    let short = "only-21-bytes-secret!";
    assert_eq!(short.len(), 21);
    let problems = problems_of(
        Loader::new()
            .env_from([("KEEL_AUTH__HMAC_SECRET", short)])
            .load(),
    );
    let problem = problem_for(&problems, "auth.hmac_secret");
    assert!(problem.contains("21 bytes"), "{problem}");
    assert!(problem.contains("32"), "{problem}");
    assert!(problem.contains("KEEL_AUTH__HMAC_SECRET"), "{problem}");
    assert!(!problem.contains(short), "{problem}");

    // Exactly 32 bytes is enough.
    let exact = "a".repeat(32);
    Loader::new()
        .env_from([("KEEL_AUTH__HMAC_SECRET", exact.as_str())])
        .load()
        .expect("32 bytes is valid");
}

#[test]
fn asymmetric_algorithm_needs_exactly_one_public_key() {
    let problems = problems_of(
        Loader::new()
            .env_from([("KEEL_AUTH__ALGORITHM", "RS256")])
            .load(),
    );
    let problem = problem_for(&problems, "auth.public_key_pem");
    assert!(problem.contains("missing"), "{problem}");
    assert!(problem.contains("RS256"), "{problem}");
    assert!(problem.contains("public_key_file"), "{problem}");

    let key_file = toml_file("-----BEGIN PUBLIC KEY-----\n");
    let key_path = key_file.path().display().to_string();
    let problems = problems_of(
        Loader::new()
            .env_from([
                ("KEEL_AUTH__ALGORITHM", "ES256"),
                ("KEEL_AUTH__PUBLIC_KEY_PEM", "-----BEGIN PUBLIC KEY-----\n"),
                ("KEEL_AUTH__PUBLIC_KEY_FILE", key_path.as_str()),
                ("KEEL_AUTH__HMAC_SECRET", SECRET),
            ])
            .load(),
    );
    problem_for(&problems, "auth.public_key_file");
    let problem = problem_for(&problems, "auth.hmac_secret");
    assert!(problem.contains("not allowed with ES256"), "{problem}");
    assert!(!problem.contains(SECRET), "{problem}");

    let config = Loader::new()
        .env_from([
            ("KEEL_AUTH__ALGORITHM", "EdDSA"),
            ("KEEL_AUTH__PUBLIC_KEY_FILE", key_path.as_str()),
        ])
        .load()
        .expect("valid");
    assert_eq!(
        config.auth.public_key_file.as_deref(),
        Some(key_file.path())
    );

    let missing = Path::new("/nonexistent/keel/key.pem");
    let problems = problems_of(
        Loader::new()
            .env_from([
                ("KEEL_AUTH__ALGORITHM", "PS256"),
                ("KEEL_AUTH__PUBLIC_KEY_FILE", "/nonexistent/keel/key.pem"),
            ])
            .load(),
    );
    let problem = problem_for(&problems, "auth.public_key_file");
    assert!(
        problem.contains(&missing.display().to_string()),
        "{problem}"
    );
}

#[test]
fn hmac_algorithm_rejects_public_keys() {
    let mut config = Config::<()>::default();
    config.auth.hmac_secret = Some(Secret::new(SECRET));
    config.auth.public_key_pem = Some("-----BEGIN PUBLIC KEY-----".into());
    let err = config.validate().expect_err("pem with HS256");
    assert_eq!(err.problems().len(), 1, "{err}");
    assert!(
        err.problems()[0].starts_with("auth.public_key_pem: not allowed with HS256"),
        "{err}"
    );
}

#[test]
fn validate_checks_bounds() {
    let mut config = Config::<()>::default();
    config.auth.hmac_secret = Some(Secret::new(SECRET));
    config.validate().expect("valid");

    config.auth.max_token_bytes = 255;
    config.auth.leeway = Duration::from_secs(301);
    config.auth.issuer = Some(String::new());
    config.service.name = String::new();
    config.metrics.addr = addr("127.0.0.1:50051");
    let err = config.validate().expect_err("invalid");
    let problems = err.problems();
    assert!(problem_for(problems, "auth.max_token_bytes").contains("255"));
    assert!(problem_for(problems, "auth.leeway").contains("5m 1s"));
    problem_for(problems, "auth.issuer");
    problem_for(problems, "service.name");
    problem_for(problems, "metrics.addr");
    assert_eq!(problems.len(), 5, "{err}");

    // Upper bound, and a disabled metrics endpoint may share the address.
    config.auth.max_token_bytes = 65_537;
    config.auth.leeway = Duration::from_secs(300);
    config.auth.issuer = None;
    config.service.name = "svc".into();
    config.metrics.enabled = false;
    let err = config.validate().expect_err("invalid");
    assert_eq!(err.problems().len(), 1, "{err}");
    assert!(
        err.problems()[0].starts_with("auth.max_token_bytes:"),
        "{err}"
    );
    config.auth.max_token_bytes = 65_536;
    config.validate().expect("valid");
}

/// `[database]`, a service's own section.
#[derive(Debug, Clone, Section)]
struct Database {
    /// Where it is.
    #[config(default = "postgres://localhost/app")]
    url: String,
    /// Its pool.
    #[config(default = 4, min = 1, max = 64)]
    pool: u32,
    /// How long a query may take.
    #[config(default = "5s", above = "0s")]
    query_timeout: Duration,
    /// Its password.
    password: Option<Secret>,
}

/// The service's sections.
#[derive(Debug, Clone, Section)]
struct App {
    #[config(section)]
    database: Database,
}

#[test]
fn a_services_own_sections_load_beside_keels_with_the_same_errors() {
    let file = toml_file("[database]\nurl = \"postgres://db\"\n");
    // Keel's configuration alone does not know the section.
    let problems = problems_of(env_only([]).file(file.path()).load());
    let problem = problem_for(&problems, "database");
    assert!(problem.contains("unknown section"), "{problem}");

    let loader = env_only([
        ("KEEL_DATABASE__POOL", "8"),
        // Text from the environment is text, even when it looks like a number.
        ("KEEL_DATABASE__PASSWORD", "123456789012"),
    ])
    .file(file.path());
    let config = Config::<App>::from_loader(&loader).expect("declared sections load");
    assert_eq!(config.app.database.url, "postgres://db");
    assert_eq!(config.app.database.pool, 8);
    assert_eq!(config.app.database.query_timeout, Duration::from_secs(5));
    assert_eq!(
        config.app.database.password.as_ref().map(Secret::expose),
        Some("123456789012")
    );
    let printed = config.to_toml_redacted();
    assert!(printed.contains("[database]"), "{printed}");
    assert!(printed.contains("query_timeout = \"5s\""), "{printed}");
    assert!(!printed.contains("123456789012"), "{printed}");

    // Every problem at once, the service's and Keel's, each with its source.
    let loader = env_only([
        ("KEEL_DATABASE__POOL", "many"),
        ("KEEL_DATABASE__QUERY_TIMEOUT", "0s"),
        ("KEEL_DATABASE__SIZE", "1"),
        ("KEEL_SERVER__MAX_CONNECTIONS", "0"),
    ]);
    let problems = problems_of(Config::<App>::from_loader(&loader));
    let pool = problem_for(&problems, "database.pool");
    assert!(pool.contains("\"many\""), "{pool}");
    assert!(pool.contains("KEEL_DATABASE__POOL"), "{pool}");
    assert_eq!(
        problem_for(&problems, "database.query_timeout"),
        "database.query_timeout: 0s is out of range; more than 0s \
         (from environment variable KEEL_DATABASE__QUERY_TIMEOUT)"
    );
    assert!(problem_for(&problems, "database.size").contains("unknown key"));
    assert!(
        problem_for(&problems, "server.max_connections").contains("0 is out of range; at least 1")
    );
    assert_eq!(problems.len(), 4, "{problems:#?}");

    // An absent section is its defaults.
    let config = Config::<App>::from_loader(&env_only([])).expect("defaults");
    assert_eq!(config.app.database.pool, 4);
}

#[test]
fn the_reference_lists_every_key_from_the_declarations() {
    let reference = Config::<App>::reference();
    for row in [
        "| `server.lame_duck` | `\"5s\"` | `KEEL_SERVER__LAME_DUCK` |",
        "| `server.tls.cert_file` |",
        "| `database.pool` | `4` | `KEEL_DATABASE__POOL` | Its pool. **Between 1 and 64.** |",
        "| `auth.keys` | empty | (a file) |",
    ] {
        assert!(reference.contains(row), "{row} in:\n{reference}");
    }
    let password = reference
        .lines()
        .find(|l| l.starts_with("| `database.password`"))
        .expect("database.password");
    assert!(password.contains("Redacted"), "{password}");
    // Keel's own, without a service's.
    assert!(!Config::<()>::reference().contains("database.pool"));
}

#[test]
fn malformed_env_names_are_reported() {
    let problems = problems_of(env_only([("KEEL_AUTH__", "x")]).load());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("KEEL_AUTH__"), "{problems:?}");
    assert!(problems[0].contains("malformed"), "{problems:?}");
}

// ===== environment and development credentials =====

/// An application's production defaults (no credential) and its development credentials.
const APP_DEFAULTS: &str = "[service]\nname = \"app\"\n[auth]\nissuer = \"keel-dev\"\n";
const DEV_SECRET: &str = "a-development-secret-everyone-has-read";
const DEV_LAYER: &str =
    "[auth]\nhmac_secret = \"a-development-secret-everyone-has-read\"\naudience = \"dev\"\n";

fn app_loader() -> Loader {
    Loader::new()
        .defaults_toml(APP_DEFAULTS)
        .development_toml(DEV_LAYER)
}

#[test]
fn the_environment_is_production_unless_development_is_asked_for() {
    assert_eq!(
        Config::<()>::default().service.environment,
        Environment::Production
    );

    // Production: the development layer is not there, so the service has no key.
    let problems = problems_of(app_loader().load());
    assert!(
        problem_for(&problems, "auth.hmac_secret").contains("missing"),
        "{problems:?}"
    );

    // Asked for in any layer: the environment, a file, or code.
    let by_env = app_loader()
        .env_from([("KEEL_SERVICE__ENVIRONMENT", "development")])
        .load()
        .expect("development configuration");
    assert_eq!(by_env.service.environment, Environment::Development);
    assert_eq!(
        by_env.auth.hmac_secret.as_ref().map(Secret::expose),
        Some(DEV_SECRET)
    );
    let file = toml_file("[service]\nenvironment = \"development\"\n");
    let by_file = app_loader().file(file.path()).load().expect("development");
    assert!(by_file.auth.hmac_secret.is_some());
    let by_code = app_loader()
        .environment(Environment::Development)
        .load()
        .expect("development");
    assert!(by_code.auth.hmac_secret.is_some());

    // The environment and files stay above the development layer.
    let own = app_loader()
        .env_from([
            ("KEEL_SERVICE__ENVIRONMENT", "development"),
            ("KEEL_AUTH__HMAC_SECRET", SECRET),
        ])
        .load()
        .expect("development");
    assert_eq!(
        own.auth.hmac_secret.as_ref().map(Secret::expose),
        Some(SECRET)
    );

    // A misspelt environment is an error, and the development layer stays out.
    let problems = problems_of(
        app_loader()
            .env_from([("KEEL_SERVICE__ENVIRONMENT", "Development")])
            .load(),
    );
    let problem = problem_for(&problems, "service.environment");
    assert!(
        problem.contains("did you mean \"development\""),
        "{problem}"
    );
    assert!(problem.contains("KEEL_SERVICE__ENVIRONMENT"), "{problem}");
    problem_for(&problems, "auth.hmac_secret");
}

#[test]
fn a_development_credential_is_refused_in_production_wherever_it_is_configured() {
    let file = toml_file(&format!(
        "[[auth.keys]]\nkid = \"prod\"\nalgorithm = \"HS256\"\nhmac_secret = \"{DEV_SECRET}\"\n"
    ));
    let problems = problems_of(
        app_loader()
            .file(file.path())
            .env_from([("KEEL_AUTH__HMAC_SECRET", DEV_SECRET)])
            .load(),
    );
    let from_env = problem_for(&problems, "auth.hmac_secret");
    assert!(from_env.contains("development credential"), "{from_env}");
    assert!(from_env.contains("KEEL_AUTH__HMAC_SECRET"), "{from_env}");
    let from_file = problem_for(&problems, "auth.keys.0.hmac_secret");
    assert!(
        from_file.contains(&format!("file {}", file.path().display())),
        "{from_file}"
    );
    for problem in &problems {
        assert!(
            !problem.contains(DEV_SECRET),
            "the secret is never printed: {problem}"
        );
    }
    // Short values of the development layer (`audience = "dev"`) are not credentials.
    let config = app_loader()
        .env_from([
            ("KEEL_AUTH__HMAC_SECRET", SECRET),
            ("KEEL_AUTH__AUDIENCE", "dev"),
        ])
        .load()
        .expect("production with its own secret");
    assert_eq!(config.service.environment, Environment::Production);
}

#[test]
fn a_layer_that_defines_the_keys_replaces_the_keys_of_the_layers_below() {
    let rs256 =
        "[auth]\nalgorithm = \"RS256\"\npublic_key_pem = \"-----BEGIN PUBLIC KEY-----\\n\"\n";
    let file = toml_file(rs256);
    let config = app_loader()
        .environment(Environment::Development)
        .file(file.path())
        .load()
        .expect("the file's RS256 key alone");
    assert_eq!(config.auth.algorithm, Algorithm::RS256);
    assert!(
        config.auth.hmac_secret.is_none(),
        "no development secret left behind"
    );
    assert_eq!(
        config.auth.issuer.as_deref(),
        Some("keel-dev"),
        "other keys stay"
    );

    // A JWKS set in the environment replaces the file's and the defaults' keys alike.
    let jwks = r#"{"keys":[]}"#;
    let config = app_loader()
        .environment(Environment::Development)
        .file(file.path())
        .env_from([("KEEL_AUTH__JWKS", jwks)])
        .load()
        .expect("the JWKS alone");
    assert!(config.auth.hmac_secret.is_none() && config.auth.public_key_pem.is_none());
    assert_eq!(config.auth.jwks.as_deref(), Some(jwks));

    // A layer that only sets a secret keeps the lower layers' algorithm and keys list.
    let keys = toml_file(&format!(
        "[auth]\nalgorithm = \"HS512\"\n[[auth.keys]]\nkid = \"a\"\nalgorithm = \"HS256\"\nhmac_secret = \"{SECRET}\"\n"
    ));
    let config = Loader::new()
        .file(keys.path())
        .env_from([("KEEL_AUTH__HMAC_SECRET", SECRET)])
        .load()
        .expect("keys and a default key");
    assert_eq!(config.auth.algorithm, Algorithm::HS512);
    assert_eq!(config.auth.keys.len(), 1);
    assert!(config.auth.hmac_secret.is_some());
}

#[test]
fn a_jwks_url_must_be_an_http_url_with_a_host_and_its_refreshes_sane() {
    let problems = problems_of(
        Loader::new()
            .env_from([
                ("KEEL_AUTH__JWKS_URL", "ftp://auth/jwks.json"),
                ("KEEL_AUTH__JWKS_REFRESH", "10s"),
                ("KEEL_AUTH__JWKS_MIN_REFRESH", "1m"),
            ])
            .load(),
    );
    let url = problem_for(&problems, "auth.jwks_url");
    assert!(url.contains("must start with http:// or https://"), "{url}");
    let min = problem_for(&problems, "auth.jwks_min_refresh");
    assert!(min.contains("longer than auth.jwks_refresh"), "{min}");
    for (target, problem) in [
        ("auth:50053", "must start with http:// or https://"),
        ("dns:///auth-service", "needs a name and a port"),
        ("", "is empty"),
    ] {
        let problems = problems_of(
            Loader::new()
                .env_from([("KEEL_AUTH__REVOCATIONS", target)])
                .load(),
        );
        let found = problem_for(&problems, "auth.revocations");
        assert!(found.contains(problem), "{target:?}: {found}");
    }
    let problems = problems_of(Loader::new().env_from([("KEEL_AUTH__JWKS_URL", "")]).load());
    assert!(
        problem_for(&problems, "auth.jwks_url").contains("is empty"),
        "{problems:?}"
    );
}

#[test]
fn cors_origins_must_be_origins() {
    let secret = "s".repeat(32);
    let toml = format!(
        "[auth]\nhmac_secret = \"{secret}\"\n[http]\ngrpc_web = true\n\
         cors.allowed_origins = [\"https://app.example\", \"http://127.0.0.1:8080\", \
         \"app.example\", \"ftp://files.example\", \"https://app.example/path\"]\n"
    );
    let problems = problems_of(Loader::new().defaults_toml(&toml).load());
    let cors: Vec<&String> = problems
        .iter()
        .filter(|p| p.starts_with("http.cors.allowed_origins:"))
        .collect();
    assert_eq!(cors.len(), 3, "{problems:#?}");
    assert!(
        cors[0].contains("\"app.example\" is not an origin"),
        "{cors:?}"
    );
    assert!(cors[1].contains("not an http or https origin"), "{cors:?}");
    assert!(cors[2].contains("no path"), "{cors:?}");
    // Off by default: no gRPC-Web, no other origin.
    let config = Loader::new()
        .defaults_toml(&format!("[auth]\nhmac_secret = \"{secret}\"\n"))
        .load()
        .unwrap();
    assert!(!config.http.grpc_web && config.http.cors.allowed_origins.is_empty());
}

#[test]
fn a_nested_table_without_a_required_key_names_it_and_where_the_table_came_from() {
    let file = toml_file("[server.tls]\nkey_file = \"/nonexistent/key.pem\"\nkey_fle = 1\n");
    let problems = problems_of(env_only([]).file(file.path()).load());
    let source = format!("(from file {})", file.path().display());
    let missing = problem_for(&problems, "server.tls.cert_file");
    assert_eq!(
        missing,
        format!("server.tls.cert_file: missing; required in [server.tls] {source}")
    );
    assert!(
        problem_for(&problems, "server.tls.key_fle").contains(
            "unknown key; expected one of: cert_file, key_file, client_ca_file, client_auth"
        ),
        "{problems:#?}"
    );
    // The file check of the key that is there still runs.
    assert!(
        problem_for(&problems, "server.tls.key_file").contains("does not exist"),
        "{problems:#?}"
    );
}
