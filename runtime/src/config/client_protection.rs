//! `[client.retry_budget]` and `[client.breaker]`: what keeps generated clients from making a
//! failing dependency's outage worse (see `keel_rpc::client`, "Failing dependencies").

use std::time::Duration;

use super::Section;

/// How many retries generated clients may add to a service's load, as gRPC's
/// `retryThrottling` (gRFC A6) counts them (`[client.retry_budget]`): each service a process
/// calls has `max_tokens`; every attempt failing with a code its method retries takes one,
/// every successful call gives back `token_ratio`, and calls are retried only while more than
/// half the tokens are left. Once a service fails everything, a few retries are made and then
/// none, until it answers again; retries stay near `token_ratio` of the calls that succeed.
#[derive(Debug, Clone, PartialEq, Section)]
pub struct RetryBudgetConfig {
    /// The tokens of each service called (gRPC's `maxTokens`); retries stop once more than
    /// half are spent. Half of it is how many calls in flight to a replica that dies can be
    /// retried on the others at once.
    #[config(default = 100, min = 1, max = 1000)]
    pub max_tokens: u32,
    /// What each successful call gives back (gRPC's `tokenRatio`), at most 3 decimals.
    #[config(default = 0.1, above = 0.0, max = 1.0)]
    pub token_ratio: f64,
}

/// When generated clients stop calling a service that fails everything (`[client.breaker]`):
/// once at least `failure_percent` of at least `min_calls` calls in the last `window` failed
/// `UNAVAILABLE` (transport failures included), calls fail at once, locally, `UNAVAILABLE`;
/// after `open_for` one call goes through as a probe, and its success lets every call through
/// again (its failure waits `open_for` again).
#[derive(Debug, Clone, PartialEq, Eq, Section)]
pub struct BreakerConfig {
    /// Whether the breaker is on.
    #[config(default = true)]
    pub enabled: bool,
    /// The time over which calls and failures are counted: a service whose every call fails
    /// is given up on after about half of it.
    #[config(default = "2s", above = "0s", max = "10m")]
    pub window: Duration,
    /// The least calls in the window before failures can open the breaker: a few failures
    /// of a service called rarely do not.
    #[config(default = 20, min = 1, max = 1000000)]
    pub min_calls: u32,
    /// The share of the window's calls that must have failed, in percent.
    #[config(default = 50, min = 1, max = 100)]
    pub failure_percent: u32,
    /// How long calls fail fast before a probe is let through (±10 %, so that the clients of
    /// one service do not all probe at once).
    #[config(default = "1s", above = "0s", max = "10m")]
    pub open_for: Duration,
}
