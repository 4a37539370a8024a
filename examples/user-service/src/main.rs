//! `user-service`: serves the example (the default), mints development
//! tokens, and calls a running instance with the generated client.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use keel_rpc::cli::{Action, Cli};
use user_service::user_v1::user_service_client::UserServiceClient;
use user_service::user_v1::{CreateUserRequest, GetUserRequest, ListUsersRequest};
use user_service::{SERVICES, Users};

/// The example's own subcommands, beside Keel's (`serve`, `print-config`,
/// `probe`, `mint-token`).
#[derive(Debug, Subcommand)]
enum Tools {
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

#[derive(Debug, Subcommand)]
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
async fn main() -> ExitCode {
    keel_rpc::cli::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli: Cli<Tools> = Cli::parse::<()>(keel_rpc::cli::program!());
    let loader = user_service::loader(cli.config_file());
    match cli.run::<()>(&loader, SERVICES).await? {
        Action::Serve(config) => {
            // Logs and tracing as `[telemetry]` says; flushed after draining.
            let mut telemetry = keel_rpc::telemetry::init(&config)?;
            let keel = keel_rpc::Keel::new(&config, SERVICES)?;
            let users = Users::connect(&config.store).await?;
            user_service::server(&keel, &config, users)?.serve().await?;
            telemetry.shutdown().await?;
        }
        Action::Service(Tools::Call { url, token, rpc }) => call(url, token, rpc).await?,
        Action::Done => {}
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
