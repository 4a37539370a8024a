//! Tracing and logs: OpenTelemetry spans exported over OTLP, and log lines
//! that carry the trace id of the span they were written in.
//!
//! [`init`] installs, from the `[telemetry]` section of the [`Config`]:
//!
//! - a [`tracing`] subscriber whose log lines are human-readable or JSON
//!   (`telemetry.log_format`), filtered by `telemetry.log_filter`
//!   (`EnvFilter` syntax, default `info`), each carrying `trace_id` and
//!   `span_id` when written inside a span;
//! - a [`tracing-opentelemetry`] layer feeding an OpenTelemetry tracer whose
//!   sampler is parent-based with ratio `telemetry.sampling_ratio` for root
//!   spans, and whose resource has `service.name` = `service.name` plus the
//!   attributes of `[telemetry.resource]`;
//! - when `telemetry.otlp_endpoint` is set, an OTLP/gRPC exporter (tonic)
//!   behind a batch span processor. Without an endpoint the server spans
//!   are not recorded, since they would go nowhere: a call still gets trace
//!   and span ids (log lines carry them, and the calls it makes continue the
//!   trace with its sampling decision).
//!
//! Keel's own spans come from the server [pipeline](crate::pipeline) (one
//! server span per RPC, its first step) and from the client
//! layer of generated clients (one client span per call, whose context is
//! injected into the request as W3C `traceparent`/`tracestate`). Both are
//! named `package.Service/Method` and carry the OpenTelemetry RPC attributes
//! `rpc.system = "grpc"`, `rpc.service`, `rpc.method` and
//! `rpc.grpc.status_code`. Following the semantic conventions, a client span
//! is marked failed for every code but `OK`, a server span only for
//! `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`
//! and `DATA_LOSS`.
//!
//! Server spans are made with the OpenTelemetry SDK directly (sampled first,
//! so an unsampled call costs little) and their context is attached while
//! the handler runs, so the handler's own `tracing` spans, its log lines and
//! its outgoing calls belong to the trace; it also carries the call's
//! [`deadline`], which those calls inherit. Client spans are `tracing` spans
//! with target [`RPC_TARGET`] at level `DEBUG`: exported whatever the log
//! filter, printed only when it asks for them (`keel_rpc::rpc=debug`).
//!
//! Every subscriber built by [`builder`] carries its own tracer, found
//! through the current `tracing` dispatcher: several services in one process
//! (each on its own thread with [`tracing::dispatcher::set_default`]) export
//! under their own service names. A subscriber assembled by hand gets no
//! Keel server spans.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config: keel_rpc::config::Config = keel_rpc::config::Config::load("", None)?;
//! let mut telemetry = keel_rpc::telemetry::init(&config)?;
//! // … serve …
//! telemetry.shutdown().await?; // flush the spans still queued
//! # Ok(()) }
//! ```
//!
//! [`tracing-opentelemetry`]: https://docs.rs/tracing-opentelemetry

mod client_span;
pub(crate) mod criticality;
pub mod deadline;
mod format;
pub mod propagation;
mod sampler;
mod server_span;
mod status;
mod tracer;

use std::io;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Dispatch;
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, ParseError, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

pub use client_span::RPC_TARGET;
pub(crate) use client_span::{client_span, end_client_span};
pub use format::current_ids;
pub use sampler::RatioSampler;
pub(crate) use server_span::{call_context, end_server_span};
use tracer::{SampledIds, TracerHandle};

use crate::config::{ClientTlsConfig, Config, TelemetryConfig};
use format::EventFormat;

/// Instrumentation scope name of Keel's spans.
pub const SCOPE: &str = "keel";

/// Why telemetry could not be set up or shut down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// `telemetry.log_filter` is not a valid filter.
    #[error("telemetry.log_filter: {0}")]
    Filter(#[from] ParseError),
    /// The OTLP exporter could not be built.
    #[error("telemetry.otlp_endpoint {endpoint:?}: {source}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// What the exporter said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// `client.tls`, which an `https://` endpoint is called with, does not load.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// An endpoint is configured but there is no Tokio runtime to run the
    /// exporter's gRPC channel on.
    #[error(
        "telemetry.otlp_endpoint is set but no Tokio runtime is running: initialize telemetry from inside the runtime"
    )]
    NoRuntime,
    /// A global subscriber was already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized(#[from] tracing::dispatcher::SetGlobalDefaultError),
    /// Flushing or shutting down the tracer provider failed (spans may be lost).
    #[error("{what} the tracer provider: {source}")]
    Provider {
        /// `flushing` or `shutting down`.
        what: &'static str,
        /// What the SDK said.
        source: OTelSdkError,
    },
}

/// Sets up logs and tracing from `config` and installs them for the whole
/// process: the global `tracing` subscriber, the global OpenTelemetry tracer
/// provider and the W3C trace-context propagator. Logs go to standard output.
///
/// Call it from inside the Tokio runtime when `telemetry.otlp_endpoint` is
/// set (the exporter's channel runs on it). Keep the returned guard for the
/// life of the process: dropping it flushes and shuts the exporter down;
/// [`TelemetryGuard::shutdown`] does the same and reports errors.
pub fn init<App>(config: &Config<App>) -> Result<TelemetryGuard, TelemetryError> {
    builder(config).install()
}

/// A [`TelemetryBuilder`] for `config`, to choose where logs go or to get the
/// subscriber without installing it globally.
pub fn builder<App>(config: &Config<App>) -> TelemetryBuilder<'_, fn() -> io::Stdout> {
    TelemetryBuilder {
        service: &config.service.name,
        telemetry: &config.telemetry,
        client_tls: &config.client.tls,
        writer: io::stdout,
    }
}

