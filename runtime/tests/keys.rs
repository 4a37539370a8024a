//! Several verification keys selected by `kid` (rotation), JWKS documents,
//! and the `[[auth.keys]]` / `auth.jwks` configuration.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use keel_rpc::auth::{AuthError, KeySet, SetupError, Verifier, encoding_key, public_jwk};
use keel_rpc::config::{Algorithm, AuthConfig, KeyConfig, Loader, Secret};
use serde_json::{Value, json};

const SECRET_A: &str = "0123456789abcdef0123456789abcdef-key-a";
const SECRET_B: &str = "0123456789abcdef0123456789abcdef-key-b";
const DEFAULT_SECRET: &str = "0123456789abcdef0123456789abcdef-default";

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/user-service/tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/user-service/tests/fixtures")
        .join(name)
}

fn claims() -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({
        "sub": "alice",
        "scope": "a b",
        "exp": now + 600,
        "iat": now,
        "token_use": "access",
        "aud": ["x", "y"],
        "sid": "session-1",
    })
}

fn sign(alg: jsonwebtoken::Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims(), key).expect("sign")
}

fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

fn rules() -> AuthConfig {
    AuthConfig {
        leeway: Duration::ZERO,
        ..AuthConfig::default()
    }
}

fn two_hmac_keys() -> AuthConfig {
    AuthConfig {
        keys: vec![
            KeyConfig::hmac("a", Algorithm::HS256, SECRET_A),
            KeyConfig::hmac("b", Algorithm::HS512, SECRET_B),
        ],
        ..rules()
    }
}

#[test]
fn keys_are_selected_by_kid_and_pin_their_algorithm() {
    let verifier = Verifier::from_config(&two_hmac_keys()).unwrap();
    let a = sign(jsonwebtoken::Algorithm::HS256, Some("a"), &hs(SECRET_A));
    let b = sign(jsonwebtoken::Algorithm::HS512, Some("b"), &hs(SECRET_B));
    assert_eq!(verifier.verify(&a).unwrap().sub, "alice");
    assert_eq!(verifier.verify(&b).unwrap().sub, "alice");

    // The kid selects the key, whatever the signature.
    let wrong_key = sign(jsonwebtoken::Algorithm::HS256, Some("a"), &hs(SECRET_B));
    assert_eq!(
        verifier.verify(&wrong_key).unwrap_err(),
        AuthError::BadSignature
    );
    // The key pins its algorithm: "a" is HS256 only.
    let wrong_alg = sign(jsonwebtoken::Algorithm::HS512, Some("a"), &hs(SECRET_A));
    assert_eq!(
        verifier.verify(&wrong_alg).unwrap_err(),
        AuthError::Algorithm
    );
    // No default key: no kid, or an unknown one, is refused.
    for kid in [None, Some("c")] {
        let token = sign(jsonwebtoken::Algorithm::HS256, kid, &hs(SECRET_A));
        assert_eq!(verifier.verify(&token).unwrap_err(), AuthError::UnknownKey);
    }
}

