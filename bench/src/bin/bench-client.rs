//! `bench-client`: the client side of `cargo xtask bench --client`.
//!
//! Makes `GetUser` calls to a `bench-server` through one of three clients,
//! all the generated `UserServiceClient`:
//!
//! - `--mode plain`: over a plain tonic `Channel` (`Endpoint::connect`);
//! - `--mode keel`: over Keel's client layer on one channel,
//!   `client.wrap(&USER_SERVICE_POLICY, client.connect(target)?)`, with a
//!   `keel_rpc::client::Client` made from user-service's development
//!   configuration (no token source) and a fresh prometheus `Registry`;
//! - `--mode balanced`: the same layer over `client.balance(…)` of a list
//!   holding the one target: the p2c balancer, its buffer and its PeakEWMA
//!   and ejection bookkeeping in front of the replica's channel.
//!
//! Each call is the server bench's: `GetUser` of the user whose id
//! `--user-id` gives (bench-server's startup user), with `authorization:
//! Bearer <--token>` in its metadata when a token is given (set the same way
//! in every mode, so Keel's layer leaves it alone). Calls go one at a time.
//! First `--warmup` calls (every one must succeed, else the process fails),
//! then `--calls` calls inside [`measured_calls`], a function of its own that
//! is never inlined, so that callgrind can count exactly them:
//! `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='*measured_calls*'`. A call counts as failed unless it
//! answers OK with the requested user; any failure makes the exit status
//! non-zero.
//!
//! The runtime is tokio's `current_thread` one, so that everything a call
//! does runs on the one thread callgrind counts, within [`measured_calls`]'s
//! `block_on`: tonic's channel buffer worker, hyper's connection task and,
//! balanced, the balancer's own buffer worker. (Callgrind's collection state
//! is per thread: a task on another thread would not be counted.)
//!
//! Logging: a `warn` fmt subscriber in every mode, as the plain server of
//! `bench-server` has (without one, the `log` feature of `tracing` hands h2's
//! and hyper's spans to `log`). Keel's client span is a `DEBUG` span, so it is
//! disabled there; `--telemetry` installs `keel_rpc::telemetry::init` of the
//! same configuration instead, in every mode (the subscriber of a Keel
//! service: its OpenTelemetry layer records every client span, no exporter).
//!
//! Prints `bench-client mode=M calls=N failed=F` at the end.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use user_service::user_v1;
use user_service::user_v1::user_service_client::UserServiceClient;
use user_service::user_v1::{GetUserRequest, User};

#[derive(Parser)]
#[command(
    about = "GetUser calls through plain tonic or Keel's client, for `cargo xtask bench --client`"
)]
struct Args {
    /// The bench-server to call, `http://127.0.0.1:PORT`.
    #[arg(long)]
    target: String,
    /// Which client makes the calls.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Calls made inside `measured_calls` (what callgrind counts).
    #[arg(long, default_value_t = 20_000)]
    calls: u64,
    /// Calls made before them, not counted.
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// The id of the user `GetUser` asks for (bench-server's startup user).
    #[arg(long)]
    user_id: String,
    /// A bearer token sent as `authorization` metadata with every call.
    #[arg(long)]
    token: Option<String>,
    /// Install Keel's telemetry (`keel_rpc::telemetry::init`) instead of a
    /// `warn` fmt subscriber, in every mode.
    #[arg(long)]
    telemetry: bool,
}

/// The client of `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The generated client over a plain tonic `Channel`.
    Plain,
    /// Over Keel's client layer on one tonic channel (`Client::connect`).
    Keel,
    /// Over Keel's client layer on a balanced list of one replica (`Client::balance`).
    Balanced,
}

/// The generated client, over one transport or the other.
enum Users {
    Plain(UserServiceClient<Channel>),
    Keel(UserServiceClient<keel_rpc::client::Channel>),
}

