//! [`TestRedis`]: a Redis server of a test's own, for `[rate_limit] backend`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The program started, unless `KEEL_TEST_REDIS_SERVER` names another.
const PROGRAM: &str = "redis-server";

/// Why a [`TestRedis`] did not start.
#[derive(Debug, thiserror::Error)]
pub enum TestRedisError {
    /// `redis-server` could not be run.
    #[error(
        "starting {0}: {1} (install it: `apt-get install redis-server`; `cargo xtask test` does)"
    )]
    Spawn(String, std::io::Error),
    /// It did not answer `PING` in time.
    #[error("redis-server on {0} did not answer PING within 10 s")]
    NotReady(SocketAddr),
    /// No port could be had.
    #[error("finding a free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
}

/// A `redis-server` on 127.0.0.1 on a free port, keeping nothing on disk,
/// that a test can kill and start again (on the same port), as an outage
/// does. Stopped when dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut redis = keel_rpc::testing::TestRedis::start().await?;
/// let mut config = keel_rpc::config::Config::<()>::default();
/// config.rate_limit.backend = Some(redis.url());
/// redis.kill(); // Redis is down...
/// redis.restart().await?; // ... and back, empty.
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TestRedis {
    addr: SocketAddr,
    child: Option<Child>,
    /// The certificate and key files it serves TLS with, and the password it
    /// requires, if it does.
    tls: Option<Secured>,
}

#[derive(Debug)]
struct Secured {
    cert_file: PathBuf,
    key_file: PathBuf,
    password: String,
}

impl TestRedis {
    /// Starts one, and waits until it answers.
    pub async fn start() -> Result<TestRedis, TestRedisError> {
        TestRedis::start_with(None).await
    }

    /// Starts one that speaks only TLS (`rediss://`), with the PEM
    /// certificate and key in `cert_file` and `key_file`, and requires
    /// `password` (`AUTH`, of its `default` user); waits until it accepts
    /// connections. It asks clients for no certificate.
    pub async fn start_secured(
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
        password: impl Into<String>,
    ) -> Result<TestRedis, TestRedisError> {
        TestRedis::start_with(Some(Secured {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            password: password.into(),
        }))
        .await
    }

    async fn start_with(tls: Option<Secured>) -> Result<TestRedis, TestRedisError> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(TestRedisError::Port)?;
        let mut redis = TestRedis {
            addr: port,
            child: None,
            tls,
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://` for [`start_secured`](Self::start_secured).
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://{}", self.addr),
            Some(_) => format!("rediss://{}", self.addr),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills it (SIGKILL): its connections break, and nothing answers on
    /// its port until [`restart`](Self::restart).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it (SIGSTOP) without closing anything: its connections stay
    /// open and nothing is answered, as a server that hangs.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [`pause`](Self::pause)d server go on.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) -> Result<(), TestRedisError> {
        self.kill();
        let program = std::env::var("KEEL_TEST_REDIS_SERVER").unwrap_or_else(|_| PROGRAM.into());
        let mut command = Command::new(&program);
        command.args(["--bind", "127.0.0.1"]);
        let port = self.addr.port().to_string();
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(secured) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(&secured.cert_file)
                .arg("--tls-key-file")
                .arg(&secured.key_file)
                .args(["--requirepass", &secured.password]),
        };
        let child = command
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TestRedisError::Spawn(program, e))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(TestRedisError::NotReady(self.addr))
    }

    /// Whether it answers `PING` (over TLS: whether it accepts connections).
    async fn ping(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(self.addr).await else {
            return false;
        };
        if self.tls.is_some() {
            return true;
        }
        let mut answer = [0; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut answer).await.is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
