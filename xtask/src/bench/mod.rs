//! `cargo xtask bench [--quick] [--no-criterion] [--rounds N] [--requests N]
//! [--handler fixed|users|both] [--traced [--sampling R]] [--instructions]
//! | --client [--requests N] | --rate-limit [--requests N]`:
//! what a Keel service costs per call against plain tonic, end to end, as
//! ratios measured in the same run; with `--client`, what Keel's client
//! costs the caller.
//!
//! 1. Builds `bench-server` (release) and starts it twice, one process per
//!    mode (`bench/src/bin/bench-server.rs`): `plain`, plain
//!    tonic serving the generated `UserServiceServer` with a `warn` fmt
//!    subscriber; and `keel`, the service as README's "Serving" section
//!    builds it (`telemetry::init`, `Keel::server` with health, reflection,
//!    `/metrics` and the drain, default configuration but for the
//!    addresses and the development key), with the same handler and proto.
//! 2. Installs h2load (`apt-get install nghttp2-client`) when it is missing.
//! 3. For each handler (`fixed`: the user from memory, so Keel's share of a
//!    cheap call shows; `users`: the real `Users` handler and its SQLite
//!    store), pins the servers to core 0 and h2load to core 1, and runs
//!    alternating rounds (odd rounds plain first, even rounds keel first):
//!    one warm-up round each, then `--rounds` measured rounds each. Both
//!    modes get the identical request: gRPC headers, the same bearer token
//!    and the same body (the two processes' bodies are checked equal).
//! 4. Per round it records h2load's requests/s and the server's CPU time
//!    (sum of `/proc/<pid>/task/*/schedstat`), and verifies against the
//!    server's own counters that every response h2load counted as succeeded
//!    was a successful `GetUser` (h2load counts any HTTP 200, whatever the
//!    `grpc-status`); for keel, Keel's `grpc_server_handled_total{grpc_code="OK"}`
//!    must agree too. Any failed request or mismatch fails the bench. It also
//!    reads how much of each core other processes used (`/proc/stat` minus
//!    the server's and h2load's own time) and repeats a round that others
//!    disturbed.
//! 5. Prints per-mode medians and, paired per round, the keel/plain ratios
//!    of throughput and of CPU per request: their medians over the rounds
//!    with a 95% confidence interval (distribution-free: order statistics),
//!    and each process's peak resident memory. A verdict against a target is
//!    PASS when the whole interval meets it, MISS when none of it does, and
//!    UNDECIDED when the target lies inside (too noisy a machine for that
//!    many rounds). A miss is reported, not an error: only a failed
//!    verification exits non-zero.
//! 6. Runs the criterion micro-benchmarks (`cargo bench -p keel-rpc --bench
//!    pipeline`), unless `--quick` or `--no-criterion`.
//!
//! Targets, against plain tonic in the same run, at the default
//! configuration: instructions per call ≤ 1.05× (≤ 1.08× with `--traced`),
//! throughput ≥ 0.95× (≥ 0.93× traced), peak RSS ≤ 1.2×; with `--client`,
//! a balanced Keel client's instructions per call ≤ 1.05× a tonic `Channel`'s.
//!
//! `--quick` is a smoke run (few requests, no criterion); its figures are
//! not meaningful.
//!
//! `--traced` runs keel with telemetry exporting: sampling ratio 1%
//! (`--sampling R` to change it) and an OTLP/gRPC exporter (batch span
//! processor) pointed at a trace sink, `bench-server --otlp-sink`, a third
//! process pinned to h2load's core (as a collector would run elsewhere) that
//! counts the spans it receives. So keel then pays, on the server's core, for
//! the server span of every call (ids, sampling decision, context), the
//! recording of the sampled ones and their batched encoding and export. After
//! the rounds it checks that the sink received about `R` of the keel calls
//! as spans.
//!
//! `--instructions` counts instead of timing: each server runs under
//! callgrind (valgrind, installed when missing) with its cache and branch
//! predictor simulation, and after a warm-up each mode gets one run of
//! 20 000 calls between `callgrind_control --zero` and `--dump`, the servers
//! answering with a constant `date` header (`bench-server --fixed-date`:
//! hyper's changing one adds an HPACK table entry per second, so the cost
//! of a response grew with a run's wall time). It prints per call, for each
//! mode and Keel's difference: instructions, first-level instruction and
//! data cache misses, last-level misses, branch mispredictions, and
//! KCachegrind's cycle estimate from them. Instruction counts move by well
//! under 1% between runs where CPU time on a shared VM moves by tens of
//! percent, so they are the headline figure. Combines with `--traced` and
//! `--handler`.
//!
//! `--client` counts the calling side instead (and only that): one plain
//! bench-server (`--handler fixed`, a constant `date` header), pinned to
//! core 0 and not counted, answers `GetUser` to `bench-client`
//! (`bench/src/bin/bench-client.rs`), which runs three times under callgrind
//! (cache and branch simulation), pinned to core 1: `plain`, the generated
//! client over a tonic `Channel`; `keel`, over `client.wrap(&POLICY,
//! client.connect(url))`; `balanced`, over `client.wrap(&POLICY,
//! client.balance(name, [endpoint]))`, p2c over one replica. Each run makes
//! 2 000 warm-up calls, then 20 000 (`--requests N`) one at a time inside
//! bench-client's `measured_calls`, the only code callgrind collects in
//! (`--collect-atstart=no --toggle-collect='*measured_calls*'`); the client's
//! tokio runtime is `current_thread`, so every task a call wakes (tonic's
//! buffer worker, hyper's connection, the balancer's buffer) runs in that
//! window on the one thread counted. Every call must answer OK with the
//! user (bench-client's own check and the server's `/counts`). It prints
//! per call, for each mode, what `--instructions` prints, the ratios
//! keel/plain, balanced/plain and balanced/keel, and the verdict of
//! balanced/plain against its target.
//!
//! `--rate-limit` times what a rate-limited call waits for its bucket in
//! Redis against the process's own: `bench-rate-limit`
//! (`bench/src/bin/bench-rate-limit.rs`) wraps one method with a `rate_limit`
//! high enough to admit every call in Keel's pipeline twice (in-process
//! buckets; `[rate_limit] backend` on a `redis-server` of its own), makes
//! 20 000 (`--requests N`) calls one at a time through each, and as many
//! Redis `PING`s, and prints their latency percentiles: Redis should add
//! about one `PING`. Wall-clock figures, reported and never judged.

