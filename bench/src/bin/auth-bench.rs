//! `auth-bench`: the auth service's part of `cargo xtask bench`.
//!
//! Starts the real `auth-service` binary (release build beside this one) on
//! a fresh store, with its embedded defaults: the configured argon2id cost,
//! HS256 tokens. On 2+ cores with `taskset`, the server is pinned to core 0
//! and this load generator to core 1. Then, over 127.0.0.1:
//!
//! - **Login**: one client, logging in one at a time, `--logins` times: the
//!   time per login is the argon2id verification plus a session insert;
//! - **Refresh**: `--clients` clients, each with its own session, refreshing
//!   as fast as the answers come for `--duration`: each call is a
//!   transaction that spends a token and stores the next one (an `fsync` on
//!   SQLite with `synchronous = FULL`);
//! - **Validate**: `--clients` clients asking about their access token for
//!   `--duration`: a verified-token cache hit plus a session lookup.
//!
//! Every answer is checked (a failed call fails the bench). Prints one line
//! per operation: calls/s and latency percentiles.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use auth_service::auth_v1::auth_service_client::AuthServiceClient;
use auth_service::auth_v1::{GetJwksRequest, LoginRequest, RefreshRequest, ValidateRequest};
use clap::{Parser, ValueEnum};
use keel_rpc::store::{Store, sqlx};
use tonic::transport::Channel;

const ADMIN: &str = "admin";
const PASSWORD: &str = "auth-bench-password";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Parser)]
#[command(about = "Login, Refresh and Validate against a real auth-service")]
struct Args {
    /// The store to run on.
    #[arg(long, value_enum)]
    backend: Backend,
    /// PostgreSQL database (a fresh schema is made in it and dropped after).
    #[arg(long, env = "KEEL_TEST_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// The `auth-service` binary (default: beside this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Concurrent clients for Refresh and Validate.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long Refresh and Validate run each, like `5s`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Logins timed one after the other.
    #[arg(long, default_value_t = 20)]
    logins: usize,
    /// Print a header line first.
    #[arg(long)]
    header: bool,
}

/// Latencies of one operation.
struct Measured {
    calls: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pinned = pin_self_to_core_1();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if pinned { 1 } else { 2 })
        .enable_all()
        .build()?;
    runtime.block_on(run(args, pinned))
}

async fn run(args: Args, pinned: bool) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("keel-auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (url, schema) = match args.backend {
        Backend::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.join("auth.db").display()),
            None,
        ),
        Backend::Postgres => {
            let base = args.postgres_url.clone().context(
                "--postgres-url (or KEEL_TEST_POSTGRES_URL) is required for --backend postgres",
            )?;
            let schema = format!("keel_bench_{}", std::process::id());
            postgres_schema(&base, &schema, true).await?;
            let separator = if base.contains('?') { '&' } else { '?' };
            (
                format!("{base}{separator}options[search_path]={schema}"),
                Some((base, schema)),
            )
        }
    };
    let result = bench(&args, &url, &dir, pinned).await;
    if let Some((base, schema)) = schema {
        postgres_schema(&base, &schema, false).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn bench(args: &Args, url: &str, dir: &Path, pinned: bool) -> anyhow::Result<()> {
    let settings = auth_service::Settings::from_loader(
        &keel_rpc::config::Loader::new()
            .environment(keel_rpc::config::Environment::Development)
            .defaults_toml(auth_service::DEFAULT_CONFIG)
            .development_toml(auth_service::DEVELOPMENT_CONFIG),
    )?;
    let p = &settings.app.passwords;
    let cost = format!(
        "argon2id m={} KiB t={} p={}",
        p.memory_kib, p.iterations, p.parallelism
    );
    let mut server = Server::start(args, url, dir, pinned)?;
    let result = async {
        let channel = server.connect().await?;
        let backend = match args.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        if args.header {
            println!(
                "({})",
                if pinned {
                    "auth-service pinned to core 0, the clients to core 1"
                } else {
                    "not pinned: needs 2 cores and taskset"
                }
            );
            println!(
                "{:<9} {:<9} {:>7} {:>10} {:>9} {:>9} {:>9}  notes",
                "backend", "operation", "clients", "calls/s", "p50 ms", "p90 ms", "p99 ms"
            );
        }
        let mut login = logins(&channel, args.logins).await?;
        let line = |name: &str, clients: usize, m: &mut Measured, note: &str| {
            let (p50, p90, p99) = (m.percentile(0.5), m.percentile(0.9), m.percentile(0.99));
            println!(
                "{backend:<9} {name:<9} {clients:>7} {:>10.0} {:>9.2} {:>9.2} {:>9.2}  {note}",
                m.per_second(),
                ms(p50),
                ms(p90),
                ms(p99),
            );
        };
        line("Login", 1, &mut login, &cost);
        let mut refresh = refreshes(&channel, args.clients, args.duration).await?;
        let note = format!("{} rotations", refresh.calls);
        line("Refresh", args.clients, &mut refresh, &note);
        let mut validate = validations(&channel, args.clients, args.duration).await?;
        let note = format!("{} calls", validate.calls);
        line("Validate", args.clients, &mut validate, &note);
        anyhow::Ok(())
    }
    .await;
    server.stop();
    result
}

async fn client(channel: &Channel) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(channel.clone())
}

