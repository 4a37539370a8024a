//! The model: what Keel's annotations resolve to, one policy per method
//! (`ServiceSpec`, `MethodSpec` and the rules they hold), as the policy
//! tables, the service configs, OpenAPI and `POLICY.md` are written from.
//!
//! `resolve` reads it from a compiled descriptor pool (`read` reads one
//! annotation block, `check` holds the checks of what was read), checking
//! every rule on the way.

mod check;
mod read;
mod resolve;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::http::HttpRoute;

pub(crate) use resolve::resolve;

/// Label names Keel's own metrics use; an annotation may not redefine them.
pub const RESERVED_LABELS: &[&str] = &[
    "grpc_type",
    "grpc_service",
    "grpc_method",
    "grpc_code",
    "le",
];

/// Who may call a method, after defaults and overrides are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Callable without a token.
    Public,
    /// Needs a valid access token carrying every listed scope.
    Token(Vec<String>),
    /// Needs a verified client certificate naming one of `peers`, and, when `scopes` is not
    /// empty, a valid access token carrying them.
    Peer {
        /// The workload identities allowed.
        peers: Vec<String>,
        /// Scopes of the access token also required (none: no token is read).
        scopes: Vec<String>,
    },
}

/// How much a method's calls matter when load is shed (`criticality`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Criticality {
    /// `CRITICAL_PLUS`.
    CriticalPlus,
    /// `CRITICAL`, the default.
    #[default]
    Critical,
    /// `SHEDDABLE_PLUS`.
    SheddablePlus,
    /// `SHEDDABLE`.
    Sheddable,
}

impl Criticality {
    /// The value of `keel.v1.Criticality` numbered `number`; `None` for
    /// unspecified (and numbers of a newer proto).
    pub(crate) fn from_number(number: i32) -> Option<Self> {
        match number {
            1 => Some(Criticality::CriticalPlus),
            2 => Some(Criticality::Critical),
            3 => Some(Criticality::SheddablePlus),
            4 => Some(Criticality::Sheddable),
            _ => None,
        }
    }

    /// Its name in the proto.
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::CriticalPlus => "CRITICAL_PLUS",
            Criticality::Critical => "CRITICAL",
            Criticality::SheddablePlus => "SHEDDABLE_PLUS",
            Criticality::Sheddable => "SHEDDABLE",
        }
    }
}

/// The limits of a streaming method's calls (`max_stream_duration`,
/// `stream_idle_timeout`, `max_stream_messages`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamLimits {
    /// How long one call may stream.
    pub max_duration: Option<Duration>,
    /// How long a call may go without a message either way.
    pub idle_timeout: Option<Duration>,
    /// How many messages the client may send on one call.
    pub max_messages: Option<u64>,
}

/// The resolved policy of one method.
#[derive(Clone, Debug)]
pub struct MethodSpec {
    /// Method name as written in the proto (`GetUser`).
    pub name: String,
    /// Whether the client sends a stream.
    pub client_streaming: bool,
    /// Whether the server answers with a stream.
    pub server_streaming: bool,
    /// Who may call it.
    pub access: Access,
    /// Labels after merging service and method level, ordered by key.
    pub labels: BTreeMap<String, String>,
    /// `timeout`, method over service.
    pub timeout: Option<Duration>,
    /// `max_timeout`, method over service.
    pub max_timeout: Option<Duration>,
    /// `max_concurrency`, method over service.
    pub max_concurrency: Option<u32>,
    /// `rate_limit`, method over service.
    pub rate_limit: Option<RateLimit>,
    /// How generated clients retry it: `retry`, method over service, else
    /// the default of an idempotent method; `None` for streaming methods.
    pub retry: Option<RetryPolicy>,
    /// Its stream limits, method over service (none for a unary method).
    pub stream: StreamLimits,
    /// `criticality`, method over service.
    pub criticality: Criticality,
    /// The method's own message-typed options of other packages (an
    /// `extend google.protobuf.MethodOptions` of the user's), by full name,
    /// each its value encoded: carried into the policy table for the user's
    /// layers to decode.
    pub options: Vec<(String, Vec<u8>)>,
    /// Whether its input message has `buf.validate` rules (its requests
    /// are checked before the handler).
    pub validated: bool,
    /// Its HTTP routes (`google.api.http`), the main one first.
    pub http: Vec<HttpRoute>,
    /// The request message's full name.
    pub input: String,
    /// The response message's full name.
    pub output: String,
}

/// A method's client retry policy, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, 2 to 5.
    pub max_attempts: u32,
    /// The pause before the first retry.
    pub initial_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
    /// How much the pause grows after each retry.
    pub backoff_multiplier: f64,
    /// The codes retried, by their names in the gRPC spec (`UNAVAILABLE`).
    pub retryable_codes: Vec<String>,
}

impl RetryPolicy {
    /// What a method marked idempotent (or without side effects) gets when
    /// it sets no `retry`.
    pub fn idempotent_default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            retryable_codes: vec!["UNAVAILABLE".to_owned()],
        }
    }
}

/// The status codes by their names in the gRPC spec, `OK` aside.
const CODE_NAMES: [&str; 16] = [
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A method's `rate_limit`, checked and with its defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    /// Calls per second on average.
    pub per_second: f64,
    /// Calls at once after a quiet period (at least 1).
    pub burst: u32,
    /// Whose calls share a bucket.
    pub key: RateKey,
}

/// Whose calls share a rate limit's bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateKey {
    /// Every call of the method.
    Global,
    /// The caller's IP address.
    Peer,
    /// The access token's `sub`.
    Subject,
    /// The access token's claim of this name.
    Claim(String),
}

impl RateKey {
    /// The key as written in the annotation.
    pub fn to_annotation(&self) -> String {
        match self {
            RateKey::Global => "global".to_owned(),
            RateKey::Peer => "peer".to_owned(),
            RateKey::Subject => "subject".to_owned(),
            RateKey::Claim(name) => format!("claim:{name}"),
        }
    }
}

/// The smallest `rate_limit.per_second` (one call in about 12 days).
const MIN_PER_SECOND: f64 = 1e-6;

/// The resolved policies of one service.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// Fully qualified name (`user.v1.UserService`).
    pub full_name: String,
    /// Its methods, in proto order.
    pub methods: Vec<MethodSpec>,
}
