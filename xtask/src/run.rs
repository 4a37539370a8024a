//! `cargo xtask run`: the README's main job. Builds the example services and
//! runs them together on their embedded defaults, in development
//! (`KEEL_SERVICE__ENVIRONMENT=development`: their development credentials
//! are layered in), until Ctrl-C, SIGINT or SIGTERM, or until one of them ends.
//!
//! The services run in their own process group, so a terminal's Ctrl-C
//! reaches only this process, which passes one SIGTERM to each service: each
//! shuts down gracefully (lame duck, then drain) and `run` waits for all of
//! them. A second signal is passed on too, and the services then exit at
//! once. The same holds under a supervisor that signals only this process.
//! When one service ends by itself, the others are stopped the same way.
//!
//! `cargo xtask run --replicas N` runs N user-service replicas instead of one,
//! on 127.0.0.2, 127.0.0.3, … (every address of 127.0.0.0/8 is local), each
//! with the gRPC port 50051 and its `/metrics` on port 9090 of its own
//! address. They share the store the embedded default names (a SQLite file
//! in the workspace root, the working directory of every replica) or
//! `KEEL_STORE__URL`: the first replica starts alone and applies the
//! migrations (sqlx takes no lock on SQLite), the others once it serves. A
//! DNS server inside this process answers `user-service.keel.test.` with one A
//! record per replica, and the gateway calls `dns:///user-service.keel.test:50051`
//! with that server as its `client.dns.nameservers` (in a `--config` file:
//! lists have no environment variable), so it balances its calls over them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keel_rpc::testing::TestDns;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The services, in start order (the auth service first: the others verify its tokens).
const SERVICES: &[&str] = &["auth-service", "user-service", "gateway-service"];

/// How often the services are checked on.
const POLL: Duration = Duration::from_millis(50);

/// Most `--replicas`: their addresses are 127.0.0.2 to 127.0.0.(1 + this).
const MAX_REPLICAS: u8 = 8;

/// The replicas' gRPC port and `/metrics` port, each on the replica's own address
/// (user-service's embedded defaults, on 127.0.0.1).
const REPLICA_GRPC_PORT: u16 = 50051;
const REPLICA_METRICS_PORT: u16 = 9090;

/// The zone xtask's DNS server serves, and the replicas' name in it.
const DNS_ZONE: &str = "keel.test.";
const DNS_NAME: &str = "user-service.keel.test.";

/// Where the auth service and the gateway listen (their embedded defaults).
const AUTH_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50053);
const GATEWAY_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50052);

/// How long a service may take to report SERVING on its health service.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(args: &[&str]) -> Result<()> {
    let replicas = replicas(args)?;
    if replicas.is_some() {
        shared_store()?;
    }
    // One build per service, as `cargo run -p <service>` builds it: built
    // together, cargo unifies their features (the gateway's keel-rpc would
    // get user-service's `store`), and the reader's next `cargo run -p
    // gateway-service` would rebuild.
    for service in SERVICES {
        crate::run_cmd(Command::new(env!("CARGO")).args(["build", "--locked", "-p", service]))?;
    }

    // Registered before the services start, so no signal is missed.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("handling SIGINT/SIGTERM")?;
    if let Some(replicas) = replicas {
        return run_replicas(replicas, &mut signals);
    }
    let commands = SERVICES
        .iter()
        .map(|service| (*service, development(service)));
    let children = Children::spawn(commands)?;
    println!(
        "xtask: running {} in development; Ctrl-C stops them all (auth :50053, users :50051, \
         gateway :50052)",
        SERVICES.join(", ")
    );
    supervise(children, || signals.pending().count() > 0)
}

/// `--replicas N` (or `--replicas=N`), if given.
fn replicas(args: &[&str]) -> Result<Option<u8>> {
    let value = match args {
        [] => return Ok(None),
        ["--replicas", n] => *n,
        [arg] if arg.starts_with("--replicas=") => &arg["--replicas=".len()..],
        _ => bail!(
            "run takes only `--replicas N` (1 to {MAX_REPLICAS}); configure the services with \
             KEEL_* variables"
        ),
    };
    match value.parse::<u8>() {
        Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(Some(n)),
        _ => bail!(
            "--replicas {value:?}: give a number from 1 to {MAX_REPLICAS} (the replicas listen \
             on 127.0.0.2 to 127.0.0.{})",
            MAX_REPLICAS + 1
        ),
    }
}

/// Refuses a `KEEL_STORE__URL` that replicas cannot share (an in-memory SQLite
/// database lives in one process).
fn shared_store() -> Result<()> {
    if let Ok(url) = std::env::var("KEEL_STORE__URL")
        && (url.contains(":memory:") || url.contains("mode=memory"))
    {
        bail!(
            "KEEL_STORE__URL names an in-memory database, which replicas cannot share: use a \
             sqlite:// file or a postgres:// URL"
        );
    }
    Ok(())
}

