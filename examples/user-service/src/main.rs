//! `user-service`: serves the example (the default), mints development
//! tokens, and calls a running instance with the generated client.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use keel_rpc::config::Config;
use user_service::user_v1::user_service_client::UserServiceClient;
use user_service::user_v1::{CreateUserRequest, GetUserRequest, ListUsersRequest};
use user_service::{SERVICES, Users};

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML file layered over the embedded defaults (KEEL_* variables override both).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the user service (the default).
    Serve,
    /// Print the effective configuration, secrets redacted.
    PrintConfig,
    /// Exit 0 when the local server reports SERVING on the standard health
    /// service (for container health checks).
    Probe {
        /// Service to ask about; empty for the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Mint an access token signed with the configured HMAC secret (development).
    MintToken {
        /// Subject of the token.
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// Scope to grant; repeat for several.
        #[arg(long = "scope", default_values = ["users:read", "users:write"])]
        scopes: Vec<String>,
        /// Lifetime, like `15m` or `1h`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Call a running service with the generated client.
    Call {
        /// Server URL.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        url: String,
        /// Bearer token (see `mint-token`).
        #[arg(long, env = "ACCESS_TOKEN", default_value = "")]
        token: String,
        #[command(subcommand)]
        rpc: Rpc,
    },
}

#[derive(Subcommand)]
enum Rpc {
    /// GetUser.
    Get { id: String },
    /// CreateUser.
    Create { name: String, email: String },
    /// ListUsers.
    List {
        #[arg(long, default_value_t = 0)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// HealthCheck (public).
    Health,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `print-config --help` ends with the reference of every key.
    let command = Args::command().mut_subcommand("print-config", |c| {
        c.after_long_help(Config::<()>::reference())
    });
    let args = Args::from_arg_matches(&command.get_matches())?;
    // Loaded by the commands that need it (not `call`, a client).
    let config = || user_service::loader(args.config.as_deref()).load();
    match args.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = config()?;
            // Logs and tracing as `[telemetry]` says; flushed after draining.
            let mut telemetry = keel_rpc::telemetry::init(&config)?;
            let keel = keel_rpc::Keel::new(&config, SERVICES)?;
            let users = Users::connect(&config.store).await?;
            user_service::server(&keel, &config, users)?.serve().await?;
            telemetry.shutdown().await?;
        }
        Command::PrintConfig => print!("{}", config()?.to_toml_redacted()),
        Command::Probe { service } => keel_rpc::serve::probe_local(&config()?, &service).await?,
        Command::MintToken { sub, scopes, ttl } => {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            println!(
                "{}",
                keel_rpc::auth::mint_access_token(&config()?.auth, &sub, &scopes, ttl)?
            );
        }
        Command::Call { url, token, rpc } => call(url, token, rpc).await?,
    }
    Ok(())
}

async fn call(url: String, token: String, rpc: Rpc) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let bearer: Option<tonic::metadata::MetadataValue<_>> = if token.is_empty() {
        None
    } else {
        Some(
            format!("Bearer {token}")
                .parse()
                .context("token is not a valid header value")?,
        )
    };
    let mut client =
        UserServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            if let Some(bearer) = &bearer {
                req.metadata_mut().insert("authorization", bearer.clone());
            }
            Ok(req)
        });
    // Printed in the proto3 JSON mapping, as grpcurl prints it.
    let json = keel_rpc::json::Json::new(user_service::user_v1::FILE_DESCRIPTOR_SET)?;
    let reply = match rpc {
        Rpc::Get { id } => json.to_string_pretty(
            "user.v1.User",
            &client.get_user(GetUserRequest { id }).await?.into_inner(),
        )?,
        Rpc::Create { name, email } => json.to_string_pretty(
            "user.v1.User",
            &client
                .create_user(CreateUserRequest { name, email })
                .await?
                .into_inner(),
        )?,
        Rpc::List {
            page_size,
            page_token,
        } => json.to_string_pretty(
            "user.v1.ListUsersResponse",
            &client
                .list_users(ListUsersRequest {
                    page_size,
                    page_token,
                })
                .await?
                .into_inner(),
        )?,
        Rpc::Health => json.to_string_pretty(
            "user.v1.HealthCheckResponse",
            &client.health_check(()).await?.into_inner(),
        )?,
    };
    println!("{reply}");
    Ok(())
}
