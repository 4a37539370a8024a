//! `gateway-service`: serves the example gateway (the default), or calls a
//! running one.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use gateway_service::Settings;
use keel_rpc::auth::StaticToken;

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
    /// Print the effective configuration, secrets redacted.
    PrintConfig,
    /// Exit 0 when the local server reports SERVING on the standard health
    /// service (for container health checks).
    Probe {
        /// Service to ask about; empty for the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Call GetProfile on a running gateway with the generated Keel client.
    Call {
        /// Gateway URL.
        #[arg(long, default_value = "http://127.0.0.1:50052")]
        url: String,
        /// Bearer token (`user-service mint-token`).
        #[arg(long, env = "ACCESS_TOKEN")]
        token: String,
        /// The user whose profile to get.
        user_id: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `print-config --help` ends with the reference of every key.
    let command = Args::command()
        .mut_subcommand("print-config", |c| c.after_long_help(Settings::reference()));
    let args = Args::from_arg_matches(&command.get_matches())?;
    let mut config = Settings::from_loader(&gateway_service::loader(args.config.as_deref()))?;
    let command = args.command.unwrap_or(Command::Serve);
    if let Command::Call { .. } = command {
        // The caller's spans are not the gateway's.
        config.service.name = "gateway-cli".to_owned();
    }
    if let Command::Probe { service } = &command {
        return Ok(keel_rpc::serve::probe_local(&config, service).await?);
    }
    if let Command::PrintConfig = &command {
        print!("{}", config.to_toml_redacted());
        return Ok(());
    }
    let mut telemetry = keel_rpc::telemetry::init(&config)?;
    match command {
        Command::Serve => {
            let keel = keel_rpc::Keel::new(&config, gateway_service::SERVICES)?;
            gateway_service::server(&keel, &config, &config.app.upstream)?
                .serve()
                .await?;
        }
        Command::Probe { .. } | Command::PrintConfig => {}
        Command::Call {
            url,
            token,
            user_id,
        } => {
            let metrics = keel_rpc::Metrics::new(&[])?;
            let client = keel_rpc::client::Client::new(&config, metrics.registry())?
                .with_token_source(StaticToken::new(token));
            let mut profiles = gateway_service::gateway_v1::connect_profile_service(url, &client)?;
            let request = gateway_service::gateway_v1::GetProfileRequest { user_id };
            // One root span around the call, so the CLI's trace id can be printed.
            let span = tracing::info_span!("get-profile");
            let trace = span.in_scope(keel_rpc::telemetry::current_ids);
            let reply = tracing::Instrument::instrument(profiles.get_profile(request), span).await;
            if let Some((trace_id, _)) = trace {
                eprintln!("trace id: {trace_id}");
            }
            // In the proto3 JSON mapping, as grpcurl prints it.
            let json = keel_rpc::json::Json::new(gateway_service::gateway_v1::FILE_DESCRIPTOR_SET)?;
            println!(
                "{}",
                json.to_string_pretty("gateway.v1.Profile", &reply?.into_inner())?
            );
        }
    }
    telemetry.shutdown().await?;
    Ok(())
}
