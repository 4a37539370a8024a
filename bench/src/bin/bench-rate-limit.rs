//! `bench-rate-limit`: what a rate-limited call's wait costs with its bucket
//! in Redis (`[rate_limit] backend`) against the process's own bucket, for
//! `cargo xtask bench --rate-limit`.
//!
//! One method with a global `rate_limit` high enough to admit every call is
//! wrapped by Keel's pipeline twice: with in-process buckets, and with its
//! bucket in a `redis-server` of the bench's own on 127.0.0.1 (one GCRA
//! script call per call). Each pipeline answers `--calls` calls one at a
//! time, after `--warmup` more, on a `current_thread` runtime; every call
//! must be admitted. Beside them, the same number of Redis `PING`s over one
//! connection give the local round trip the Redis mode is expected to add,
//! and as many through the redis crate's `ConnectionManager` (the buckets'
//! client) what that client adds to it.
//! Wall-clock latencies: the figures move with the machine's load, so they
//! are reported, never asserted.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, RateKey, RateLimit, ServicePolicy};
use keel_rpc::config::{AuthConfig, Config, OnBackendError, Secret};
use keel_rpc::testing::TestRedis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

#[derive(Parser)]
#[command(about = "Rate-limited calls with Redis buckets vs in-process ones")]
struct Args {
    /// Calls timed per mode.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Calls made first, not timed.
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
}

static POLICY: ServicePolicy = ServicePolicy {
    name: "bench.v1.Limited",
    methods: &[MethodPolicy {
        // Far above what one caller can reach: every call is admitted, and
        // each one consults the bucket.
        rate_limit: Some(RateLimit {
            per_second: 1e9,
            burst: 1_000_000_000,
            key: RateKey::Global,
        }),
        ..MethodPolicy::new(
            "Call",
            "/bench.v1.Limited/Call",
            MethodKind::Unary,
            Access::Public,
        )
    }],
    route: |path| (path == "/bench.v1.Limited/Call").then_some(0),
};

type Counted = keel_rpc::pipeline::CountingBody<tonic::body::Body>;
type Answer = std::future::Ready<Result<http::Response<tonic::body::Body>, Infallible>>;
type Limited = keel_rpc::Pipeline<tower::util::ServiceFn<fn(http::Request<Counted>) -> Answer>>;

fn ok(_: http::Request<Counted>) -> Answer {
    let response = http::Response::builder()
        .header("grpc-status", "0")
        .body(tonic::body::Body::empty())
        .expect("a static response");
    std::future::ready(Ok(response))
}

/// The pipeline of `POLICY`, with its bucket in `backend` if given.
fn pipeline(backend: Option<String>) -> anyhow::Result<(keel_rpc::Keel, Limited)> {
    let mut config = Config::<()> {
        auth: AuthConfig {
            hmac_secret: Some(Secret::new("bench-rate-limit-0123456789abcdef0123")),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    config.rate_limit.backend = backend;
    // A bench call that Redis cannot answer fails the run, not falls back.
    config.rate_limit.on_backend_error = OnBackendError::Deny;
    let keel = keel_rpc::Keel::new(&config, &[&POLICY])?;
    let handler: fn(_) -> _ = ok;
    let service = keel.wrap(&POLICY, tower::service_fn(handler))?;
    Ok((keel, service))
}

/// `n` calls one at a time: each one's latency.
async fn calls(service: &Limited, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let request = http::Request::post("/bench.v1.Limited/Call")
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::empty())?;
        let started = Instant::now();
        let response = service.clone().oneshot(request).await?;
        latencies.push(started.elapsed());
        let status = response.headers().get("grpc-status");
        if status.is_none_or(|s| s != "0") {
            bail!("a call was not admitted: grpc-status {status:?}");
        }
    }
    Ok(latencies)
}

/// `n` `PING`s over one connection to `redis`: each round trip.
async fn pings(redis: &TestRedis, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut stream = tokio::net::TcpStream::connect(redis.addr()).await?;
    stream.set_nodelay(true)?;
    let mut answer = [0; 7];
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        stream.write_all(b"PING\r\n").await?;
        stream.read_exact(&mut answer).await?;
        latencies.push(started.elapsed());
        if &answer != b"+PONG\r\n" {
            bail!("redis answered {answer:?} to PING");
        }
    }
    Ok(latencies)
}

/// `n` `PING`s through the redis crate's `ConnectionManager`, the client
/// the Redis buckets use: the round trip plus the client's own hops.
async fn manager_pings(redis: &TestRedis, n: usize) -> anyhow::Result<Vec<Duration>> {
    let client = redis::Client::open(redis.url())?;
    let mut connection = client.get_connection_manager().await?;
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let answer: String = redis::cmd("PING").query_async(&mut connection).await?;
        latencies.push(started.elapsed());
        if answer != "PONG" {
            bail!("redis answered {answer:?} to PING");
        }
    }
    Ok(latencies)
}

/// `p50 p90 p99 mean` in microseconds.
fn summary(latencies: &mut [Duration]) -> [f64; 4] {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    let mean = latencies.iter().sum::<Duration>().as_secs_f64() * 1e6 / latencies.len() as f64;
    [at(0.5), at(0.9), at(0.99), mean]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.calls > 0, "--calls must be at least 1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async {
        let redis = TestRedis::start().await?;
        let (_local_keel, local) = pipeline(None)?;
        let (_redis_keel, shared) = pipeline(Some(redis.url()))?;
        let mut rows = Vec::new();
        for (name, service) in [("in-process", &local), ("redis", &shared)] {
            calls(service, args.warmup).await?;
            rows.push((name, summary(&mut calls(service, args.calls).await?)));
        }
        pings(&redis, args.warmup).await?;
        rows.push(("redis PING", summary(&mut pings(&redis, args.calls).await?)));
        manager_pings(&redis, args.warmup).await?;
        let managed = summary(&mut manager_pings(&redis, args.calls).await?);
        rows.push(("client PING", managed));
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>9}   (µs, {} each, one at a time)",
            "", "p50", "p90", "p99", "mean", args.calls
        );
        for (name, [p50, p90, p99, mean]) in &rows {
            println!("{name:<12} {p50:>9.1} {p90:>9.1} {p99:>9.1} {mean:>9.1}");
        }
        let (local, redis_mode, ping) = (rows[0].1, rows[1].1, rows[2].1);
        println!(
            "added by Redis: p50 {:+.1} µs, mean {:+.1} µs; a PING round trip: p50 {:.1} µs, mean \
             {:.1} µs",
            redis_mode[0] - local[0],
            redis_mode[3] - local[3],
            ping[0],
            ping[3]
        );
        Ok(())
    })
}
