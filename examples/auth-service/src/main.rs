//! `auth-service`: serves Keel's auth service (the default), and calls a
//! running one: `login`, `create-credential`, `validate`, `jwks`.
//!
//! Passwords are read from standard input (one line), never from the
//! command line.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;
use auth_service::auth_v1::auth_service_client::AuthServiceClient;
use auth_service::auth_v1::{
    CreateCredentialRequest, GetJwksRequest, LoginRequest, RevokeAllRequest, ValidateRequest,
};
use auth_service::{App, AuthSections, SERVICES, Settings};
use clap::Subcommand;
use keel_rpc::cli::{Action, Cli};

/// The auth service's own subcommands, beside Keel's (`serve`,
/// `print-config`, `probe`, `mint-token`).
#[derive(Debug, Subcommand)]
enum Tools {
    /// Log in to a running service; the password is read from stdin. Prints
    /// the access token (or the whole answer as JSON with --json).
    Login {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "http://127.0.0.1:50053")]
        url: String,
        /// Print the access and refresh tokens and their expiries as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a credential (needs a token with auth:admin); the password is
    /// read from stdin.
    CreateCredential {
        #[arg(long)]
        username: String,
        /// Scope to grant; repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long, default_value = "http://127.0.0.1:50053")]
        url: String,
        /// Bearer token of an administrator (see `login`).
        #[arg(long, env = "ACCESS_TOKEN")]
        token: String,
    },
    /// Ask a running service whether an access token is valid.
    Validate {
        access_token: String,
        #[arg(long, default_value = "http://127.0.0.1:50053")]
        url: String,
    },
    /// Sign out everywhere: revoke every session of a subject (your own by
    /// default).
    RevokeAll {
        #[arg(long, default_value = "")]
        subject: String,
        #[arg(long, default_value = "http://127.0.0.1:50053")]
        url: String,
        #[arg(long, env = "ACCESS_TOKEN")]
        token: String,
    },
    /// Print the JWKS document of a running service (for auth.jwks_file).
    Jwks {
        #[arg(long, default_value = "http://127.0.0.1:50053")]
        url: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    keel_rpc::cli::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli: Cli<Tools> = Cli::parse::<AuthSections>(keel_rpc::cli::program!());
    let loader = auth_service::loader(cli.config_file());
    let command = match cli.run::<AuthSections>(&loader, SERVICES).await? {
        Action::Serve(settings) => return serve(settings).await,
        Action::Service(command) => command,
        Action::Done => return Ok(()),
    };
    match command {
        Tools::Login {
            username,
            url,
            json,
        } => {
            let password = read_password()?;
            let reply = client(&url, None)
                .await?
                .login(LoginRequest { username, password })
                .await?
                .into_inner();
            if json {
                let value = serde_json::json!({
                    "access_token": reply.access_token,
                    "access_token_expires_at": reply.access_token_expires_at,
                    "refresh_token": reply.refresh_token,
                    "refresh_token_expires_at": reply.refresh_token_expires_at,
                    "scope": reply.scope,
                    "session_id": reply.session_id,
                });
                println!("{value:#}");
            } else {
                println!("{}", reply.access_token);
            }
        }
        Tools::CreateCredential {
            username,
            scopes,
            url,
            token,
        } => {
            let password = read_password()?;
            let reply = client(&url, Some(&token))
                .await?
                .create_credential(CreateCredentialRequest {
                    username,
                    password,
                    scopes,
                })
                .await?
                .into_inner();
            println!("{reply:#?}");
        }
        Tools::Validate { access_token, url } => {
            let reply = client(&url, None)
                .await?
                .validate(ValidateRequest { access_token })
                .await?
                .into_inner();
            println!("{reply:#?}");
        }
        Tools::RevokeAll {
            subject,
            url,
            token,
        } => {
            let reply = client(&url, Some(&token))
                .await?
                .revoke_all(RevokeAllRequest { subject })
                .await?
                .into_inner();
            println!("{reply:#?}");
        }
        Tools::Jwks { url } => {
            let reply = client(&url, None)
                .await?
                .get_jwks(GetJwksRequest {})
                .await?
                .into_inner();
            println!("{}", auth_service::jwks_json(&reply));
        }
    }
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Logs and tracing as `[telemetry]` says; flushed after draining.
    let mut telemetry = keel_rpc::telemetry::init(&settings)?;
    let passwords = &settings.app.passwords;
    tracing::info!(
        store = %settings.store.url,
        argon2_memory_kib = passwords.memory_kib,
        argon2_iterations = passwords.iterations,
        argon2_parallelism = passwords.parallelism,
        "starting"
    );
    let app = App::new(&settings).await?;
    let purge = app.spawn_purge();
    let served = app.server(&settings)?.serve().await;
    purge.abort();
    app.handler.store().store().close().await;
    served?;
    telemetry.shutdown().await?;
    Ok(())
}

/// One line of standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on stdin");
    Ok(password)
}

/// Adds `authorization: Bearer <token>` when there is a token.
#[derive(Clone)]
struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

type Client = AuthServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

async fn client(url: &str, token: Option<&str>) -> anyhow::Result<Client> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let bearer = match token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse()
                .context("the token is not a valid header value")?,
        ),
        None => None,
    };
    Ok(AuthServiceClient::with_interceptor(channel, Bearer(bearer)))
}