mod callgrind;
mod client;
mod h2load;
mod machine;
mod server;
mod stats;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};

use callgrind::{count_events, count_keel_only, print_counted};
use h2load::{H2loadReport, ensure_h2load};
use machine::{
    CoreTimes, Pinning, children_cpu_ticks, clk_tck, core_times, cpu_time_ns, peak_rss_kib,
    print_machine,
};
use server::{Server, Sink, check_exported_spans};
use stats::{Paired, median};

/// Target: keel throughput at least this fraction of plain.
const TARGET_RATIO: f64 = 0.95;
/// Target with `--traced`: keel with telemetry on (sampling 1%, exporting)
/// at least this fraction of plain.
const TARGET_RATIO_TRACED: f64 = 0.93;
/// Target: keel's instructions per call at most this multiple of plain's.
const TARGET_INSTRUCTIONS: f64 = 1.05;
/// Keel's REST `GetUser` against its gRPC `GetUser`, instructions per call
/// (issue 22: transcoding may cost up to half a gRPC call more).
const TARGET_REST: f64 = 1.5;
/// Target with `--traced`.
const TARGET_INSTRUCTIONS_TRACED: f64 = 1.08;
/// Target: keel's peak resident memory at most this multiple of plain's.
const TARGET_RSS: f64 = 1.2;
/// Sampling ratio of `--traced` unless `--sampling` says otherwise.
const TRACED_SAMPLING: f64 = 0.01;

/// A run is disturbed when other work took more than this share of a core.
const MAX_OTHER: f64 = 0.05;
/// How many times a disturbed round is repeated before it is kept anyway (flagged).
const MAX_REPEATS: usize = 3;

/// Which call h2load makes, and how many at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// `GetUser`, unary: 16 connections × 32 streams.
    Unary,
    /// `ExportUsers`, server streaming (ten messages per call with the
    /// `fixed` handler): 100 streams at once, 10 connections × 10.
    Stream,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Unary => "unary",
            Case::Stream => "stream",
        }
    }

    /// The method's name, as `grpc_method` labels it.
    fn method(self) -> &'static str {
        match self {
            Case::Unary => "GetUser",
            Case::Stream => "ExportUsers",
        }
    }

    fn path(self) -> String {
        format!("/user.v1.UserService/{}", self.method())
    }

    /// The prefix of its counters on bench-server's `/counts`.
    fn counter(self, outcome: &str) -> String {
        match self {
            Case::Unary => outcome.to_owned(),
            Case::Stream => format!("export_{outcome}"),
        }
    }

    /// h2load's connections and streams per connection.
    fn shape(self, options: &Options) -> (u32, u32) {
        match self {
            Case::Unary => (options.clients, options.streams),
            Case::Stream => (10, 10),
        }
    }

    /// Calls per round relative to `--requests`: a streaming call carries
    /// ten messages.
    fn divisor(self) -> u64 {
        match self {
            Case::Unary => 1,
            Case::Stream => 5,
        }
    }
}

