//! The user service over its store, on SQLite and on PostgreSQL: users
//! survive a restart, ids stay unique under concurrent writers, imports are
//! all or nothing.

mod common;

use std::sync::Arc;

use common::*;
use jsonwebtoken::Algorithm;
use tonic::Code;
use user_service::Users;
use user_service::user_v1::{
    CreateUserRequest, ExportUsersRequest, GetUserRequest, ListUsersRequest,
};

fn new(i: usize) -> CreateUserRequest {
    CreateUserRequest {
        name: format!("User {i}"),
        email: format!("user{i}@example.com"),
    }
}

fn writer() -> String {
    sign_hs(Algorithm::HS256, &claims("users:read users:write"))
}

async fn users_survive_a_restart(db: Db) {
    let test = TestDb::new(db).await;
    let token = writer();
    let users = Users::connect(&test.config).await.expect("store");
    let server = Server::start_with(config(), users.clone()).await;
    let mut client = server.client().await;
    let ada = client
        .create_user(with_token(
            CreateUserRequest {
                name: "  Ada  ".into(),
                email: "ada@example.com".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ada.id.as_str(), ada.name.as_str()), ("u-000001", "Ada"));
    server.stop().await;
    users.store().close().await;

    let users = Users::connect(&test.config).await.expect("store again");
    let server = Server::start_with(config(), users.clone()).await;
    let mut client = server.client().await;
    let got = client
        .get_user(with_token(GetUserRequest { id: ada.id.clone() }, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, ada, "the same user, timestamps included");
    let bob = client
        .create_user(with_token(new(2), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.id, "u-000002", "ids go on after a restart");
    let status = client
        .create_user(with_token(
            CreateUserRequest {
                name: "Ada again".into(),
                email: "ada@example.com".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::AlreadyExists,
            "a user with email \"ada@example.com\" exists"
        )
    );
    server.stop().await;
    users.store().close().await;
}

async fn concurrent_creates_get_distinct_ids(db: Db) {
    let test = TestDb::new(db).await;
    let users = Users::connect(&test.config).await.expect("store");
    let server = Arc::new(Server::start_with(config(), users.clone()).await);
    let token = Arc::new(writer());
    let creates: Vec<_> = (0..24)
        .map(|i| {
            let server = server.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut client = server.client().await;
                client
                    .create_user(with_token(new(i), &token))
                    .await
                    .map(|r| r.into_inner().id)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for create in creates {
        ids.push(create.await.unwrap().expect("created"));
    }
    ids.sort();
    let expected: Vec<String> = (1..=24).map(|i| format!("u-{i:06}")).collect();
    assert_eq!(ids, expected);
    drop(server);
    users.store().close().await;
}

async fn listing_exporting_and_all_or_nothing_imports(db: Db) {
    let test = TestDb::new(db).await;
    let users = Users::connect(&test.config).await.expect("store");
    let server = Server::start_with(config(), users.clone()).await;
    let mut client = server.client().await;
    let token = writer();
    let imported = client
        .import_users(with_token(
            tokio_stream::iter((0..7).map(new).collect::<Vec<_>>()),
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.users.len(), 7);

    // One email is taken: the whole import fails and creates nothing.
    let status = client
        .import_users(with_token(tokio_stream::iter(vec![new(7), new(3)]), &token))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::AlreadyExists,
            "a user with email \"user3@example.com\" exists"
        )
    );
    let status = client
        .import_users(with_token(tokio_stream::iter(vec![new(8), new(8)]), &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    // An import is one transaction, of at most `max_stream_messages` (1000)
    // users: the 1001st fails the call, and nothing is created (the pages
    // below hold the seven users of the first import only).
    let status = client
        .import_users(with_token(
            tokio_stream::iter((100..1101).map(new).collect::<Vec<_>>()),
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::ResourceExhausted,
            "the stream carried more than its max_stream_messages of 1000 request messages"
        )
    );

    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_users(with_token(
                ListUsersRequest {
                    page_size: 3,
                    page_token: page_token.clone(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        pages.push(page.users.iter().map(|u| u.id.clone()).collect::<Vec<_>>());
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        pages,
        [
            vec!["u-000001", "u-000002", "u-000003"],
            vec!["u-000004", "u-000005", "u-000006"],
            vec!["u-000007"],
        ]
    );
    for bad in ["nope", "u-", "u-12x"] {
        let status = client
            .list_users(with_token(
                ListUsersRequest {
                    page_size: 0,
                    page_token: bad.into(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
    }

    let mut stream = client
        .export_users(with_token(ExportUsersRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    let mut exported = Vec::new();
    while let Some(user) = stream.message().await.unwrap() {
        exported.push(user.id);
    }
    assert_eq!(exported.len(), 7, "the failed imports created nothing");
    server.stop().await;
    users.store().close().await;
}

keel_rpc::on_both_backends!(
    users_survive_a_restart,
    concurrent_creates_get_distinct_ids,
    listing_exporting_and_all_or_nothing_imports,
);

/// `store.url` with `sslmode` and `sslrootcert`, against the test's
/// PostgreSQL: with TLS on there, the connection is encrypted and the
/// server's certificate is checked against the given CA; with TLS off there,
/// `sslmode=require` refuses to fall back to plaintext.
#[tokio::test]
async fn postgres_connections_use_tls_as_the_url_says() {
    use keel_rpc::config::StoreConfig;
    use keel_rpc::store::{Store, sqlx};
    let base = std::env::var(POSTGRES_ENV).expect("the PostgreSQL URL of the tests");
    let separator = if base.contains('?') { '&' } else { '?' };
    let with = |params: &str| {
        let mut config = StoreConfig::with_url(format!("{base}{separator}{params}"));
        config.max_connections = 1;
        config.acquire_timeout = std::time::Duration::from_secs(3);
        config
    };
    let show = |store: Store, setting: &'static str| async move {
        let value: String = keel_rpc::with_store!(&store, pool => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
                .fetch_one(pool)
                .await
                .expect("SHOW")
        });
        store.close().await;
        value
    };
    let plain = Store::connect_url(&base).await.expect("PostgreSQL");
    let ssl = show(plain, "ssl").await;
    if ssl != "on" {
        let refused = Store::connect(&with("sslmode=require")).await;
        let error = refused.expect_err("no plaintext fallback").to_string();
        assert!(
            error.to_lowercase().contains("tls") || error.contains("SSL"),
            "{error}"
        );
        return;
    }

    let plain = Store::connect_url(&base).await.expect("PostgreSQL");
    let cert_file = show(plain, "ssl_cert_file").await;
    let store = Store::connect(&with(&format!("sslmode=verify-ca&sslrootcert={cert_file}")))
        .await
        .expect("TLS with the server's certificate as the CA");
    let encrypted: bool = keel_rpc::with_store!(&store, pool => {
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(pool)
            .await
            .expect("pg_stat_ssl")
    });
    assert!(encrypted, "the connection is encrypted");
    store.close().await;

    // A CA that did not issue the server's certificate: no connection.
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.pem()).unwrap();
    let refused = Store::connect(&with(&format!(
        "sslmode=verify-ca&sslrootcert={}",
        other_ca.display()
    )))
    .await;
    assert!(
        refused.is_err(),
        "a server certificate of another CA was accepted"
    );
}
