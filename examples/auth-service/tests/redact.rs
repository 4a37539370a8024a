//! The auth API's secrets carry `debug_redact = true`: their generated
//! `Debug` prints `[REDACTED]`, so a request or response that is logged, put
//! in a panic message or in a span's fields never shows them.

use std::sync::{Arc, Mutex};

use auth_service::auth_v1::{LoginRequest, RefreshRequest, TokenResponse};

const PASSWORD: &str = "correct-horse-battery-staple";
const ACCESS: &str = "eyJhbGciOiJIUzI1NiJ9.access-secret";
const REFRESH: &str = "refresh-secret-0123456789";

fn login() -> LoginRequest {
    LoginRequest {
        username: "alice".into(),
        password: PASSWORD.into(),
    }
}

fn assert_redacted(text: &str) {
    for secret in [PASSWORD, ACCESS, REFRESH] {
        assert!(!text.contains(secret), "{secret} shows in: {text}");
    }
    assert!(text.contains("[REDACTED]"), "{text}");
}

#[test]
fn debug_prints_redacted_for_passwords_and_tokens() {
    let text = format!("{:?}", login());
    assert_redacted(&text);
    assert!(text.contains("alice"), "other fields print: {text}");
    let tokens = TokenResponse {
        access_token: ACCESS.into(),
        refresh_token: REFRESH.into(),
        token_type: "Bearer".into(),
        ..TokenResponse::default()
    };
    let text = format!("{tokens:#?}");
    assert_redacted(&text);
    assert!(text.contains("Bearer"), "{text}");
    assert_redacted(&format!(
        "{:?}",
        RefreshRequest {
            refresh_token: REFRESH.into(),
            ..Default::default()
        }
    ));
    // As a handler sees it: tonic's request prints the message with its Debug.
    assert_redacted(&format!("{:?}", tonic::Request::new(login())));
}

#[test]
fn a_logged_request_and_a_panic_message_never_show_the_password() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let request = login();
        tracing::info!(?request, "login attempt");
        let _span = tracing::info_span!("call", request = ?request).entered();
        tracing::warn!("inside the span");
    });
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("login attempt"), "{logged}");
    assert_redacted(&logged);

    let request = login();
    let panic = std::panic::catch_unwind(|| panic!("bad request: {request:?}")).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert_redacted(message);
}