struct Options {
    rounds: usize,
    requests: u64,
    warmup_requests: u64,
    clients: u32,
    streams: u32,
    criterion: bool,
    quick: bool,
    handlers: Vec<Handler>,
    cases: Vec<Case>,
    /// `--traced`: the sampling ratio of Keel's telemetry in bench-server.
    traced: Option<f64>,
    /// `--instructions`: count instructions with callgrind instead of timing.
    instructions: bool,
    /// `--rest` (with `--instructions`): also count Keel's REST `GetUser`
    /// (`GET /v1/users/{id}` over HTTP/1.1) against its gRPC `GetUser`.
    rest: bool,
    /// `--client`: count the calling side (bench-client) instead of the servers.
    client: bool,
    /// `--rate-limit`: time Redis-limited calls against in-process ones.
    rate_limit: bool,
}

/// What answers `GetUser` in the bench server (`bench-server --handler`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handler {
    /// The user cloned from memory: the call is little besides the gRPC
    /// stack, so Keel's share shows.
    Fixed,
    /// `Users::get_user`: a query of the in-memory SQLite store.
    Users,
}

impl Handler {
    fn name(self) -> &'static str {
        match self {
            Handler::Fixed => "fixed",
            Handler::Users => "users",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Handler::Fixed => "GetUser answers the startup user from memory",
            Handler::Users => "GetUser reads the user from Users' store (in-memory SQLite)",
        }
    }

    /// Requests per round relative to `--requests`: the store's handler is
    /// several times slower, so its rounds are shorter in requests but not
    /// in time.
    fn divisor(self) -> u64 {
        match self {
            Handler::Fixed => 1,
            Handler::Users => 4,
        }
    }
}

impl Options {
    fn parse(args: &[&str]) -> anyhow::Result<Self> {
        // Many short rounds rather than a few long ones: a VM's speed drifts
        // (by 2× within minutes on some), the paired figures compare rounds
        // that ran side by side, and their 95% interval narrows with the
        // number of rounds (61: from the 23rd to the 39th of them, sorted).
        let mut options = Options {
            rounds: 61,
            requests: 20_000,
            warmup_requests: 60_000,
            clients: 16,
            streams: 32,
            criterion: true,
            quick: false,
            handlers: vec![Handler::Fixed, Handler::Users],
            cases: vec![Case::Unary, Case::Stream],
            traced: None,
            instructions: false,
            rest: false,
            client: false,
            rate_limit: false,
        };
        let mut rounds = None;
        let mut requests = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .with_context(|| format!("{name} needs a value"))
                    .map(|v| v.to_string())
            };
            match *arg {
                "--quick" => options.quick = true,
                "--traced" => {
                    options.traced.get_or_insert(TRACED_SAMPLING);
                }
                "--sampling" => {
                    let v = value("--sampling")?;
                    let ratio = v
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .with_context(|| format!("--sampling: {v:?} is not a ratio in 0..=1"))?;
                    options.traced = Some(ratio);
                }
                "--no-criterion" => options.criterion = false,
                "--instructions" => options.instructions = true,
                "--rounds" => {
                    let v = value("--rounds")?;
                    rounds =
                        Some(v.parse::<usize>().with_context(|| {
                            format!("--rounds: {v:?} is not a number of rounds")
                        })?);
                }
                "--requests" => {
                    let v = value("--requests")?;
                    requests = Some(v.parse::<u64>().with_context(|| {
                        format!("--requests: {v:?} is not a number of requests")
                    })?);
                }
                "--rest" => options.rest = true,
                "--client" => options.client = true,
                "--rate-limit" => options.rate_limit = true,
                "--case" => {
                    options.cases = match value("--case")?.as_str() {
                        "unary" => vec![Case::Unary],
                        "stream" => vec![Case::Stream],
                        "both" => vec![Case::Unary, Case::Stream],
                        other => bail!("--case: {other:?} is not unary, stream or both"),
                    };
                }
                "--handler" => {
                    options.handlers = match value("--handler")?.as_str() {
                        "fixed" => vec![Handler::Fixed],
                        "users" => vec![Handler::Users],
                        "both" => vec![Handler::Fixed, Handler::Users],
                        other => bail!("--handler: {other:?} is not fixed, users or both"),
                    };
                }
                other => bail!(
                    "bench: unknown argument {other:?}; usage: cargo xtask bench [--quick] \
                     [--no-criterion] [--rounds N] [--requests N] [--handler fixed|users|both] \
                     [--case unary|stream|both] [--traced [--sampling R]] [--instructions [--rest]] \
                     | cargo xtask bench --client [--requests N] \
                     | cargo xtask bench --rate-limit [--requests N]"
                ),
            }
        }
        if options.quick {
            options.rounds = 3;
            options.requests = 10_000;
            options.warmup_requests = 5_000;
            options.criterion = false;
        }
        if options.instructions || options.client || options.rate_limit {
            // Counts do not drift: one run per mode, short because
            // callgrind, simulating caches, runs a process some 100 times
            // slower (`--rate-limit`, timed, is one pass as well).
            options.rounds = 1;
            options.requests = 20_000;
            options.warmup_requests = 2_000;
            options.criterion = false;
        }
        if let Some(rounds) = rounds {
            ensure!(rounds >= 1, "--rounds must be at least 1");
            options.rounds = rounds;
        }
        if let Some(requests) = requests {
            let min = u64::from(options.clients);
            ensure!(requests >= min, "--requests must be at least {min}");
            options.requests = requests;
            options.warmup_requests = options.warmup_requests.min(requests);
        }
        Ok(options)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Plain,
    Keel,
}

