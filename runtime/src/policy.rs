//! Per-method policies, resolved by `keel-rpc-codegen` at build time from the
//! proto annotations and emitted as `static` tables in generated code.

use std::time::Duration;

/// How a method streams; the value of the `grpc_type` metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// A request stream, one response.
    ClientStreaming,
    /// One request, a response stream.
    ServerStreaming,
    /// Streams both ways.
    BidiStreaming,
}

impl MethodKind {
    /// The `grpc_type` label value, as go-grpc-prometheus writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            MethodKind::Unary => "unary",
            MethodKind::ClientStreaming => "client_stream",
            MethodKind::ServerStreaming => "server_stream",
            MethodKind::BidiStreaming => "bidi_stream",
        }
    }
}

/// How much a method's calls matter when a server sheds load, the SRE
/// book's four (`criticality`): lower ones are refused first. A call's
/// criticality goes with the calls its handler makes through generated
/// clients (`keel-criticality` metadata), so batch work stays sheddable
/// all the way down.
///
/// ```
/// use keel_rpc::codegen::Criticality;
/// assert_eq!(Criticality::parse(b"SHEDDABLE"), Some(Criticality::Sheddable));
/// assert_eq!(Criticality::default().as_str(), "CRITICAL");
/// assert!(Criticality::Sheddable.share_percent() < Criticality::Critical.share_percent());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Criticality {
    /// Shed last: a failure is a user-visible outage.
    CriticalPlus,
    /// What a user waits for (the default).
    #[default]
    Critical,
    /// Batch work whose failure is retried, soon.
    SheddablePlus,
    /// Work that may fail and wait: shed first.
    Sheddable,
}

impl Criticality {
    /// Its name, as `keel-criticality` carries it and the proto spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Criticality::CriticalPlus => "CRITICAL_PLUS",
            Criticality::Critical => "CRITICAL",
            Criticality::SheddablePlus => "SHEDDABLE_PLUS",
            Criticality::Sheddable => "SHEDDABLE",
        }
    }

    /// The criticality named `value`, if it is one.
    pub fn parse(value: &[u8]) -> Option<Self> {
        match value {
            b"CRITICAL_PLUS" => Some(Criticality::CriticalPlus),
            b"CRITICAL" => Some(Criticality::Critical),
            b"SHEDDABLE_PLUS" => Some(Criticality::SheddablePlus),
            b"SHEDDABLE" => Some(Criticality::Sheddable),
            _ => None,
        }
    }

    /// The share of a method's `max_concurrency` its calls of this
    /// criticality may fill, in percent (rounded up, so at least one call):
    /// the sheddable ones leave room, so that no critical call is refused
    /// while a sheddable one is admitted.
    pub const fn share_percent(self) -> u32 {
        match self {
            Criticality::CriticalPlus | Criticality::Critical => 100,
            Criticality::SheddablePlus => 75,
            Criticality::Sheddable => 50,
        }
    }
}

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone; no token is read.
    Public,
    /// A valid access token carrying every one of `scopes` (possibly none).
    Token {
        /// Scopes that must all be present in the token's `scope` claim.
        scopes: &'static [&'static str],
    },
    /// A verified client certificate (mTLS) naming one of `peers` (`spiffe://…` URI SANs,
    /// `dns:name` DNS SANs); with `scopes`, a valid access token carrying them as well.
    Peer {
        /// Workload identities allowed to call.
        peers: &'static [&'static str],
        /// Scopes of the access token also required; `None`: no token is read.
        scopes: Option<&'static [&'static str]>,
    },
}