/// `service`'s binary, to run in the workspace root in development.
fn development(service: &str) -> Command {
    let mut command = Command::new(crate::target_dir().join("debug").join(service));
    command
        .current_dir(crate::root())
        .env("KEEL_SERVICE__ENVIRONMENT", "development");
    if service != "auth-service" {
        // Revoked sessions are refused at once, as in the manifests.
        command.env("KEEL_AUTH__REVOCATIONS", format!("http://{AUTH_ADDR}"));
    }
    command
}

/// Replica `i` (from 0)'s address.
fn replica_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + i)
}

/// `run --replicas n`: the DNS server, then the services; the DNS server
/// stops once every service has exited.
fn run_replicas(n: u8, signals: &mut Signals) -> Result<()> {
    let ips: Vec<Ipv4Addr> = (0..n).map(replica_ip).collect();
    // The DNS server's tasks and the health probes; `supervise` itself stays
    // on this thread, as without replicas.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting a tokio runtime for the DNS server")?;
    let mut dns = rt.block_on(async {
        let dns = TestDns::start(DNS_ZONE).await?;
        let addresses: Vec<IpAddr> = ips.iter().copied().map(IpAddr::V4).collect();
        dns.set(DNS_NAME, &addresses).await?;
        anyhow::Ok(dns)
    })?;
    let result = gateway_config(dns.addr())
        .and_then(|config| run_with_dns(&rt, &ips, dns.addr(), &config, signals));
    rt.block_on(dns.stop());
    result
}