impl Mode {
    const BOTH: [Mode; 2] = [Mode::Plain, Mode::Keel];

    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Keel => "keel",
        }
    }
}

/// What one h2load run against one mode measured.
#[derive(Debug)]
struct Sample {
    mode: Mode,
    req_per_s: f64,
    cpu_us_per_req: f64,
    /// Server CPU time / wall time of the run.
    server_busy: f64,
    /// Other work on the server's core (not the server) / wall time.
    core_other: f64,
    /// Hypervisor steal on the server's core / wall time.
    core_steal: f64,
    /// h2load's CPU time / wall time.
    client_busy: f64,
    /// Other work on h2load's core (not h2load) / wall time.
    client_other: f64,
}

impl Sample {
    /// Whether other processes (or the hypervisor) took a noticeable share
    /// of either core during the run. NaN (unpinned) is never disturbed.
    fn disturbed(&self) -> bool {
        self.core_other > MAX_OTHER || self.client_other > MAX_OTHER || self.core_steal > MAX_OTHER
    }

    fn print(&self, label: &str, note: &str) {
        println!(
            "{:<6} {:<6} {:>9.0} {:>11.2} {:>12.0}% {:>11.0}% {:>11.1}% {:>11.1}% {:>7.1}% {note}",
            label,
            self.mode.name(),
            self.req_per_s,
            self.cpu_us_per_req,
            self.server_busy * 100.0,
            self.client_busy * 100.0,
            self.core_other * 100.0,
            self.client_other * 100.0,
            self.core_steal * 100.0,
        );
    }
}

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    let options = Options::parse(args)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if options.client {
        return client::run(&options, &cargo);
    }
    if options.rate_limit {
        return rate_limit(&options, &cargo);
    }

    build(&cargo, &["bench-server"])?;
    ensure_h2load()?;
    if options.instructions {
        crate::ensure_tool("valgrind", "valgrind")?;
    }

    let target = crate::target_dir();
    let server_bin = target.join("release").join("bench-server");
    let work = target.join("bench");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let body_file = work.join("get-user.body");
    let stream_body_file = work.join("export-users.body");

    let pinning = Pinning::detect();
    print_machine(&pinning);

    let clk_tck = clk_tck();
    println!(
        "\nh2load: -c {} -m {} -t 1; {} measured rounds per mode (plus one warm-up), \
         alternating plain/keel",
        options.clients, options.streams, options.rounds
    );
    println!(
        "(\"other\": time other processes used on the server's core 0 and h2load's core 1; a \
         round in which other work or steal exceeds {:.0}% of a core is repeated, up to {} times)",
        MAX_OTHER * 100.0,
        if options.quick { 0 } else { MAX_REPEATS }
    );
    for &handler in &options.handlers {
        // `--traced`: a trace sink in its own process, on h2load's core, like
        // a collector elsewhere; keel exports to it.
        let sink = match options.traced {
            Some(ratio) => Some((Sink::start(&server_bin, &pinning)?, ratio)),
            None => None,
        };
        let traced = sink
            .as_ref()
            .map(|(sink, ratio)| (*ratio, format!("http://{}", sink.otlp)));
        let callgrind_out = Mode::BOTH
            .map(|mode| work.join(format!("callgrind-{}-{}.out", handler.name(), mode.name())));
        let start = |mode: Mode| {
            Server::start(
                &server_bin,
                mode,
                handler,
                &work,
                &pinning,
                traced.as_ref().filter(|_| mode == Mode::Keel),
                options
                    .instructions
                    .then_some(callgrind_out[mode as usize].as_path()),
            )
        };
        let plain = start(Mode::Plain)?;
        let keel = start(Mode::Keel)?;
        ensure!(
            plain.body == keel.body,
            "the two servers framed different GetUser requests"
        );
        std::fs::write(&body_file, &keel.body)
            .with_context(|| format!("writing {}", body_file.display()))?;
        // `ExportUsersRequest {}`: an empty message, framed.
        std::fs::write(&stream_body_file, [0u8; 5])
            .with_context(|| format!("writing {}", stream_body_file.display()))?;
        println!("\n== handler `{}`: {}", handler.name(), handler.describe());
        if let Some(ratio) = options.traced {
            println!(
                "--traced: keel runs with telemetry exporting: sampling ratio {ratio}, spans \
                 batched and exported over OTLP/gRPC to the sink (plain is unchanged)"
            );
        }
        let mut unary_keel = None;
        for (dump, &case) in options.cases.iter().enumerate() {
            let divisor = handler.divisor() * case.divisor();
            let min = u64::from(case.shape(&options).0);
            let requests = (options.requests / divisor).max(min);
            let warmup = (options.warmup_requests / divisor).max(min);
            let (connections, streams) = case.shape(&options);
            println!(
                "\n-- {} ({}): {requests} calls per round, warm-up {warmup}; h2load -c \
                 {connections} -m {streams}",
                case.name(),
                case.method()
            );
            let load = Load {
                servers: [&plain, &keel],
                options: &options,
                case,
                token: &keel.token,
                body_file: match case {
                    Case::Unary => &body_file,
                    Case::Stream => &stream_body_file,
                },
                rest: None,
                pinning: &pinning,
                clk_tck,
            };
            if options.instructions {
                let outs = callgrind_out.each_ref().map(|p| p.as_path());
                let (plain_counted, keel_counted) =
                    count_events(&load, requests, warmup, outs, dump + 1)?;
                let target = match options.traced {
                    Some(_) => TARGET_INSTRUCTIONS_TRACED,
                    None => TARGET_INSTRUCTIONS,
                };
                print_counted(&plain_counted, &keel_counted, requests, target);
                if options.rest && case == Case::Unary {
                    // After the other cases: the Keel server's dumps are numbered.
                    unary_keel = Some((keel_counted, requests, warmup));
                }
                continue;
            }
            let rounds = run_rounds(&load, requests, warmup)?;
            if let Some((sink, ratio)) = &sink {
                let keel_calls = keel.counts()?.get(&case.counter("ok")).copied();
                check_exported_spans(sink, *ratio, keel_calls.unwrap_or(0))?;
            }
            summarize(&rounds.samples, options.quick, options.traced);
            if rounds.repeated > 0 || rounds.kept_disturbed > 0 {
                println!(
                    "note: {} round(s) repeated because other work used the cores; \
                     {} measured round(s) still disturbed (kept, marked above)",
                    rounds.repeated, rounds.kept_disturbed
                );
            }
        }
        if let Some((grpc, requests, warmup)) = unary_keel.take() {
            let path = format!("/v1/users/{}", user_id(&keel.body)?);
            println!("\n-- REST GetUser (GET {path}, HTTP/1.1): {requests} calls, keel only");
            let load = Load {
                servers: [&plain, &keel],
                options: &options,
                case: Case::Unary,
                token: &keel.token,
                body_file: &body_file,
                rest: Some(&path),
                pinning: &pinning,
                clk_tck,
            };
            let out = callgrind_out[Mode::Keel as usize].as_path();
            let counted = count_keel_only(&load, requests, warmup, out, options.cases.len() + 1)?;
            print_rest(&grpc, &counted, requests);
        }
        if !options.instructions {
            let rss = [peak_rss_kib(plain.pid())?, peak_rss_kib(keel.pid())?];
            let ratio = rss[1] as f64 / rss[0] as f64;
            println!(
                "\npeak RSS over the handler's runs: plain {:.1} MB, keel {:.1} MB: \
                 {ratio:.3}x   target <= {TARGET_RSS}x: {}",
                rss[0] as f64 / 1024.0,
                rss[1] as f64 / 1024.0,
                if ratio <= TARGET_RSS { "PASS" } else { "MISS" }
            );
        }
        drop((plain, keel));
        drop(sink);
    }

    if options.criterion {
        println!("\ncriterion micro-benchmarks (cargo bench -p keel-rpc --bench pipeline):");
        crate::run_cmd(
            Command::new(&cargo).args(["bench", "-p", "keel-rpc", "--bench", "pipeline"]),
        )?;
    }
    if options.traced.is_some() || options.instructions {
        // `--traced` and `--instructions` are about the serving path, not the auth service.
        return Ok(());
    }
    println!("\nauth service (cargo xtask bench-auth):");
    crate::bench_auth::run(if options.quick { &["--quick"] } else { &[] })
}