/// The resolved policy of one method.
#[derive(Debug)]
pub struct MethodPolicy {
    /// Method name as in the proto (`GetUser`).
    pub name: &'static str,
    /// The HTTP/2 path of the method (`/user.v1.UserService/GetUser`).
    pub path: &'static str,
    /// How the method streams.
    pub kind: MethodKind,
    /// Who may call it.
    pub access: Access,
    /// Static metric labels (service labels merged with method labels),
    /// sorted by key.
    pub labels: &'static [(&'static str, &'static str)],
    /// The deadline of a call that carries no `grpc-timeout`
    /// (`keel.v1.method.timeout`); `None`: no deadline.
    pub timeout: Option<Duration>,
    /// The longest deadline a caller may ask for (`max_timeout`); a longer
    /// `grpc-timeout` is cut to it. `None`: no cap.
    pub max_timeout: Option<Duration>,
    /// How many calls of the method may run at once in one process
    /// (`max_concurrency`); more are answered `RESOURCE_EXHAUSTED` before
    /// the handler runs. `None`: no limit.
    pub max_concurrency: Option<u32>,
    /// How often the method may be called (`rate_limit`); a call over it is
    /// answered `RESOURCE_EXHAUSTED` before the handler runs. `None`: no
    /// limit.
    pub rate_limit: Option<RateLimit>,
    /// How generated clients retry the method's calls (`retry`, or the
    /// default of an idempotent method); `None`: not retried. Unary methods
    /// only.
    pub retry: Option<RetryPolicy>,
    /// How much its calls matter when load is shed (`criticality`), unless
    /// a trusted caller says otherwise.
    pub criticality: Criticality,
    /// How long a stream may run and idle, and how many messages a client
    /// may send on it (`max_stream_duration`, `stream_idle_timeout`,
    /// `max_stream_messages`). Streaming methods only.
    pub stream: StreamLimits,
    /// The method's message-typed options of other packages (your own
    /// `extend google.protobuf.MethodOptions`), by full name, each value
    /// encoded; read them with [`option`](Self::option) or an
    /// [`OptionTable`](crate::pipeline::OptionTable).
    pub options: &'static [(&'static str, &'static [u8])],
    /// Its HTTP routes (`google.api.http`), the main one first: served as
    /// REST/JSON through the same pipeline.
    pub http: &'static [HttpRoute],
}

/// The limits of a streaming method's calls, each ending the call when
/// it is passed, whatever the handler does:
///
/// ```
/// # use std::time::Duration;
/// use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, StreamLimits};
/// static WATCH: MethodPolicy = MethodPolicy {
///     stream: StreamLimits {
///         max_duration: Some(Duration::from_secs(300)),
///         idle_timeout: Some(Duration::from_secs(30)),
///         ..StreamLimits::NONE
///     },
///     ..MethodPolicy::new("Watch", "/p.v1.S/Watch", MethodKind::BidiStreaming, Access::Public)
/// };
/// assert!(WATCH.stream.any());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamLimits {
    /// How long a call may run (`max_stream_duration`): then it ends
    /// `UNAVAILABLE`, so that the client opens a new stream (on another
    /// replica, perhaps), as a connection past its age is recycled.
    pub max_duration: Option<Duration>,
    /// How long a call may go without a message either way
    /// (`stream_idle_timeout`): then it ends `DEADLINE_EXCEEDED`.
    pub idle_timeout: Option<Duration>,
    /// How many messages the client may send on one call
    /// (`max_stream_messages`, client and bidi streaming): the next fails
    /// the call `RESOURCE_EXHAUSTED`.
    pub max_messages: Option<u64>,
}

impl StreamLimits {
    /// No limits.
    pub const NONE: StreamLimits = StreamLimits {
        max_duration: None,
        idle_timeout: None,
        max_messages: None,
    };

    /// Whether any limit is set.
    pub const fn any(&self) -> bool {
        self.max_duration.is_some() || self.idle_timeout.is_some() || self.max_messages.is_some()
    }
}

/// One HTTP route of a method, as codegen parsed its `google.api.http`
/// option, with what transcoding needs: the request and response messages'
/// names and the descriptors that describe them.
#[derive(Debug)]
pub struct HttpRoute {
    /// `GET`, `POST`, … or a custom pattern's method.
    pub method: &'static str,
    /// The path template's segments.
    pub path: &'static [PathSegment],
    /// The template's `:verb` suffix.
    pub verb: Option<&'static str>,
    /// Where the body goes: `Some("*")` the whole request, `Some(field)` a
    /// top-level field, `None` no body.
    pub body: Option<&'static str>,
    /// The response field sent as the body; `None`: the whole response.
    pub response_body: Option<&'static str>,
    /// The request message's full name.
    pub input: &'static str,
    /// The response message's full name.
    pub output: &'static str,
    /// The encoded `FileDescriptorSet` holding both.
    pub descriptors: &'static [u8],
}

