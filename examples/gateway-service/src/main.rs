//! `gateway-service`: serves the example gateway (the default), or calls a
//! running one.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use keel::auth::StaticToken;

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
    /// Serve the gateway (the default).
    Serve,
    /// Call GetProfile on a running gateway with the generated Keel client.
    Call {
        /// Gateway URL.
        #[arg(long, default_value = "http://127.0.0.1:50052")]
        url: String,
        /// Bearer token (`user-service mint-token`).
        #[arg(long, env = "KEEL_TOKEN")]
        token: String,
        /// The user whose profile to get.
        user_id: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config, upstream) = gateway_service::load_config(args.config.as_deref())?;
    let mut telemetry = keel::telemetry::init(&config)?;
    match args.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let keel = keel::Keel::new(&config, gateway_service::SERVICES)?;
            gateway_service::server(&keel, &config, &upstream)?
                .serve()
                .await?;
        }
        Command::Call {
            url,
            token,
            user_id,
        } => {
            let metrics = keel::Metrics::new(&[])?;
            let client = keel::client::Client::new(&config, metrics.registry())?
                .with_token_source(StaticToken::new(token));
            let mut profiles = gateway_service::gateway_v1::profile_service_client(url, &client)?;
            let request = gateway_service::gateway_v1::GetProfileRequest { user_id };
            println!("{:#?}", profiles.get_profile(request).await?.into_inner());
        }
    }
    telemetry.shutdown().await?;
    Ok(())
}