#[test]
fn the_default_key_verifies_tokens_without_a_known_kid() {
    let config = AuthConfig {
        hmac_secret: Some(Secret::new(DEFAULT_SECRET)),
        ..two_hmac_keys()
    };
    let verifier = Verifier::from_config(&config).unwrap();
    for kid in [None, Some("issued-elsewhere")] {
        let token = sign(jsonwebtoken::Algorithm::HS256, kid, &hs(DEFAULT_SECRET));
        assert!(verifier.verify(&token).is_ok(), "{kid:?}");
    }
    // A known kid is not verified with the default key.
    let token = sign(
        jsonwebtoken::Algorithm::HS256,
        Some("a"),
        &hs(DEFAULT_SECRET),
    );
    assert_eq!(
        verifier.verify(&token).unwrap_err(),
        AuthError::BadSignature
    );
    let keys = verifier.keys();
    assert!(keys.has_default());
    assert_eq!(keys.kids().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(keys.len(), 3);
}

#[test]
fn claims_carry_audiences_and_the_session() {
    let verifier = Verifier::from_config(&two_hmac_keys()).unwrap();
    let claims = verifier
        .verify(&sign(
            jsonwebtoken::Algorithm::HS256,
            Some("a"),
            &hs(SECRET_A),
        ))
        .unwrap();
    assert_eq!(claims.aud, ["x", "y"]);
    assert_eq!(claims.sid.as_deref(), Some("session-1"));
}

/// The private keys of the fixtures, as `[[auth.keys]]` entries and their
/// public JWKs.
fn asymmetric() -> Vec<(KeyConfig, jsonwebtoken::jwk::Jwk, EncodingKey)> {
    [
        ("ec", Algorithm::ES256, "ec_private.pem"),
        ("ed", Algorithm::EdDSA, "ed_private.pem"),
        ("rsa", Algorithm::RS256, "rsa_private.pem"),
    ]
    .into_iter()
    .map(|(kid, alg, file)| {
        let entry = KeyConfig::private_pem(kid, alg, fixture(file));
        let key = encoding_key(&entry).unwrap();
        let jwk = public_jwk(kid, alg, &key).unwrap().expect("asymmetric");
        (entry, jwk, key)
    })
    .collect()
}

#[test]
fn a_jwks_document_verifies_asymmetric_tokens() {
    let keys = asymmetric();
    let jwks = json!({ "keys": keys.iter().map(|(_, jwk, _)| jwk).collect::<Vec<_>>() });
    let config = AuthConfig {
        jwks: Some(jwks.to_string()),
        ..rules()
    };
    let verifier = Verifier::from_config(&config).unwrap();
    for (entry, jwk, key) in &keys {
        assert_eq!(jwk.common.key_id.as_deref(), Some(entry.kid.as_str()));
        let token = sign(entry.algorithm.to_jsonwebtoken(), Some(&entry.kid), key);
        assert_eq!(
            verifier.verify(&token).unwrap().sub,
            "alice",
            "{}",
            entry.kid
        );
    }
    // Signed with the EC key but naming the Ed25519 key: refused.
    let (_, _, ec_key) = &keys[0];
    let token = sign(jsonwebtoken::Algorithm::ES256, Some("ed"), ec_key);
    assert_eq!(verifier.verify(&token).unwrap_err(), AuthError::Algorithm);

    // The same from a file.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), jwks.to_string()).unwrap();
    let from_file = Verifier::from_config(&AuthConfig {
        jwks_file: Some(file.path().to_owned()),
        ..rules()
    })
    .unwrap();
    let (entry, _, key) = &keys[2];
    let token = sign(jsonwebtoken::Algorithm::RS256, Some(&entry.kid), key);
    assert!(from_file.verify(&token).is_ok());
}

#[test]
fn private_and_public_key_entries_verify() {
    let keys = asymmetric();
    let mut entries: Vec<KeyConfig> = keys.iter().map(|(entry, _, _)| entry.clone()).collect();
    entries.push(KeyConfig::public_pem(
        "ec-public",
        Algorithm::ES256,
        fixture("ec_public.pem"),
    ));
    entries.push(KeyConfig {
        public_key_file: Some(fixture_path("ed_public.pem")),
        ..KeyConfig::public_pem("ed-file", Algorithm::EdDSA, "")
    });
    entries.last_mut().unwrap().public_key_pem = None;
    let verifier = Verifier::from_config(&AuthConfig {
        keys: entries,
        ..rules()
    })
    .unwrap();
    for (entry, _, key) in &keys {
        let token = sign(entry.algorithm.to_jsonwebtoken(), Some(&entry.kid), key);
        assert!(verifier.verify(&token).is_ok(), "{}", entry.kid);
    }
    let token = sign(
        jsonwebtoken::Algorithm::ES256,
        Some("ec-public"),
        &keys[0].2,
    );
    assert!(verifier.verify(&token).is_ok());
    let token = sign(jsonwebtoken::Algorithm::EdDSA, Some("ed-file"), &keys[1].2);
    assert!(verifier.verify(&token).is_ok());
    // HMAC keys are never published.
    assert!(
        public_jwk("h", Algorithm::HS256, &hs(SECRET_A))
            .unwrap()
            .is_none()
    );
}

#[test]
fn bad_jwks_documents_are_refused_with_the_reason() {
    let (_, ec_jwk, _) = asymmetric().remove(0);
    let ec = serde_json::to_value(&ec_jwk).unwrap();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut key = ec.clone();
        change(&mut key);
        json!({ "keys": [key] }).to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "auth.jwks: not a JWKS document"),
        (
            with(&|k| {
                k.as_object_mut().unwrap().remove("kid");
            }),
            "every key needs a kid",
        ),
        (
            with(&|k| k["use"] = json!("enc")),
            "\"use\" must be \"sig\"",
        ),
        (with(&|k| k["alg"] = json!("ES384")), "does not match curve"),
        (
            json!({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0", "alg": "HS256"}]})
                .to_string(),
            "symmetric (oct) keys do not belong in a JWKS",
        ),
        (
            json!({"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]}).to_string(),
            "RSA keys need an \"alg\"",
        ),
        (
            json!({"keys": [ec.clone(), ec.clone()]}).to_string(),
            "is used by two keys",
        ),
    ];
    for (jwks, expected) in cases {
        let error = Verifier::from_config(&AuthConfig {
            jwks: Some(jwks.clone()),
            ..rules()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains(expected), "{jwks}: {error}");
    }
    assert!(matches!(
        Verifier::from_config(&rules()).unwrap_err(),
        SetupError::MissingKey(Algorithm::HS256)
    ));
}

#[test]
fn replacing_the_keys_empties_the_cache() {
    let verifier = Verifier::from_config(&two_hmac_keys()).unwrap();
    let a = sign(jsonwebtoken::Algorithm::HS256, Some("a"), &hs(SECRET_A));
    assert!(verifier.verify(&a).is_ok());
    assert_eq!(verifier.cached_tokens(), 1);
    // Found in the cache, and so kept as this thread's last hit too.
    assert!(verifier.verify(&a).is_ok());

    let mut keys = KeySet::new();
    keys.insert(
        "b",
        Algorithm::HS512,
        jsonwebtoken::DecodingKey::from_secret(SECRET_B.as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        keys.insert(
            "b",
            Algorithm::HS512,
            jsonwebtoken::DecodingKey::from_secret(SECRET_B.as_bytes())
        ),
        Err(SetupError::DuplicateKid(kid)) if kid == "b"
    ));
    verifier.set_keys(keys);
    assert_eq!(verifier.cached_tokens(), 0);
    assert_eq!(verifier.verify(&a).unwrap_err(), AuthError::UnknownKey);
}

#[test]
fn a_verifier_never_answers_from_another_verifiers_cache() {
    // Same kid, another secret: a token of the first is a forgery to the second.
    let first = Verifier::from_config(&two_hmac_keys()).unwrap();
    let second = Verifier::from_config(&AuthConfig {
        keys: vec![KeyConfig::hmac("a", Algorithm::HS256, SECRET_B)],
        ..rules()
    })
    .unwrap();
    let a = sign(jsonwebtoken::Algorithm::HS256, Some("a"), &hs(SECRET_A));
    for _ in 0..3 {
        assert!(first.verify(&a).is_ok());
        assert_eq!(second.verify(&a).unwrap_err(), AuthError::BadSignature);
    }
    assert_eq!(second.cached_tokens(), 0);
}

fn problems(toml: &str) -> Vec<String> {
    match Loader::new().defaults_toml(toml).load() {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn key_entries_are_validated_at_load() {
    let problems = problems(&format!(
        r#"
        [auth]
        jwks = "{{"
        jwks_file = "/nonexistent/jwks.json"
        keys = [
          {{ kid = "", algorithm = "HS256", hmac_secret = "{SECRET_A}" }},
          {{ kid = "a", algorithm = "HS256" }},
          {{ kid = "a", algorithm = "HS256", hmac_secret = "short" }},
          {{ kid = "b", algorithm = "ES256" }},
          {{ kid = "c", algorithm = "ES256", public_key_pem = "x", private_key_pem = "y" }},
          {{ kid = "d", algorithm = "EdDSA", hmac_secret = "{SECRET_A}", public_key_file = "/nonexistent.pem" }},
        ]
        "#
    ));
    let expected = [
        "auth.keys: entry 0: kid must not be empty",
        "auth.keys: entry 1 (kid \"a\"): hmac_secret missing; required for HS256",
        "auth.keys: entry 2 (kid \"a\"): kid is used by an earlier entry too",
        "auth.keys: entry 2 (kid \"a\"): hmac_secret too short: 5 bytes; HS256 needs at least 32 bytes",
        "auth.keys: entry 3 (kid \"b\"): ES256 needs one of public_key_pem, public_key_file, private_key_pem, private_key_file",
        "auth.keys: entry 4 (kid \"c\"): set exactly one of public_key_pem, private_key_pem",
        "auth.keys: entry 4 (kid \"c\"): public_key_pem is not PEM text (no \"-----BEGIN\" line)",
        "auth.keys: entry 4 (kid \"c\"): private_key_pem is not PEM text (no \"-----BEGIN\" line)",
        "auth.keys: entry 5 (kid \"d\"): hmac_secret not allowed with EdDSA",
        "auth.keys: entry 5 (kid \"d\"): public_key_file /nonexistent.pem does not exist or is not a file",
        "auth.jwks_file: auth.jwks is set too; set at most one of them",
    ];
    for expected in expected {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in {problems:#?}"
        );
    }
    // With keys listed, the default key (auth.hmac_secret) is not required.
    assert!(!problems.iter().any(|p| p.starts_with("auth.hmac_secret")));
}

#[test]
fn keys_load_from_toml_and_secrets_stay_redacted() {
    let private = fixture("ec_private.pem");
    let config = Loader::new()
        .defaults_toml(&format!(
            "[[auth.keys]]\nkid = \"k1\"\nalgorithm = \"HS256\"\nhmac_secret = \"{SECRET_A}\"\n\
             [[auth.keys]]\nkid = \"k2\"\nalgorithm = \"ES256\"\nprivate_key_pem = \"\"\"\n{private}\"\"\"\n"
        ))
        .load()
        .expect("valid");
    assert_eq!(config.auth.keys.len(), 2);
    assert!(config.auth.hmac_secret.is_none());
    let printed = format!("{}\n{config:?}", config.to_toml_redacted());
    assert!(!printed.contains(SECRET_A), "{printed}");
    assert!(!printed.contains("PRIVATE KEY-----\nMI"), "{printed}");
    assert!(
        !printed.contains(private.lines().nth(1).unwrap()),
        "{printed}"
    );
    let verifier = Verifier::from_config(&config.auth).unwrap();
    assert_eq!(verifier.keys().kids().collect::<Vec<_>>(), ["k1", "k2"]);

    // A key's secret comes as a string; a wrong type is reported without its value.
    let problems =
        problems("[[auth.keys]]\nkid = \"k\"\nalgorithm = \"HS256\"\nhmac_secret = 12345\n");
    assert!(
        problems.iter().any(|p| p.starts_with("auth.keys")),
        "{problems:#?}"
    );
    assert!(
        !problems.iter().any(|p| p.contains("12345")),
        "{problems:#?}"
    );
}
