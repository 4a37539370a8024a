//! `[client.dns]` and `[client.balance]`: how generated clients find the replicas of a
//! `dns:///` target and spread calls over them (see `keel_rpc::client`).

use std::net::SocketAddr;
use std::time::Duration;

use super::Section;

/// Resolving `dns:///name:port` targets (`[client.dns]`): every A and AAAA record of the name
/// is a replica.
#[derive(Debug, Clone, PartialEq, Eq, Section)]
#[config(validate = Self::problems)]
pub struct DnsConfig {
    /// DNS servers to ask (`"127.0.0.1:5353"`), instead of the system's (`/etc/resolv.conf`):
    /// for tests and sidecars.
    #[config(default_doc = "none (the system's resolv.conf)")]
    pub nameservers: Vec<SocketAddr>,
    /// How often a target's name is resolved again.
    #[config(default = "30s", above = "0s", max = "1h")]
    pub refresh: Duration,
    /// The least time between two resolutions of a target: a connection to a replica that
    /// fails asks for one sooner than `refresh`, at most this often.
    #[config(default = "1s", above = "0s", max = "1h")]
    pub min_refresh: Duration,
    /// How long one resolution may take before it counts as failed (the last good set of
    /// replicas keeps serving; with none yet, calls fail `UNAVAILABLE`).
    #[config(default = "5s", above = "0s", max = "1m")]
    pub timeout: Duration,
    /// Whether the replicas of `dns:///` targets are called over TLS, as `client.tls` says,
    /// checking their certificates against the target's name (or `client.tls.server_name`).
    #[config(default = false)]
    pub tls: bool,
}

/// Spreading calls over the replicas of a `dns:///` target or a list
/// (`keel_rpc::client::Client::balance`), and taking out the ones that fail (`[client.balance]`):
/// each call goes to the less loaded of two replicas picked at random (latency × calls in
/// flight, as a peak EWMA).
#[derive(Debug, Clone, PartialEq, Eq, Section)]
#[config(validate = Self::problems)]
pub struct BalanceConfig {
    /// Transport failures or `UNAVAILABLE` answers in a row after which a replica is ejected
    /// (taken out of the set), as Envoy's outlier detection.
    #[config(default = 5, min = 1, max = 1000)]
    pub consecutive_failures: u32,
    /// How long an ejected replica stays out, times the number of times it was ejected.
    #[config(default = "30s", above = "0s", max = "1h")]
    pub base_ejection: Duration,
    /// The longest ejection, however often a replica was ejected before.
    #[config(default = "5m", above = "0s", max = "24h")]
    pub max_ejection: Duration,
    /// Most replicas of a set ejected at once, in percent of the set (never all of it).
    #[config(default = 50, min = 0, max = 50)]
    pub max_ejection_percent: u32,
    /// How fast a replica's latency estimate (PeakEWMA: an answer slower than the estimate
    /// sets it at once, then it decays toward faster ones) forgets a slow answer: the time
    /// constant of its decay. Longer keeps calls off a replica that was slow once for longer
    /// (linkerd's 10 s makes one scheduling hiccup skew the spread for many seconds).
    #[config(default = "100ms", above = "0s", max = "1m")]
    pub latency_decay: Duration,
    /// After a failed call, how long a replica loses every choice against one that has not
    /// failed, so that a retry goes to another replica; then it is tried again.
    #[config(default = "1s", max = "1m")]
    pub avoid_after_failure: Duration,
    /// How long connecting to a replica may take before the attempt fails.
    #[config(default = "5s", above = "0s", max = "5m")]
    pub connect_timeout: Duration,
}

impl DnsConfig {
    fn problems(&self, problems: &mut super::Problems<'_>) {
        if self.min_refresh > self.refresh {
            problems.push(
                "min_refresh",
                format!(
                    "must not be longer than `refresh` ({})",
                    super::__private::duration_text(self.refresh)
                ),
            );
        }
    }
}

impl BalanceConfig {
    fn problems(&self, problems: &mut super::Problems<'_>) {
        if self.max_ejection < self.base_ejection {
            problems.push(
                "max_ejection",
                format!(
                    "must not be shorter than `base_ejection` ({})",
                    super::__private::duration_text(self.base_ejection)
                ),
            );
        }
    }
}