/// The id in a gRPC-framed `GetUserRequest` (field 1, a short string).
fn user_id(framed: &[u8]) -> anyhow::Result<String> {
    match framed {
        [_, _, _, _, _, 0x0a, len, id @ ..] if id.len() == usize::from(*len) => {
            Ok(String::from_utf8(id.to_vec())?)
        }
        _ => bail!("the GetUser request is not one short id: {framed:?}"),
    }
}

/// Keel's REST `GetUser` against its gRPC `GetUser`, per call.
fn print_rest(grpc: &callgrind::Counted, rest: &callgrind::Counted, requests: u64) {
    let per_call =
        |c: &callgrind::Counted| c.sum(callgrind::Counted::INSTRUCTIONS) / requests as f64;
    let ratio = per_call(rest) / per_call(grpc);
    let verdict = if ratio <= TARGET_REST { "PASS" } else { "MISS" };
    println!(
        "keel REST GetUser (GET /v1/users/{{id}}, HTTP/1.1): {:.0} instructions per call, \
         keel gRPC GetUser {:.0}: {ratio:.3}x   target <= {TARGET_REST}x: {verdict}",
        per_call(rest),
        per_call(grpc)
    );
}

/// The measured rounds against one pair of servers.
struct Rounds {
    samples: Vec<Sample>,
    repeated: usize,
    kept_disturbed: usize,
}

