//! The processes the bench starts: bench-server per mode, and the trace sink.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use super::machine::Pinning;
use super::{Handler, Mode};

/// One bench-server process, serving one mode; killed when dropped (also
/// when the bench fails).
pub(super) struct Server {
    child: Child,
    pub(super) mode: Mode,
    pub(super) grpc: SocketAddr,
    http: SocketAddr,
    /// The bearer token it minted.
    pub(super) token: String,
    /// The gRPC-framed `GetUserRequest` it wrote.
    pub(super) body: Vec<u8>,
}

impl Server {
    /// Starts `bin --serve <mode>` with `handler`, pinned to the server's
    /// core, or under callgrind writing to `callgrind_out`; with `traced`
    /// (a sampling ratio and an OTLP endpoint), telemetry exports spans.
    pub(super) fn start(
        bin: &Path,
        mode: Mode,
        handler: Handler,
        work: &Path,
        pinning: &Pinning,
        traced: Option<&(f64, String)>,
        callgrind_out: Option<&Path>,
    ) -> anyhow::Result<Server> {
        ensure!(bin.exists(), "{} was not built", bin.display());
        let token_file = work.join(format!("{}.token", mode.name()));
        let body_file = work.join(format!("{}.body", mode.name()));
        let _ = std::fs::remove_file(&token_file);
        let _ = std::fs::remove_file(&body_file);
        let mut command = match callgrind_out {
            // Under callgrind every thread runs serialized: pinning is moot.
            Some(out) => {
                for dump in 1..=4 {
                    let _ = std::fs::remove_file(format!("{}.{dump}", out.display()));
                }
                let mut command = Command::new("valgrind");
                command
                    .args(["--tool=callgrind", "--dump-instr=no"])
                    .args(["--cache-sim=yes", "--branch-sim=yes"])
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg(bin)
                    // A counted run lasts tens of seconds: a `date` header
                    // changing every second would make HPACK dearer as it goes.
                    .arg("--fixed-date");
                command
            }
            None => pinning.command(pinning.server_core, bin),
        };
        command
            .args(["--serve", mode.name()])
            .args(["--handler", handler.name()])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--body-file")
            .arg(&body_file);
        if let Some((ratio, endpoint)) = traced {
            command
                .arg("--trace-sampling")
                .arg(ratio.to_string())
                .arg("--otlp-endpoint")
                .arg(endpoint);
        }
        // Valgrind takes a while to start a 90 MB binary.
        let startup = Duration::from_secs(if callgrind_out.is_some() { 300 } else { 60 });
        Self::launch(command, mode, &token_file, &body_file, startup)
    }

    /// `bin --serve plain --handler <handler> --fixed-date`, pinned to the
    /// server's core and not under callgrind: the server `--client` calls,
    /// whose own cost is not counted. A constant `date` header, so that
    /// every response decodes alike however long a counted client runs.
    pub(super) fn start_for_client(
        bin: &Path,
        handler: Handler,
        work: &Path,
        pinning: &Pinning,
    ) -> anyhow::Result<Server> {
        ensure!(bin.exists(), "{} was not built", bin.display());
        let mode = Mode::Plain;
        let token_file = work.join("client-target.token");
        let body_file = work.join("client-target.body");
        let _ = std::fs::remove_file(&token_file);
        let _ = std::fs::remove_file(&body_file);
        let mut command = pinning.command(pinning.server_core, bin);
        command
            .arg("--fixed-date")
            .args(["--serve", mode.name()])
            .args(["--handler", handler.name()])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--body-file")
            .arg(&body_file);
        Self::launch(
            command,
            mode,
            &token_file,
            &body_file,
            Duration::from_secs(60),
        )
    }

