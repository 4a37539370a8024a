//! [`RemoteKeys`]: the verification keys of `auth.jwks_url`, fetched and kept fresh.
//!
//! Verifiers that fetch the issuer's JWKS (as Envoy's `jwt_authn` does) follow its key
//! rotation without a restart: the auth service publishes a new key, verifiers pick it up at
//! their next refresh (or soon after the first token that names it), and only then does the
//! auth service start signing with it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{KeySet, Verifier};
use crate::config::Config;

/// One fetch may take this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A JWKS document larger than this is refused (a key set of hundreds of RSA keys is smaller).
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a JWKS fetch did not give usable keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The request failed or timed out.
    #[error("auth.jwks_url: fetching {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The document does not give keys.
    #[error("auth.jwks_url: {url}: {reason}")]
    Document {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `client.tls.ca_file` (the CAs of an `https://` URL) does not load.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The refresh counter could not be registered.
    #[error("registering the JWKS refresh metric: {0}")]
    Metric(#[from] prometheus::Error),
}

/// The keys of `auth.jwks_url` for a [`Verifier`], together with the keys configured in place
/// (`auth.keys`, `auth.jwks`, the default key).
pub struct RemoteKeys {
    url: http::Uri,
    config: Config,
    client: HttpClient<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    verifier: Arc<Verifier>,
    /// `keel_jwks_refreshes_total{result="ok"|"error"}`.
    refreshes: IntCounterVec,
    /// The last document installed: an unchanged one is not installed again, as installing
    /// empties the verified-token cache.
    installed: Mutex<Option<Bytes>>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RemoteKeys {
    /// The remote keys of `config.auth.jwks_url` for `verifier`, `None` when it is not set. Its
    /// refresh counter is registered in `registry`.
    pub fn new<App>(
        config: &Config<App>,
        verifier: Arc<Verifier>,
        registry: &Registry,
    ) -> Result<Option<Self>, JwksError> {
        let Some(url) = &config.auth.jwks_url else {
            return Ok(None);
        };
        let url: http::Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| JwksError::Document {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
        let tls = crate::tls::https_roots(&config.client.tls)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = HttpClient::builder(TokioExecutor::new()).build(connector);
        let refreshes = IntCounterVec::new(
            Opts::new(
                "keel_jwks_refreshes_total",
                "Fetches of auth.jwks_url, by result (ok, error).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(refreshes.clone()))?;
        for result in ["ok", "error"] {
            refreshes.with_label_values(&[result]);
        }
        Ok(Some(RemoteKeys {
            url,
            config: config.keel(),
            client,
            verifier,
            refreshes,
            installed: Mutex::new(None),
        }))
    }

    /// Fetches the document now and installs its keys (with the configured ones) in the
    /// verifier; counted either way.
    pub async fn fetch(&self) -> Result<(), JwksError> {
        let result = self.fetch_and_install().await;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.refreshes.with_label_values(&[label]).inc();
        result
    }

    /// Fetches every `auth.jwks_refresh`, and after a token names an unknown `kid` (no sooner
    /// than `auth.jwks_min_refresh` after the last fetch), until `stop`. A failed fetch keeps
    /// the keys in use and is logged.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let auth = &self.config.auth;
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(last + auth.jwks_refresh) => {}
                _ = self.verifier.unknown_kid.notified() => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep_until(last + auth.jwks_min_refresh) => {}
                    }
                }
            }
            last = Instant::now();
            if let Err(error) = self.fetch().await {
                tracing::warn!(%error, "auth.jwks_url: refresh failed; keeping the last keys");
            }
        }
    }

    async fn fetch_and_install(&self) -> Result<(), JwksError> {
        let url = self.url.to_string();
        let body = tokio::time::timeout(FETCH_TIMEOUT, self.get())
            .await
            .map_err(|_| JwksError::Fetch {
                url: url.clone(),
                reason: format!("no answer within {FETCH_TIMEOUT:?}"),
            })??;
        let mut installed = self.installed.lock().unwrap_or_else(|e| e.into_inner());
        if installed.as_ref() == Some(&body) {
            return Ok(());
        }
        let document = |reason: String| JwksError::Document {
            url: url.clone(),
            reason,
        };
        let text = std::str::from_utf8(&body).map_err(|e| document(e.to_string()))?;
        let mut keys =
            KeySet::from_config(&self.config.auth).map_err(|e| document(e.to_string()))?;
        keys.insert_jwks_json("auth.jwks_url", text)
            .map_err(|e| document(e.to_string()))?;
        let kids: Vec<&str> = keys.kids().collect();
        tracing::info!(%url, ?kids, "auth.jwks_url: keys installed");
        self.verifier.set_keys(keys);
        *installed = Some(body);
        Ok(())
    }

    /// The document's bytes, from a `200 OK`.
    async fn get(&self) -> Result<Bytes, JwksError> {
        let url = self.url.to_string();
        let failed = |reason: String| JwksError::Fetch {
            url: url.clone(),
            reason,
        };
        let request = http::Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| failed(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| failed(error_chain(&e)))?;
        if response.status() != http::StatusCode::OK {
            return Err(failed(format!("HTTP status {}", response.status())));
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| failed(format!("reading the document: {e}")))?;
        Ok(body.to_bytes())
    }
}

/// An error with its sources, which hyper's client keeps the useful part in.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