/// What every h2load run needs.
struct Load<'a> {
    /// The server of each mode, in [`Mode::BOTH`]'s order.
    servers: [&'a Server; 2],
    options: &'a Options,
    case: Case,
    /// The bearer token sent with every request.
    token: &'a str,
    /// The gRPC-framed request h2load sends.
    body_file: &'a std::path::Path,
    /// Instead of the gRPC call: this REST path, over HTTP/1.1 (Keel only).
    rest: Option<&'a str>,
    pinning: &'a Pinning,
    /// Clock ticks per second of `/proc/stat`.
    clk_tck: u64,
}

impl Load<'_> {
    fn server(&self, mode: Mode) -> &Server {
        self.servers[mode as usize]
    }
}

/// A warm-up round, then `options.rounds` measured ones, each running both
/// modes back to back (the order alternates); a round disturbed by other work is repeated (up to [`MAX_REPEATS`]).
fn run_rounds(load: &Load, requests: u64, warmup: u64) -> anyhow::Result<Rounds> {
    let options = load.options;
    println!(
        "\n{:<6} {:<6} {:>9} {:>11} {:>13} {:>12} {:>12} {:>12} {:>8}",
        "round",
        "mode",
        "req/s",
        "CPU µs/req",
        "server busy",
        "h2load busy",
        "core0 other",
        "core1 other",
        "steal"
    );
    let mut rounds = Rounds {
        samples: Vec::new(),
        repeated: 0,
        kept_disturbed: 0,
    };
    for round in 0..=options.rounds {
        let (label, requests) = if round == 0 {
            ("warm".to_string(), warmup)
        } else {
            (round.to_string(), requests)
        };
        let repeats = if round == 0 || options.quick {
            0
        } else {
            MAX_REPEATS
        };
        for attempt in 0..=repeats {
            // Odd rounds run plain first, even rounds keel first, so that
            // neither mode always follows the other (cache and allocator
            // state, frequency changes, a neighbour's load).
            let order = if round % 2 == 1 {
                [Mode::Plain, Mode::Keel]
            } else {
                [Mode::Keel, Mode::Plain]
            };
            let mut pair = Vec::new();
            for mode in order {
                let sample = measure(load, mode, requests)
                    .with_context(|| format!("round {label}, {}", mode.name()))?;
                pair.push(sample);
            }
            let disturbed = pair.iter().any(Sample::disturbed);
            let last = attempt == repeats;
            let note = match (disturbed, last, round) {
                (false, _, _) => "",
                (true, _, 0) => "(disturbed)",
                (true, false, _) => "(disturbed: repeating)",
                (true, true, _) => "(disturbed: kept)",
            };
            for sample in &pair {
                sample.print(&label, note);
            }
            if !disturbed || last {
                if round > 0 {
                    rounds.kept_disturbed += usize::from(disturbed);
                    rounds.samples.extend(pair);
                }
                break;
            }
            rounds.repeated += 1;
        }
    }
    Ok(rounds)
}

/// One h2load run against `mode`, verified.
#[allow(clippy::too_many_arguments)]
fn measure(load: &Load, mode: Mode, requests: u64) -> anyhow::Result<Sample> {
    measure_around(load, mode, requests, &mut |_| Ok(()))
}

/// Where [`measure_around`] is: just before h2load starts, or just after it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edge {
    Start,
    End,
}