    /// Starts `command` (a bench-server of `mode`), waits for its ports and
    /// reads the token and body it wrote.
    fn launch(
        mut command: Command,
        mode: Mode,
        token_file: &Path,
        body_file: &Path,
        startup: Duration,
    ) -> anyhow::Result<Server> {
        let (child, [grpc, http]) =
            spawn_announcing(&mut command, "bench-server", ["grpc", "http"], startup)?;
        // From here on, dropping `server` kills the process.
        let mut server = Server {
            child,
            mode,
            grpc,
            http,
            token: String::new(),
            body: Vec::new(),
        };
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        server.token = String::from_utf8(read(token_file)?)
            .context("the token is not UTF-8")?
            .trim()
            .to_owned();
        ensure!(
            !server.token.is_empty(),
            "bench-server wrote an empty token"
        );
        server.body = read(body_file)?;
        println!(
            "bench-server {} pid {}: grpc {}, http {}",
            mode.name(),
            server.pid(),
            server.grpc,
            server.http
        );
        Ok(server)
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its counters (`ok`, `err` of GetUser; `export_ok`, `export_err` of ExportUsers).
    pub(super) fn counts(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let body = http_get(self.http, "/counts")?;
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let (key, value) = line
                    .split_once(' ')
                    .with_context(|| format!("bad /counts line {line:?}"))?;
                let value = value
                    .trim()
                    .parse()
                    .with_context(|| format!("bad /counts line {line:?}"))?;
                Ok((key.to_string(), value))
            })
            .collect()
    }

    /// Keel's `grpc_server_handled_total` for `method` with code OK; `None`
    /// for plain tonic, which has no metrics.
    pub(super) fn handled_ok(&self, method: &str) -> anyhow::Result<Option<u64>> {
        if self.mode == Mode::Plain {
            return Ok(None);
        }
        let body = http_get(self.http, "/metrics")?;
        let mut total = 0.0;
        let mut found = false;
        for line in body.lines() {
            if line.starts_with("grpc_server_handled_total{")
                && line.contains(&format!("grpc_method=\"{method}\""))
                && line.contains(r#"grpc_code="OK""#)
            {
                let value = line.rsplit(' ').next().unwrap_or_default();
                total += value
                    .parse::<f64>()
                    .with_context(|| format!("bad metrics line {line:?}"))?;
                found = true;
            }
        }
        ensure!(
            found,
            "/metrics has no grpc_server_handled_total for {method} OK"
        );
        Ok(Some(total as u64))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bench-server --otlp-sink` for `--traced`: an OTLP trace collector that
/// counts spans, pinned to h2load's core; killed when dropped.
pub(super) struct Sink {
    child: Child,
    pub(super) otlp: SocketAddr,
    http: SocketAddr,
}

impl Sink {
    pub(super) fn start(bin: &Path, pinning: &Pinning) -> anyhow::Result<Sink> {
        ensure!(bin.exists(), "{} was not built", bin.display());
        let mut command = pinning.command(pinning.client_core, bin);
        command.arg("--otlp-sink");
        let (child, [otlp, http]) = spawn_announcing(
            &mut command,
            "bench-sink",
            ["otlp", "http"],
            Duration::from_secs(60),
        )?;
        let sink = Sink { child, otlp, http };
        println!(
            "trace sink pid {}: otlp {}, http {}",
            sink.child.id(),
            sink.otlp,
            sink.http
        );
        Ok(sink)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` with its stdout piped and waits for the line in which it
/// announces the addresses of `keys` (see [`announced_ports`]); kills it if
/// that fails.
fn spawn_announcing<const N: usize>(
    command: &mut Command,
    name: &str,
    keys: [&str; N],
    timeout: Duration,
) -> anyhow::Result<(Child, [SocketAddr; N])> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    match announced_ports(&mut child, name, keys, timeout) {
        Ok(addrs) => Ok((child, addrs)),
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(error)
        }
    }
}

/// The addresses of `keys`, in that order, from the line `<name> key=addr …`
/// that `child` prints on its (piped) stdout once it listens; an error if it
/// does not within `timeout`, or if the line lacks one of them.
fn announced_ports<const N: usize>(
    child: &mut Child,
    name: &str,
    keys: [&str; N],
    timeout: Duration,
) -> anyhow::Result<[SocketAddr; N]> {
    let stdout = child
        .stdout
        .take()
        .with_context(|| format!("{name}'s stdout was not captured"))?;
    // Read its stdout on a thread, so a process that hangs cannot hang us.
    let (tx, rx) = mpsc::channel();
    let prefix = format!("{name} ");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(&prefix) {
                let _ = tx.send(line);
            }
        }
    });
    let line = match rx.recv_timeout(timeout) {
        Ok(line) => line,
        Err(_) => {
            let status = child.try_wait().ok().flatten();
            bail!(
                "{name} did not announce its ports (exit status: {})",
                status.map_or("still running".into(), |s| s.to_string())
            );
        }
    };
    let mut found = [None; N];
    for part in line.split_whitespace().skip(1) {
        let (key, value) = part
            .split_once('=')
            .with_context(|| format!("bad ports line {line:?}"))?;
        let addr: SocketAddr = value
            .parse()
            .with_context(|| format!("bad address {value:?} in {line:?}"))?;
        if let Some(i) = keys.iter().position(|k| *k == key) {
            found[i] = Some(addr).filter(|a| a.port() != 0);
        }
    }
    let mut addrs = [SocketAddr::from(([0, 0, 0, 0], 0)); N];
    for ((addr, found), key) in addrs.iter_mut().zip(found).zip(keys) {
        *addr = found.with_context(|| format!("ports line {line:?} lacks {key}="))?;
    }
    Ok(addrs)
}

/// A minimal HTTP/1.1 GET (the server's endpoint is local and trusted).
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading GET {path}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: malformed response"))?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        head.lines().next().unwrap_or_default()
    );
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok(if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    })
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunked body")?;
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("short chunk")?;
    }
}

/// With `--traced`: the spans the sink received, once the batch processor
/// has flushed (it exports at least every 5 s), must be about `ratio` of the
/// keel calls: sampling and export really ran.
pub(super) fn check_exported_spans(sink: &Sink, ratio: f64, keel_calls: u64) -> anyhow::Result<()> {
    let spans = |sink: &Sink| -> anyhow::Result<u64> {
        let body = http_get(sink.http, "/counts")?;
        let spans = body
            .lines()
            .find_map(|l| l.strip_prefix("otlp_spans "))
            .context("the sink's /counts has no otlp_spans")?;
        spans
            .trim()
            .parse()
            .with_context(|| format!("bad otlp_spans {spans:?}"))
    };
    let expected = ratio * keel_calls as f64;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = spans(sink)?;
    loop {
        std::thread::sleep(Duration::from_secs(6));
        let now = spans(sink)?;
        let settled = now == last;
        last = now;
        if settled || Instant::now() > deadline {
            break;
        }
    }
    println!(
        "exported spans: {last} for {keel_calls} keel calls ({:.3}%; sampling ratio {:.3}%)",
        100.0 * last as f64 / keel_calls.max(1) as f64,
        100.0 * ratio
    );
    ensure!(
        (last as f64) >= 0.5 * expected && (last as f64) <= 1.5 * expected + 10.0,
        "the sink received {last} spans; about {expected:.0} were expected"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").expect("dechunks"),
            "hello world"
        );
    }
}
