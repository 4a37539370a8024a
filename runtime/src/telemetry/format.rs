//! Log line formats: human-readable or JSON, each carrying the trace and
//! span id of the OpenTelemetry span the event happened in.

use std::fmt;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// The event formatter Keel installs: [`LogFormat::Human`] or [`LogFormat::Json`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventFormat {
    pub(crate) format: LogFormat,
}

/// The trace and span id of the OpenTelemetry span current on this thread,
/// if there is one (sampled or not: ids exist either way).
pub fn current_ids() -> Option<(TraceId, SpanId)> {
    opentelemetry::Context::map_current(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
    })
}

impl<S, N> FormatEvent<S, N> for EventFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match self.format {
            LogFormat::Human => human(ctx, writer, event),
            LogFormat::Json => json(ctx, writer, event),
        }
    }
}

/// `2026-01-01T00:00:00.000000Z  INFO span{a=1}:inner: target: message k=v trace_id=… span_id=…`
fn human<S, N>(ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    SystemTime.format_time(&mut writer)?;
    write!(writer, " {:>5} ", meta.level())?;
    if let Some(scope) = ctx.event_scope() {
        let mut any = false;
        for span in scope.from_root() {
            write!(writer, "{}", span.name())?;
            if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                && !fields.is_empty()
            {
                write!(writer, "{{{fields}}}")?;
            }
            writer.write_char(':')?;
            any = true;
        }
        if any {
            writer.write_char(' ')?;
        }
    }
    write!(writer, "{}: ", meta.target())?;
    ctx.format_fields(writer.by_ref(), event)?;
    if let Some((trace_id, span_id)) = current_ids() {
        write!(writer, " trace_id={trace_id} span_id={span_id}")?;
    }
    writeln!(writer)
}

/// One JSON object per line:
/// `{"timestamp","level","target","message","fields","spans","trace_id","span_id"}`.
fn json<S, N>(ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    let mut timestamp = String::new();
    SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
    let mut visitor = JsonVisitor::default();
    event.record(&mut visitor);

    let mut line = Map::new();
    line.insert("timestamp".into(), timestamp.into());
    line.insert("level".into(), meta.level().as_str().into());
    line.insert("target".into(), meta.target().into());
    line.insert("message".into(), visitor.message.unwrap_or_default().into());
    if !visitor.fields.is_empty() {
        line.insert("fields".into(), Value::Object(visitor.fields));
    }
    if let Some(scope) = ctx.event_scope() {
        let spans: Vec<Value> = scope.from_root().map(|s| s.name().into()).collect();
        if !spans.is_empty() {
            line.insert("spans".into(), spans.into());
        }
    }
    if let Some((trace_id, span_id)) = current_ids() {
        line.insert("trace_id".into(), trace_id.to_string().into());
        line.insert("span_id".into(), span_id.to_string().into());
    }
    let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
    writeln!(writer, "{text}")
}

/// Collects an event's fields as JSON values; `message` apart.
#[derive(Default)]
struct JsonVisitor {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}