/// [`measure`], calling `around` at the edges of the load itself, inside the
/// reads of the counters that verify it (under callgrind: zero, then dump,
/// so that only the calls are counted, not the verification's scrapes).
fn measure_around(
    load: &Load,
    mode: Mode,
    requests: u64,
    around: &mut dyn FnMut(Edge) -> anyhow::Result<()>,
) -> anyhow::Result<Sample> {
    let Load {
        options,
        token,
        body_file,
        pinning,
        clk_tck,
        ..
    } = *load;
    let server = load.server(mode);
    let other = load.server(match mode {
        Mode::Plain => Mode::Keel,
        Mode::Keel => Mode::Plain,
    });
    let addr = server.grpc;
    let counts_before = server.counts()?;
    let other_before = other.counts()?;
    let case = load.case;
    let metrics_before = server.handled_ok(case.method())?;
    let core_before = core_times(pinning.server_core);
    let client_before = core_times(pinning.client_core);
    let cpu_before = cpu_time_ns(server.pid())?;
    let children_before = children_cpu_ticks();
    around(Edge::Start)?;
    let start = Instant::now();

    let mut h2load = pinning.command(pinning.client_core, "h2load");
    h2load
        .args(["-n", &requests.to_string()])
        .args(["-c", &case.shape(options).0.to_string()])
        .args(["-t", "1"])
        .arg("-H")
        .arg(format!("authorization: Bearer {token}"));
    match load.rest {
        // HTTP/1.1, one request at a time per connection.
        Some(path) => h2load
            .args(["--h1", "-m", "1"])
            .arg(format!("http://{addr}{path}")),
        None => h2load
            .args(["-m", &case.shape(options).1.to_string()])
            .args(["-H", "content-type: application/grpc"])
            .args(["-H", "te: trailers"])
            .arg("-d")
            .arg(body_file)
            .arg(format!("http://{addr}{}", case.path())),
    };
    let output = h2load
        .stdin(Stdio::null())
        .output()
        .context("running h2load")?;

    let wall_ns = start.elapsed().as_nanos() as f64;
    around(Edge::End)?;
    let cpu_after = cpu_time_ns(server.pid())?;
    let children_after = children_cpu_ticks();
    let core_after = core_times(pinning.server_core);
    let client_after = core_times(pinning.client_core);
    let counts_after = server.counts()?;
    let other_after = other.counts()?;
    let metrics_after = server.handled_ok(case.method())?;

    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "h2load failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report = H2loadReport::parse(&stdout)
        .with_context(|| format!("parsing h2load's output:\n{stdout}"))?;

    // Verification: every request answered, and every answer a real success.
    let delta = |before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, key: &str| {
        let get = |counts: &BTreeMap<String, u64>| counts.get(key).copied().unwrap_or(0);
        get(after).saturating_sub(get(before))
    };
    let (ok, err) = (case.counter("ok"), case.counter("err"));
    let own_ok = delta(&counts_before, &counts_after, &ok);
    let mut problems = Vec::new();
    if report.succeeded != requests || report.total != requests {
        problems.push(format!(
            "h2load: {} of {requests} requests succeeded ({} total)",
            report.succeeded, report.total
        ));
    }
    if report.failed != 0 || report.errored != 0 || report.timeout != 0 {
        problems.push(format!(
            "h2load: {} failed, {} errored, {} timed out",
            report.failed, report.errored, report.timeout
        ));
    }
    if report.status_2xx != report.succeeded {
        problems.push(format!(
            "h2load: {} succeeded but {} HTTP 2xx",
            report.succeeded, report.status_2xx
        ));
    }
    if own_ok != report.succeeded {
        problems.push(format!(
            "h2load counted {} successes, but the {} handler answered {own_ok} {} calls OK \
             (and {} with an error)",
            report.succeeded,
            mode.name(),
            case.method(),
            delta(&counts_before, &counts_after, &err),
        ));
    }
    let moved = [
        (mode, &err, delta(&counts_before, &counts_after, &err)),
        (other.mode, &ok, delta(&other_before, &other_after, &ok)),
        (other.mode, &err, delta(&other_before, &other_after, &err)),
    ];
    for (mode, key, moved) in moved {
        if moved != 0 {
            problems.push(format!(
                "{} server counter {key} moved by {moved}",
                mode.name()
            ));
        }
    }
    if let (Some(before), Some(after)) = (metrics_before, metrics_after)
        && after.saturating_sub(before) != report.succeeded
    {
        problems.push(format!(
            "keel metrics counted {} OK {} calls, h2load {} successes",
            after.saturating_sub(before),
            case.method(),
            report.succeeded
        ));
    }
    if !problems.is_empty() {
        bail!(
            "verification failed:\n  {}\nh2load output:\n{stdout}",
            problems.join("\n  ")
        );
    }

    let cpu_ns = cpu_after.saturating_sub(cpu_before) as f64;
    // Core statistics only mean something when the processes are pinned.
    let tick_ns = 1e9 / clk_tck as f64;
    let ticks = |before: &Option<CoreTimes>,
                 after: &Option<CoreTimes>,
                 f: fn(&CoreTimes) -> u64| match (before, after) {
        (Some(b), Some(a)) if pinning.enabled => f(a).saturating_sub(f(b)) as f64 * tick_ns,
        _ => f64::NAN,
    };
    let core_busy_ns = ticks(&core_before, &core_after, |t| t.busy);
    let core_steal_ns = ticks(&core_before, &core_after, |t| t.steal);
    let client_core_ns = ticks(&client_before, &client_after, |t| t.busy);
    // h2load is the only child waited for in the window (taskset execs it).
    let client_cpu_ns = match (children_before, children_after) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64 * tick_ns,
        _ => f64::NAN,
    };
    Ok(Sample {
        mode,
        req_per_s: report.req_per_s,
        cpu_us_per_req: cpu_ns / requests as f64 / 1000.0,
        server_busy: cpu_ns / wall_ns,
        core_other: non_negative((core_busy_ns - cpu_ns) / wall_ns),
        core_steal: core_steal_ns / wall_ns,
        client_busy: client_cpu_ns / wall_ns,
        client_other: non_negative((client_core_ns - client_cpu_ns) / wall_ns),
    })
}