/// One segment of an [`HttpRoute`]'s path template.
#[derive(Debug)]
pub enum PathSegment {
    /// A literal segment.
    Literal(&'static str),
    /// `*`: one segment.
    Single,
    /// `**`: the rest of the path.
    Rest,
    /// `{field=pattern}`: the segments `pattern` matches are the value of
    /// the request field `field` (a dotted path).
    Variable {
        /// The field path.
        field: &'static str,
        /// What it matches (`*` unless the template says).
        pattern: &'static [PathSegment],
    },
}

/// How generated clients retry a method's calls, as the gRPC service
/// config's `retryPolicy` says: while a call is not committed (it failed
/// before the response headers, or the server answered with a status
/// alone) and its code is retryable, after a random part of the backoff,
/// within the call's deadline.
///
/// ```
/// # use std::time::Duration;
/// let policy = keel_rpc::codegen::RetryPolicy {
///     max_attempts: 3,
///     initial_backoff: Duration::from_millis(100),
///     max_backoff: Duration::from_secs(1),
///     backoff_multiplier: 2.0,
///     retryable_codes: &[tonic::Code::Unavailable],
/// };
/// // The most the pause before retry n may be.
/// assert_eq!(policy.backoff(1), Duration::from_millis(100));
/// assert_eq!(policy.backoff(2), Duration::from_millis(200));
/// assert_eq!(policy.backoff(9), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The pause before the first retry, at most.
    pub initial_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
    /// How much the pause grows after each retry.
    pub backoff_multiplier: f64,
    /// The codes that are retried.
    pub retryable_codes: &'static [tonic::Code],
}

impl RetryPolicy {
    /// The most the pause before retry `n` (1 for the first) may be:
    /// `min(initial_backoff * backoff_multiplier^(n-1), max_backoff)`.
    pub fn backoff(&self, n: u32) -> Duration {
        let grown = self.initial_backoff.as_secs_f64()
            * self.backoff_multiplier.powi(n.saturating_sub(1) as i32);
        Duration::try_from_secs_f64(grown)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// A method's rate limit (`keel.v1.method.rate_limit`): buckets that hold
/// `burst` calls and refill at `per_second`, one per `key`.
///
/// ```
/// let login = keel_rpc::codegen::RateLimit { per_second: 0.5, burst: 5, key: keel_rpc::codegen::RateKey::Peer };
/// assert_eq!(login.interval(), Some(std::time::Duration::from_secs(2)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Calls per second on average.
    pub per_second: f64,
    /// Calls allowed at once after a quiet period.
    pub burst: u32,
    /// Whose calls share a bucket.
    pub key: RateKey,
}

impl RateLimit {
    /// The time one call's share of the bucket takes to refill; `None` when
    /// `per_second` is not a positive rate a `Duration` can express (codegen
    /// accepts no such rate).
    pub fn interval(&self) -> Option<Duration> {
        Duration::try_from_secs_f64(1.0 / self.per_second)
            .ok()
            .filter(|interval| !interval.is_zero())
    }
}

/// Whose calls share a bucket of a [`RateLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateKey {
    /// Every call of the method in this process.
    Global,
    /// The caller's IP address.
    Peer,
    /// The access token's `sub`.
    Subject,
    /// The access token's claim of this name (calls whose token lacks it
    /// share one bucket).
    Claim(&'static str),
}

impl MethodPolicy {
    /// The policy of a method `name` at `path` with no labels, limits,
    /// retries or options: a base for policy tables written by hand (tests,
    /// a service without codegen), completed with struct update syntax.
    /// Generated tables write every field.
    ///
    /// ```
    /// use keel_rpc::codegen::{Access, MethodKind, MethodPolicy};
    /// static GET: MethodPolicy = MethodPolicy {
    ///     max_concurrency: Some(8),
    ///     ..MethodPolicy::new("Get", "/p.v1.S/Get", MethodKind::Unary, Access::Public)
    /// };
    /// assert_eq!(GET.max_concurrency, Some(8));
    /// assert!(GET.labels.is_empty() && GET.retry.is_none());
    /// ```
    pub const fn new(
        name: &'static str,
        path: &'static str,
        kind: MethodKind,
        access: Access,
    ) -> Self {
        MethodPolicy {
            name,
            path,
            kind,
            access,
            labels: &[],
            timeout: None,
            max_timeout: None,
            max_concurrency: None,
            rate_limit: None,
            retry: None,
            criticality: Criticality::Critical,
            stream: StreamLimits::NONE,
            options: &[],
            http: &[],
        }
    }

