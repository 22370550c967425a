//! OpenTelemetry traces: spans exported over OTLP/HTTP when the standard variables ask
//! for it, and W3C trace context (`traceparent`) honoured on the way in and passed on
//! to every volume and peer call.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL: spans go to `<base>/v1/traces`) is set,
//! unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Otherwise nothing is
//! built: no exporter, no spans, and each request pays one atomic load ([`enabled`]).
//! The other variables are the standard ones, read by the OpenTelemetry SDK:
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or `http/json`; `grpc`
//! is refused), `OTEL_SERVICE_NAME` (default given by the role: `hoard-server`,
//! `hoard-volume`, `hoard-dev`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER` and the batch processor's
//! `OTEL_BSP_*`.
//!
//! Every HTTP request a server answers becomes one server span
//! ([`server_span`], opened by [`crate::http::observe`]) whose parent is the incoming
//! `traceparent`, if any. Calls to volumes and index peers carry the current span's
//! context ([`inject`]), so the volume's span of a replica write is a child of the
//! index's span of the client's PUT. The span also records `trace_id`, which the JSON
//! log format prints with every line logged inside the request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{span_processor_with_async_runtime::BatchSpanProcessor, Tracer};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Set once the exporter is running; read on every request.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Longest wait at a graceful stop for the last spans to reach the collector.
const FLUSH_LIMIT: Duration = Duration::from_secs(15);

/// The target of hoard's own spans (what the trace layer exports).
pub const TARGET: &str = "hoard::trace";

/// True while spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The running exporter: its tracer feeds the `tracing` layer, and [`Exporter::shutdown`]
/// flushes what is pending.
#[derive(Debug)]
pub struct Exporter {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

/// Whether the environment asks for trace export, and in which OTLP encoding. An
/// unsupported protocol or exporter is an error, not silently ignored.
fn requested(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Protocol>> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match set("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase()) {
        None => {}
        Some(v) if v == "otlp" => {}
        Some(v) if v == "none" => return Ok(None),
        Some(v) => bail!("OTEL_TRACES_EXPORTER={v} is not supported (hoard exports otlp or none)"),
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .map(|v| v.trim().to_ascii_lowercase());
    match protocol.as_deref() {
        None | Some("http/protobuf") => Ok(Some(Protocol::HttpBinary)),
        Some("http/json") => Ok(Some(Protocol::HttpJson)),
        Some(other) => bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: hoard exports traces over \
             HTTP (http/protobuf or http/json)"
        ),
    }
}

/// Starts the exporter when the environment asks for it (see the module docs), naming
/// the service `default_service` unless `OTEL_SERVICE_NAME` or a `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` says otherwise. Must run inside the tokio runtime that
/// then serves: the batch processor is a task on it.
pub fn start(default_service: &'static str) -> anyhow::Result<Option<Exporter>> {
    let Some(protocol) = requested(|name| std::env::var(name).ok())? else {
        return Ok(None);
    };
    crate::tls::install_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .context("cannot set up the OTLP trace exporter")?;
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named {
        resource = resource.with_service_name(default_service);
    }
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_span_processor(processor)
        .build();
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(Exporter { provider }))
}

impl Exporter {
    /// The tracer for `tracing-opentelemetry`'s layer.
    pub fn tracer(&self) -> Tracer {
        self.provider.tracer("hoard")
    }

    /// Exports the spans still queued and stops; waits at most [`FLUSH_LIMIT`] (a
    /// collector that does not answer cannot hold up a stop). Call it after serving has
    /// ended, outside the runtime's worker threads, while the runtime is still alive.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        let provider = self.provider;
        let spawned = std::thread::Builder::new()
            .name("otel-flush".into())
            .spawn(move || {
                let _ = tx.send(provider.shutdown());
            });
        if let Err(e) = spawned {
            tracing::warn!("traces not flushed: cannot start the flush thread: {e}");
            return;
        }
        match rx.recv_timeout(FLUSH_LIMIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("flushing traces at stop failed: {e}"),
            Err(_) => tracing::warn!(
                "traces not flushed within {}s; the collector did not answer",
                FLUSH_LIMIT.as_secs()
            ),
        }
    }
}

/// The span of one HTTP request a server answers, child of the request's
/// `traceparent` when it carries a valid one; `Span::none()` when export is off. hoard's
/// own endpoints (`/-/…`: health probes, metrics scrapes, Raft heartbeats) get a span
/// only when the request continues a trace, so that polling does not fill the
/// collector with one-span traces.
pub fn server_span<B>(role: &'static str, req: &axum::http::Request<B>) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    if req.uri().path().starts_with(crate::key::RESERVED_PREFIX)
        && !req.headers().contains_key("traceparent")
    {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = %format_args!("{role} {}", req.method()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %req.method(),
        url.path = req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        hoard.role = role,
        trace_id = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
    let _ = span.set_parent(parent);
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
    span
}

/// Records the answer's status on a [`server_span`] (5xx marks the span an error).
pub fn record_status(span: &tracing::Span, status: u16) {
    if span.is_none() {
        return;
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// `req` with the current span's `traceparent` (and `tracestate`) added, so the server
/// it goes to continues the trace. Unchanged when export is off or no span is current.
pub fn inject(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if !enabled() {
        return req;
    }
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return req;
    }
    let mut headers = reqwest::header::HeaderMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
    req.headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert!(requested(env(&[])).unwrap().is_none());
        assert!(requested(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]))
            .unwrap()
            .is_none());
        assert!(requested(env(&[("OTEL_SERVICE_NAME", "x")]))
            .unwrap()
            .is_none());
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert!(matches!(
            requested(env(&[base])).unwrap(),
            Some(Protocol::HttpBinary)
        ));
        let traces = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces",
        );
        assert!(requested(env(&[traces])).unwrap().is_some());
        assert!(requested(env(&[base, ("OTEL_SDK_DISABLED", "TRUE")]))
            .unwrap()
            .is_none());
        assert!(requested(env(&[base, ("OTEL_TRACES_EXPORTER", "none")]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn protocols() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let json = requested(env(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]));
        assert!(matches!(json.unwrap(), Some(Protocol::HttpJson)));
        let per_signal = requested(env(&[
            base,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]));
        assert!(matches!(per_signal.unwrap(), Some(Protocol::HttpBinary)));
        let grpc = requested(env(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]));
        assert!(grpc.unwrap_err().to_string().contains("http/protobuf"));
        let zipkin = requested(env(&[base, ("OTEL_TRACES_EXPORTER", "zipkin")]));
        assert!(zipkin.is_err());
    }
}