/// Clamps tick-rounding noise below zero; keeps NaN (no figure) as NaN.
fn non_negative(x: f64) -> f64 {
    if x < 0.0 { 0.0 } else { x }
}

fn summarize(samples: &[Sample], quick: bool, traced: Option<f64>) {
    let stat = |mode: Mode, f: fn(&Sample) -> f64| {
        let mut values: Vec<f64> = samples.iter().filter(|s| s.mode == mode).map(f).collect();
        median(&mut values)
    };
    let rounds = samples.iter().filter(|s| s.mode == Mode::Plain).count();
    println!("\nmedians of {rounds} rounds:");
    println!(
        "{:<6} {:>10} {:>12} {:>10} {:>10}",
        "mode", "req/s", "CPU µs/req", "min req/s", "max req/s"
    );
    let mut medians = BTreeMap::new();
    for mode in [Mode::Plain, Mode::Keel] {
        let rps = stat(mode, |s| s.req_per_s);
        let cpu = stat(mode, |s| s.cpu_us_per_req);
        let (min, max) = samples
            .iter()
            .filter(|s| s.mode == mode)
            .fold((f64::INFINITY, 0f64), |(lo, hi), s| {
                (lo.min(s.req_per_s), hi.max(s.req_per_s))
            });
        println!(
            "{:<6} {:>10.0} {:>12.2} {:>10.0} {:>10.0}",
            mode.name(),
            rps,
            cpu,
            min,
            max
        );
        medians.insert(mode, (rps, cpu));
    }
    let (plain_rps, plain_cpu) = medians[&Mode::Plain];
    let (keel_rps, keel_cpu) = medians[&Mode::Keel];
    // The verdicts use the rounds paired (a round's two runs back to back):
    // the machine's drift, which moves both runs of a round alike, cancels.
    let plains: Vec<&Sample> = samples.iter().filter(|s| s.mode == Mode::Plain).collect();
    let keels: Vec<&Sample> = samples.iter().filter(|s| s.mode == Mode::Keel).collect();
    let ratio = Paired::of(
        plains
            .iter()
            .zip(&keels)
            .map(|(p, k)| k.req_per_s / p.req_per_s),
    );
    // Keel's CPU as a share of a plain call: it moves far less between fast
    // and slow machines than the µs Keel adds.
    let cpu_ratio = Paired::of(
        plains
            .iter()
            .zip(&keels)
            .map(|(p, k)| k.cpu_us_per_req / p.cpu_us_per_req),
    );
    let target = match traced {
        Some(_) => TARGET_RATIO_TRACED,
        None => TARGET_RATIO,
    };
    if let Some(sampling) = traced {
        println!(
            "(keel = the full stack with telemetry on, sampling {:.1}%, exporting)",
            sampling * 100.0
        );
    }
    println!(
        "\nkeel/plain throughput: paired median {:.3}x, {}; ratio of medians {:.3}x   \
         target >= {target}x: {}",
        ratio.median,
        ratio.interval_text(|x| format!("{x:.3}x")),
        keel_rps / plain_rps,
        ratio.verdict(|x| x >= target),
    );
    println!(
        "keel/plain CPU per request: paired median {:.3}x, {}; ratio of medians {:.3}x",
        cpu_ratio.median,
        cpu_ratio.interval_text(|x| format!("{x:.3}x")),
        keel_cpu / plain_cpu,
    );
    println!(
        "verified: every response h2load counted as succeeded was a successful GetUser \
         (server counters; for keel also grpc_server_handled_total)"
    );
    if quick {
        println!("(--quick: too few requests for these figures to mean much)");
    }
}

/// `--rate-limit`: builds and runs bench-rate-limit (see the module docs).
fn rate_limit(options: &Options, cargo: &str) -> anyhow::Result<()> {
    crate::ensure_tool("redis-server", "redis-server")?;
    build(cargo, &["bench-rate-limit"])?;
    let bin = crate::target_dir().join("release").join("bench-rate-limit");
    crate::run_cmd(
        Command::new(bin)
            .arg("--calls")
            .arg(options.requests.to_string())
            .arg("--warmup")
            .arg(options.warmup_requests.to_string()),
    )
}

/// Builds the release binaries `bins` of keel-bench.
fn build(cargo: &str, bins: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new(cargo);
    command.args(["build", "--release", "-p", "keel-bench"]);
    for bin in bins {
        command.args(["--bin", bin]);
    }
    crate::run_cmd(&mut command)
}