async fn login(client: &mut AuthServiceClient<Channel>) -> anyhow::Result<(String, String)> {
    let reply = client
        .login(LoginRequest {
            username: ADMIN.into(),
            password: PASSWORD.into(),
        })
        .await
        .context("Login")?
        .into_inner();
    Ok((reply.access_token, reply.refresh_token))
}

async fn logins(channel: &Channel, count: usize) -> anyhow::Result<Measured> {
    let mut client = client(channel).await;
    login(&mut client).await?; // warm-up
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        login(&mut client).await?;
        latencies.push(t.elapsed());
    }
    Ok(Measured {
        calls: count,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// Runs `clients` workers until `duration` has passed, each calling `op` in
/// a loop on its own state.
async fn load<S, F, Fut>(
    channel: &Channel,
    clients: usize,
    duration: Duration,
    setup: impl Fn(AuthServiceClient<Channel>) -> S,
    op: F,
) -> anyhow::Result<Measured>
where
    S: std::future::Future<Output = anyhow::Result<(AuthServiceClient<Channel>, String)>>,
    F: Fn(AuthServiceClient<Channel>, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<(AuthServiceClient<Channel>, String)>> + Send,
{
    let mut states = Vec::with_capacity(clients);
    for _ in 0..clients {
        states.push(setup(client(channel).await).await?);
    }
    let op = Arc::new(op);
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let workers: Vec<_> = states
        .into_iter()
        .map(|(client, state)| {
            let op = op.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut client, mut state) = (client, state);
                barrier.wait().await;
                let deadline = Instant::now() + duration;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    (client, state) = op(client, state).await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    Ok(Measured {
        calls: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    })
}

async fn refreshes(
    channel: &Channel,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    load(
        channel,
        clients,
        duration,
        |mut client| async move {
            let (_, refresh) = login(&mut client).await?;
            Ok((client, refresh))
        },
        |mut client, refresh_token| async move {
            let reply = client
                .refresh(RefreshRequest {
                    refresh_token,
                    ..Default::default()
                })
                .await
                .context("Refresh")?
                .into_inner();
            Ok((client, reply.refresh_token))
        },
    )
    .await
}

async fn validations(
    channel: &Channel,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    load(
        channel,
        clients,
        duration,
        |mut client| async move {
            let (access, _) = login(&mut client).await?;
            Ok((client, access))
        },
        |mut client, access_token| async move {
            let reply = client
                .validate(ValidateRequest {
                    access_token: access_token.clone(),
                })
                .await
                .context("Validate")?
                .into_inner();
            ensure!(reply.valid, "Validate said invalid: {}", reply.reason);
            Ok((client, access_token))
        },
    )
    .await
}

/// The `auth-service` child process.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(args: &Args, url: &str, dir: &Path, pinned: bool) -> anyhow::Result<Server> {
        let binary = match &args.server {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("the directory of auth-bench")?
                .join("auth-service"),
        };
        ensure!(
            binary.is_file(),
            "{} not found: build it with `cargo build --release -p auth-service`",
            binary.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join("auth-service.log");
        let mut command = if pinned {
            let mut command = Command::new("taskset");
            command.args(["-c", "0"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        for (key, _) in std::env::vars_os() {
            if key
                .to_string_lossy()
                .to_ascii_uppercase()
                .starts_with("KEEL_")
            {
                command.env_remove(key);
            }
        }
        command
            .current_dir(dir)
            .env("KEEL_SERVER__ADDR", addr.to_string())
            .env("KEEL_METRICS__ENABLED", "false")
            .env("KEEL_STORE__URL", url)
            .env("KEEL_STORE__MAX_CONNECTIONS", "16")
            .env("KEEL_BOOTSTRAP__ADMIN_PASSWORD", PASSWORD)
            // A bench, not a deployment: the development signing key.
            .env("KEEL_SERVICE__ENVIRONMENT", "development")
            .env("KEEL_TELEMETRY__LOG_FILTER", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Server { child, addr, log })
    }

    async fn connect(&mut self) -> anyhow::Result<Channel> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "auth-service exited with {status}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
                    .timeout(Duration::from_secs(30));
            if let Ok(channel) = endpoint.connect().await {
                let mut client = AuthServiceClient::new(channel.clone());
                if client.get_jwks(GetJwksRequest {}).await.is_ok() {
                    return Ok(channel);
                }
            }
            ensure!(Instant::now() < deadline, "auth-service did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates (or drops) the bench's schema.
async fn postgres_schema(base: &str, schema: &str, create: bool) -> anyhow::Result<()> {
    let store = Store::connect_url(base)
        .await
        .with_context(|| format!("connecting to {base}"))?;
    let statements = if create {
        vec![
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            format!("CREATE SCHEMA {schema}"),
        ]
    } else {
        vec![format!("DROP SCHEMA IF EXISTS {schema} CASCADE")]
    };
    for statement in statements {
        keel_rpc::with_store!(&store, pool => {
            sqlx::query(sqlx::AssertSqlSafe(statement)).execute(pool).await?;
        });
    }
    store.close().await;
    Ok(())
}

/// Pins this process to core 1 when there are two cores and `taskset`.
fn pin_self_to_core_1() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return false;
    }
    Command::new("taskset")
        .args(["-p", "-c", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