    /// The method's option `name` (`"acme.v1.audit"`) decoded as `T`, if it
    /// carries one.
    ///
    /// ```
    /// #[derive(Clone, PartialEq, prost::Message)]
    /// struct Audit {
    ///     #[prost(string, tag = "1")]
    ///     action: String,
    /// }
    /// # let method = keel_rpc::codegen::MethodPolicy { options: &[("acme.v1.audit", b"\x0a\x04read")],
    /// #   ..keel_rpc::codegen::MethodPolicy::new("Get", "/p.S/Get", keel_rpc::codegen::MethodKind::Unary, keel_rpc::codegen::Access::Public) };
    /// let audit: Audit = method.option("acme.v1.audit").unwrap().unwrap();
    /// assert_eq!(audit.action, "read");
    /// assert!(method.option::<Audit>("acme.v1.other").is_none());
    /// ```
    pub fn option<T: prost::Message + Default>(
        &self,
        name: &str,
    ) -> Option<Result<T, prost::DecodeError>> {
        let (_, value) = self.options.iter().find(|(n, _)| *n == name)?;
        Some(T::decode(*value))
    }

    /// The deadline of a call asking for `requested` (its `grpc-timeout`):
    /// what it asked, else the method's timeout, and never more than its
    /// `max_timeout`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let mut method =
    /// #   keel_rpc::codegen::MethodPolicy::new("Get", "/p.S/Get", keel_rpc::codegen::MethodKind::Unary, keel_rpc::codegen::Access::Public);
    /// method.timeout = Some(Duration::from_secs(5));
    /// method.max_timeout = Some(Duration::from_secs(30));
    /// assert_eq!(method.deadline(None), Some(Duration::from_secs(5)));
    /// assert_eq!(method.deadline(Some(Duration::from_secs(1))), Some(Duration::from_secs(1)));
    /// assert_eq!(method.deadline(Some(Duration::from_secs(60))), Some(Duration::from_secs(30)));
    /// ```
    pub fn deadline(&self, requested: Option<Duration>) -> Option<Duration> {
        let asked = requested.or(self.timeout);
        match (asked, self.max_timeout) {
            (Some(asked), Some(max)) => Some(asked.min(max)),
            (None, Some(max)) => Some(max),
            (asked, None) => asked,
        }
    }

    /// Whether calls of this method have a deadline even when they carry no
    /// `grpc-timeout`, or a shorter one than they carry.
    pub(crate) fn enforces_deadline(&self) -> bool {
        self.timeout.is_some() || self.max_timeout.is_some()
    }
}

/// The policy table of one service.
#[derive(Debug)]
pub struct ServicePolicy {
    /// Fully qualified service name (`user.v1.UserService`).
    pub name: &'static str,
    /// Every method of the service.
    pub methods: &'static [MethodPolicy],
    /// Maps a request path to its index in `methods`: a generated `match`,
    /// so a lookup neither allocates nor parses.
    pub route: fn(&str) -> Option<usize>,
}

impl ServicePolicy {
    /// The index and policy of the method a request path names, if it is one
    /// of this service's.
    #[inline]
    pub fn method(&self, path: &str) -> Option<(usize, &'static MethodPolicy)> {
        let index = self.route_index(path)?;
        Some((index, &self.methods[index]))
    }
}

impl ServicePolicy {
    /// The index in `methods` of the method a request path names.
    #[inline]
    pub fn route_index(&self, path: &str) -> Option<usize> {
        (self.route)(path).filter(|i| *i < self.methods.len())
    }
}

impl PartialEq for ServicePolicy {
    /// Policies are compared by service name: a process has one policy per service.
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