/// Builds the telemetry of one service; made by [`builder`].
#[derive(Debug)]
pub struct TelemetryBuilder<'a, W> {
    service: &'a str,
    telemetry: &'a TelemetryConfig,
    /// For an `https://` collector.
    client_tls: &'a ClientTlsConfig,
    writer: W,
}

impl<'a, W> TelemetryBuilder<'a, W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    /// Writes log lines to `writer` instead of standard output.
    pub fn writer<W2>(self, writer: W2) -> TelemetryBuilder<'a, W2>
    where
        W2: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        TelemetryBuilder {
            service: self.service,
            telemetry: self.telemetry,
            client_tls: self.client_tls,
            writer,
        }
    }

    /// Builds the subscriber without installing it: use it with
    /// [`tracing::dispatcher::set_default`] (one thread) or
    /// [`tracing::dispatcher::set_global_default`]. Useful for tests and for
    /// several services in one process, each with its own service name.
    pub fn build(self) -> Result<(Dispatch, TelemetryGuard), TelemetryError> {
        let settings = self.telemetry;
        let provider = tracer_provider(self.service, settings, self.client_tls)?;
        let tracer = provider.tracer(SCOPE);
        let exporting = settings.otlp_endpoint.is_some();
        // Holds the tracer for the pipeline's server spans; sees no event.
        let handle = TracerHandle::new(tracer.clone(), sampler(settings), exporting)
            .with_filter(LevelFilter::OFF);
        let spans = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Keel's RPC spans always; other spans as the log filter says.
            // (`Targets`, unlike a closure, lets tracing cache which callsites
            // are off, so hyper's and h2's trace events cost nothing.)
            .with_filter(
                Targets::new()
                    .with_target(RPC_TARGET, LevelFilter::DEBUG)
                    .or(EnvFilter::try_new(&settings.log_filter)?),
            );
        let logs = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(EventFormat {
                format: settings.log_format,
            })
            .with_writer(self.writer)
            .with_filter(EnvFilter::try_new(&settings.log_filter)?);
        // The handle outermost: the pipeline finds it with one downcast.
        let subscriber = Registry::default().with(spans).with(logs).with(handle);
        Ok((
            Dispatch::new(subscriber),
            TelemetryGuard {
                provider: Some(provider),
            },
        ))
    }

    /// Builds the subscriber and installs it for the whole process, with the
    /// tracer provider and the W3C propagator as OpenTelemetry's globals.
    pub fn install(self) -> Result<TelemetryGuard, TelemetryError> {
        let (dispatch, guard) = self.build()?;
        tracing::dispatcher::set_global_default(dispatch)?;
        if let Some(provider) = &guard.provider {
            opentelemetry::global::set_tracer_provider(provider.clone());
        }
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(guard)
    }
}

/// The sampler of `settings`: the parent's decision when there is a parent,
/// `sampling_ratio` of the trace ids otherwise.
pub fn sampler(settings: &TelemetryConfig) -> RatioSampler {
    RatioSampler::new(settings.sampling_ratio)
}

fn tracer_provider(
    service_name: &str,
    settings: &TelemetryConfig,
    tls: &crate::config::ClientTlsConfig,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attributes(
            settings
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    let mut provider = SdkTracerProvider::builder()
        .with_sampler(sampler(settings))
        .with_id_generator(SampledIds::default())
        .with_resource(resource);
    if let Some(endpoint) = &settings.otlp_endpoint {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TelemetryError::NoRuntime);
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(settings.export_timeout);
        if endpoint.starts_with("https://") {
            // The collector's certificate is checked as generated clients check theirs.
            use opentelemetry_otlp::WithTonicConfig as _;
            exporter = exporter.with_tls_config(crate::tls::client_tls(tls)?);
        }
        let exporter = exporter
            .build()
            .map_err(|source| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                source,
            })?;
        provider = provider.with_batch_exporter(exporter);
    }
    Ok(provider.build())
}

/// Keeps the tracer provider alive; flushes and shuts it down when dropped.
///
/// Dropping it blocks until the queued spans are exported (or the export
/// times out) on a multi-threaded runtime or outside any runtime. Inside a
/// current-thread runtime it cannot block the thread that drives the
/// exporter, so the flush runs in the background and may be cut short when
/// the process exits: call [`shutdown`](Self::shutdown) there.
#[derive(Debug)]
#[must_use = "dropping the guard shuts tracing down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports the spans finished so far.
    pub async fn flush(&self) -> Result<(), TelemetryError> {
        let Some(provider) = self.provider.clone() else {
            return Ok(());
        };
        off_runtime(move || provider.force_flush())
            .await
            .map_err(|source| TelemetryError::Provider {
                what: "flushing",
                source,
            })
    }

    /// Exports the spans still queued and shuts the exporter down. Later
    /// spans are dropped. Calling it again does nothing.
    pub async fn shutdown(&mut self) -> Result<(), TelemetryError> {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        off_runtime(move || provider.shutdown())
            .await
            .map_err(|source| TelemetryError::Provider {
                what: "shutting down",
                source,
            })
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let Some(provider) = self.provider.take() else {
            return;
        };
        let result = match Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| provider.shutdown())
            }
            Ok(_) => {
                std::thread::spawn(move || provider.shutdown());
                Ok(())
            }
            Err(_) => provider.shutdown(),
        };
        if let Err(error) = result {
            eprintln!("keel: shutting the tracer provider down: {error}");
        }
    }
}

/// Runs a blocking SDK call where it cannot stall the runtime that drives
/// the exporter's channel.
async fn off_runtime(
    f: impl FnOnce() -> Result<(), OTelSdkError> + Send + 'static,
) -> Result<(), OTelSdkError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())))
}