impl Users {
    async fn get_user(
        &mut self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<User>, Status> {
        match self {
            Users::Plain(client) => client.get_user(request).await,
            Users::Keel(client) => client.get_user(request).await,
        }
    }
}

/// What every call sends.
struct Call {
    id: String,
    authorization: Option<AsciiMetadataValue>,
}

impl Call {
    fn request(&self) -> Request<GetUserRequest> {
        let mut request = Request::new(GetUserRequest {
            id: self.id.clone(),
        });
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }
}

/// How a run of calls went.
#[derive(Debug, Default)]
struct Outcome {
    failed: u64,
    /// What the first failed call said.
    first_error: Option<String>,
}

/// `n` calls, one at a time, each checked.
async fn calls(users: &mut Users, call: &Call, n: u64) -> Outcome {
    let mut outcome = Outcome::default();
    for _ in 0..n {
        let error = match users.get_user(call.request()).await {
            Ok(response) if response.get_ref().id == call.id => continue,
            Ok(response) => format!("answered user {:?}", response.get_ref().id),
            Err(status) => status.to_string(),
        };
        outcome.failed += 1;
        outcome.first_error.get_or_insert(error);
    }
    outcome
}

/// The measured calls: callgrind collects from this function's entry to its
/// exit (`--toggle-collect='*measured_calls*'`), and every task the calls
/// wake runs inside its `block_on`. Not inlined, so that it is a function of
/// its own in the binary; nothing else has `measured_calls` in its name.
#[inline(never)]
fn measured_calls(
    runtime: &tokio::runtime::Runtime,
    users: &mut Users,
    call: &Call,
    n: u64,
) -> Outcome {
    runtime.block_on(calls(users, call, n))
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // One thread runs everything, the client's spawned tasks too: see the module docs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let _entered = runtime.enter();
    // The configuration of the bench's Keel server, in development.
    let config = user_service::loader(None)
        .defaults_toml("[service]\nenvironment = \"development\"\n")
        .load()?;
    let _telemetry = match args.telemetry {
        true => Some(keel_rpc::telemetry::init(&config)?),
        false => {
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_writer(std::io::stderr)
                .init();
            None
        }
    };
    let endpoint = Endpoint::from_shared(args.target.clone())
        .with_context(|| format!("--target {:?}", args.target))?;
    // Kept alive with the client, as a service's registry would be.
    let registry = prometheus::Registry::new();
    let client = keel_rpc::client::Client::new(&config, &registry)?;
    let mut users = match args.mode {
        Mode::Plain => {
            let channel = runtime
                .block_on(endpoint.connect())
                .with_context(|| format!("connecting to {}", args.target))?;
            Users::Plain(UserServiceClient::new(channel))
        }
        Mode::Keel => {
            let transport = client.connect(args.target.as_str())?;
            Users::Keel(UserServiceClient::new(
                client.wrap(&user_v1::USER_SERVICE_POLICY, transport),
            ))
        }
        Mode::Balanced => {
            let transport = client.balance("bench", [endpoint])?;
            Users::Keel(UserServiceClient::new(
                client.wrap(&user_v1::USER_SERVICE_POLICY, transport),
            ))
        }
    };
    let authorization = match &args.token {
        Some(token) => Some(
            MetadataValue::try_from(format!("Bearer {token}"))
                .context("the token is not a valid header value")?,
        ),
        None => None,
    };
    let call = Call {
        id: args.user_id.clone(),
        authorization,
    };

    let warmup = runtime.block_on(calls(&mut users, &call, args.warmup));
    if let Some(error) = &warmup.first_error {
        anyhow::bail!(
            "{} of {} warm-up calls failed; the first: {error}",
            warmup.failed,
            args.warmup
        );
    }
    let measured = measured_calls(&runtime, &mut users, &call, args.calls);
    println!(
        "bench-client mode={} calls={} failed={}",
        args.mode
            .to_possible_value()
            .map_or("?".into(), |v| v.get_name().to_owned()),
        args.calls,
        measured.failed
    );
    if let Some(error) = &measured.first_error {
        eprintln!("bench-client: the first failed call: {error}");
        return Ok(ExitCode::FAILURE);
    }
    drop(users);
    drop(registry);
    Ok(ExitCode::SUCCESS)
}