/// Writes the gateway's `--config` file: `client.dns.nameservers` is a list,
/// which no environment variable sets.
fn gateway_config(nameserver: SocketAddr) -> Result<PathBuf> {
    let dir = crate::target_dir().join("xtask-run");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("gateway-replicas.toml");
    let text = format!(
        "# Written by `cargo xtask run --replicas N` for this run: the gateway resolves\n\
         # dns:/// targets with the DNS server inside xtask.\n\
         [client.dns]\n\
         nameservers = [\"{nameserver}\"]\n"
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn run_with_dns(
    rt: &tokio::runtime::Runtime,
    ips: &[Ipv4Addr],
    nameserver: SocketAddr,
    config: &Path,
    signals: &mut Signals,
) -> Result<()> {
    let mut children = Children(Vec::new());
    let started = start_replicas(rt, &mut children, ips, config, &mut || {
        signals.pending().count() > 0
    });
    // Stopped (a signal came, a service ended, or one never served): stop the
    // rest as a signal would, and wait for them.
    let stop = |children: Children, signals: &mut Signals| {
        let mut first = true;
        supervise(children, || {
            std::mem::take(&mut first) | (signals.pending().count() > 0)
        })
    };
    match started {
        Ok(true) => {}
        Ok(false) => return stop(children, signals),
        Err(e) => {
            let _ = stop(children, signals);
            return Err(e);
        }
    }
    let target = gateway_target();
    println!(
        "xtask: running auth-service, {n} user-service replicas and gateway-service in \
         development; Ctrl-C stops them all",
        n = ips.len()
    );
    println!("xtask: auth-service   grpc {AUTH_ADDR}  metrics http://127.0.0.1:9092/metrics");
    println!(
        "xtask: gateway-service grpc {GATEWAY_ADDR}  metrics http://127.0.0.1:9091/metrics, \
         calling {target} (DNS server {nameserver}, {})",
        config.display()
    );
    for (i, ip) in ips.iter().enumerate() {
        println!(
            "xtask: user-service replica {}  grpc {ip}:{REPLICA_GRPC_PORT}  metrics \
             http://{ip}:{REPLICA_METRICS_PORT}/metrics",
            i + 1
        );
    }
    let store = match std::env::var("KEEL_STORE__URL") {
        Ok(_) => "KEEL_STORE__URL".to_owned(),
        Err(_) => format!("user-service's default, in {}", crate::root().display()),
    };
    println!("xtask: the replicas share one store ({store})");
    let list: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
    println!(
        "xtask: to see the balancing, call the gateway a few times (TOKEN as in README's quick \
         start), then compare each replica's count:\n  \
         for i in $(seq 30); do curl -s -o /dev/null -H \"authorization: Bearer $TOKEN\" \
         {GATEWAY_ADDR}/v1/profiles/u-000001; done\n  \
         for ip in {list}; do echo \"$ip $(curl -s $ip:{REPLICA_METRICS_PORT}/metrics | grep \
         '^grpc_server_handled_total.*grpc_service=\"user.v1.UserService\"' | awk '{{s+=$2}} \
         END {{print s+0}}')\"; done",
        list = list.join(" ")
    );
    supervise(children, || signals.pending().count() > 0)
}

/// The gateway's upstream: every replica, through the DNS name.
fn gateway_target() -> String {
    format!(
        "dns:///{}:{REPLICA_GRPC_PORT}",
        DNS_NAME.trim_end_matches('.')
    )
}

/// Starts the auth service, the first replica (alone, so that it applies the
/// store's migrations), once it serves the other replicas, then the gateway,
/// and waits until all of them serve. `Ok(false)`: stopped by `stop` saying a
/// signal came, or by a service that ended.
fn start_replicas(
    rt: &tokio::runtime::Runtime,
    children: &mut Children,
    ips: &[Ipv4Addr],
    config: &Path,
    stop: &mut dyn FnMut() -> bool,
) -> Result<bool> {
    let grpc = |ip: &Ipv4Addr| SocketAddr::from((*ip, REPLICA_GRPC_PORT));
    let replica = |ip: &Ipv4Addr| {
        let mut command = development("user-service");
        command.env("KEEL_SERVER__ADDR", grpc(ip).to_string()).env(
            "KEEL_METRICS__ADDR",
            SocketAddr::from((*ip, REPLICA_METRICS_PORT)).to_string(),
        );
        (format!("user-service@{ip}"), command)
    };
    children.push("auth-service".to_owned(), development("auth-service"))?;
    let (first, rest) = ips.split_first().context("no replica")?;
    let (name, command) = replica(first);
    children.push(name, command)?;
    if !wait_serving(rt, children, &[grpc(first)], stop)? {
        return Ok(false);
    }
    for ip in rest {
        let (name, command) = replica(ip);
        children.push(name, command)?;
    }
    let mut gateway = development("gateway-service");
    gateway
        .arg("--config")
        .arg(config)
        .env("KEEL_UPSTREAM__USER_SERVICE", gateway_target());
    children.push("gateway-service".to_owned(), gateway)?;
    let mut all: Vec<SocketAddr> = ips.iter().map(grpc).collect();
    all.extend([AUTH_ADDR, GATEWAY_ADDR]);
    wait_serving(rt, children, &all, stop)
}

/// Waits until the health service at every address of `addrs` reports
/// SERVING. `Ok(false)` as soon as `stop` says a signal came or a child
/// exited; an error after [`READY_TIMEOUT`].
fn wait_serving(
    rt: &tokio::runtime::Runtime,
    children: &mut Children,
    addrs: &[SocketAddr],
    stop: &mut dyn FnMut() -> bool,
) -> Result<bool> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut waiting = addrs.to_vec();
    loop {
        if stop() {
            println!("xtask: signalled while starting: stopping the services");
            return Ok(false);
        }
        if children.any_exited()? {
            return Ok(false);
        }
        waiting.retain(|addr| {
            let serving = keel_rpc::serve::probe(*addr, "", Duration::from_secs(1));
            !rt.block_on(serving).unwrap_or(false)
        });
        if waiting.is_empty() {
            return Ok(true);
        }
        if Instant::now() > deadline {
            let waiting: Vec<String> = waiting.iter().map(SocketAddr::to_string).collect();
            bail!(
                "not serving after {}s: {}",
                READY_TIMEOUT.as_secs(),
                waiting.join(", ")
            );
        }
        std::thread::sleep(POLL * 4);
    }
}

/// Waits for every child to exit. When `signalled` says a signal came, or
/// when a child exits while the others run, the running ones are sent
/// SIGTERM (again on every further signal). Fails if a child failed.
fn supervise(mut children: Children, mut signalled: impl FnMut() -> bool) -> Result<()> {
    let mut stopping = false;
    let mut failed = Vec::new();
    loop {
        let mut stop = signalled();
        if stop && stopping {
            println!("xtask: signalled again: the services exit at once");
        }
        let mut running = 0;
        for (name, child, exited) in &mut children.0 {
            if exited.is_some() {
                continue;
            }
            match child
                .try_wait()
                .with_context(|| format!("waiting for {name}"))?
            {
                None => running += 1,
                Some(status) => {
                    println!("xtask: {name} exited ({status})");
                    if !status.success() {
                        failed.push(format!("{name} exited with {status}"));
                    }
                    *exited = Some(status);
                    stop |= !stopping;
                }
            }
        }
        if running == 0 {
            break;
        }
        if stop {
            stopping = true;
            children.terminate();
        }
        std::thread::sleep(POLL);
    }
    // Dropped with every child reaped: nothing left to kill.
    drop(children);
    match failed.is_empty() {
        true => Ok(()),
        false => bail!("{}", failed.join("; ")),
    }
}

/// The services, each in a process group of its own; whatever still runs when
/// this is dropped (`run` returning early) is killed.
struct Children(Vec<(String, Child, Option<ExitStatus>)>);

impl Children {
    fn spawn(commands: impl IntoIterator<Item = (impl Into<String>, Command)>) -> Result<Self> {
        let mut children = Children(Vec::new());
        for (name, command) in commands {
            children.push(name.into(), command)?;
        }
        Ok(children)
    }

    /// Starts one more child. On an error, the ones already started are
    /// killed when `self` is dropped.
    fn push(&mut self, name: String, mut command: Command) -> Result<()> {
        // Out of the terminal's process group: Ctrl-C reaches `run` only,
        // which passes on exactly one signal per Ctrl-C.
        let child = command
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.0.push((name, child, None));
        Ok(())
    }

    /// Whether a child has exited (`supervise` then sees it too: the status
    /// is kept in its `Child`).
    fn any_exited(&mut self) -> Result<bool> {
        for (name, child, _) in &mut self.0 {
            let status = child
                .try_wait()
                .with_context(|| format!("waiting for {name}"))?;
            if status.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Sends SIGTERM to every child still running.
    fn terminate(&self) {
        for (name, child, exited) in &self.0 {
            if exited.is_none() {
                let sent = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                if !sent.is_ok_and(|s| s.success()) {
                    eprintln!("xtask: could not signal {name} (pid {})", child.id());
                }
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that exits 0 when it gets SIGTERM, after writing `term` into
    /// `dir/name`; or after `after` seconds with `code`.
    fn child(
        dir: &std::path::Path,
        name: &'static str,
        after: u32,
        code: i32,
    ) -> (&'static str, Command) {
        let mut command = Command::new("sh");
        let file = dir.join(name);
        command.arg("-c").arg(format!(
            "trap 'echo term > {file}; exit 0' TERM; i=0; while [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done; exit {code}",
            file = file.display(),
            ticks = after * 10,
        ));
        (name, command)
    }

    fn scratch(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-run-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn got_term(dir: &std::path::Path, name: &str) -> bool {
        std::fs::read_to_string(dir.join(name)).is_ok_and(|s| s.trim() == "term")
    }

    #[test]
    fn a_signal_is_passed_to_every_service_and_all_are_waited_for() {
        let dir = scratch("signal");
        let children = Children::spawn([child(&dir, "a", 30, 0), child(&dir, "b", 30, 0)]).unwrap();
        let pids: Vec<u32> = children.0.iter().map(|(_, c, _)| c.id()).collect();
        // Let the shells install their traps, then "signal" once.
        let mut polls = 0;
        let started = std::time::Instant::now();
        supervise(children, || {
            polls += 1;
            polls == 10
        })
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20), "did not stop");
        assert!(
            got_term(&dir, "a") && got_term(&dir, "b"),
            "both got SIGTERM"
        );
        for pid in pids {
            let alive = Command::new("kill")
                .args(["-0", &pid.to_string()])
                .status()
                .unwrap();
            assert!(!alive.success(), "pid {pid} still running");
        }
    }

    #[test]
    fn replicas_are_one_to_eight() {
        assert_eq!(replicas(&[]).unwrap(), None);
        assert_eq!(replicas(&["--replicas", "3"]).unwrap(), Some(3));
        assert_eq!(replicas(&["--replicas=8"]).unwrap(), Some(8));
        for bad in ["0", "9", "300", "x", "-1", ""] {
            let error = replicas(&["--replicas", bad]).unwrap_err().to_string();
            assert!(error.contains("from 1 to 8"), "{bad}: {error}");
        }
        for bad in [&["--replicas"][..], &["--replica", "2"], &["3"]] {
            let error = replicas(bad).unwrap_err().to_string();
            assert!(error.contains("only `--replicas N`"), "{bad:?}: {error}");
        }
        assert_eq!(replica_ip(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(replica_ip(MAX_REPLICAS - 1), Ipv4Addr::new(127, 0, 0, 9));
        assert_eq!(gateway_target(), "dns:///user-service.keel.test:50051");
    }

    #[test]
    fn one_service_failing_stops_the_others_and_fails() {
        let dir = scratch("failing");
        let children =
            Children::spawn([child(&dir, "ok", 30, 0), child(&dir, "bad", 1, 3)]).unwrap();
        let error = supervise(children, || false).unwrap_err().to_string();
        assert!(error.contains("bad exited with exit status: 3"), "{error}");
        assert!(
            got_term(&dir, "ok"),
            "the other service was stopped with SIGTERM"
        );
        assert!(!got_term(&dir, "bad"));
    }
}
