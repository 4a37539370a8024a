//! `gateway-service`: serves the example gateway (the default), or calls a
//! running one.

use std::process::ExitCode;

use clap::Subcommand;
use gateway_service::{SERVICES, Sections};
use keel_rpc::auth::StaticToken;
use keel_rpc::cli::{Action, Cli};

/// The gateway's own subcommand, beside Keel's (`serve`, `print-config`,
/// `probe`, `mint-token`).
#[derive(Debug, Subcommand)]
enum Tools {
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
async fn main() -> ExitCode {
    keel_rpc::cli::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli: Cli<Tools> = Cli::parse::<Sections>(keel_rpc::cli::program!());
    let loader = gateway_service::loader(cli.config_file());
    match cli.run::<Sections>(&loader, SERVICES).await? {
        Action::Serve(config) => {
            let mut telemetry = keel_rpc::telemetry::init(&config)?;
            let keel = keel_rpc::Keel::new(&config, SERVICES)?;
            gateway_service::server(&keel, &config, &config.app.upstream)?
                .serve()
                .await?;
            telemetry.shutdown().await?;
        }
        Action::Service(Tools::Call {
            url,
            token,
            user_id,
        }) => {
            let mut config = gateway_service::Settings::from_loader(&loader)?;
            // The caller's spans are not the gateway's.
            config.service.name = "gateway-cli".to_owned();
            let mut telemetry = keel_rpc::telemetry::init(&config)?;
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
            telemetry.shutdown().await?;
        }
        Action::Done => {}
    }
    Ok(())
}
