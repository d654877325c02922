//! OpenTelemetry traces: the OTLP/HTTP exporter (off unless an endpoint is
//! configured) and W3C Trace Context propagation across every hop a change
//! takes, so that one trace shows a command from its HTTP request to its read
//! model:
//!
//! 1. the APIs continue a caller's `traceparent` header ([`http_span`]);
//! 2. the event store records the current span's context beside each event
//!    ([`current_context`], stored under [`TRACEPARENT`] / [`TRACESTATE`]);
//! 3. the relay's publish span continues it and the Kafka record carries its
//!    own context in headers of the same names;
//! 4. the projector's span for the event continues the record's context
//!    ([`set_parent`]).
//!
//! With tracing off, spans carry no OpenTelemetry context: nothing is stored
//! and no header is set, and the code paths stay the same.

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use pivotal_settings::TelemetrySettings;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Name of the W3C `traceparent` field: HTTP header, stored metadata key and
/// Kafka header alike.
pub const TRACEPARENT: &str = "traceparent";
/// Name of the W3C `tracestate` field.
pub const TRACESTATE: &str = "tracestate";

/// Why the trace exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceSetupError {
    #[error("telemetry.trace_sample_ratio must be between 0 and 1, not {0}")]
    SampleRatio(f64),
    #[error("telemetry.otlp_endpoint must be an http(s) URL, not `{0}`")]
    Endpoint(String),
    #[error("the OTLP exporter could not be built: {0}")]
    Exporter(String),
}

/// The exporter of one process; [`Tracer::shutdown`] sends what is still
/// buffered.
#[derive(Debug)]
pub struct Tracer {
    provider: SdkTracerProvider,
}

impl Tracer {
    /// Builds the batch exporter to `{otlp_endpoint}/v1/traces`, or `None`
    /// when no endpoint is configured. `service` becomes `service.name`.
    pub fn from_settings(
        settings: &TelemetrySettings,
        service: &'static str,
    ) -> Result<Option<Self>, TraceSetupError> {
        let ratio = settings.trace_sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(TraceSetupError::SampleRatio(ratio));
        }
        let base = settings.otlp_endpoint.trim();
        if base.is_empty() {
            return Ok(None);
        }
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TraceSetupError::Endpoint(base.to_owned()));
        }
        let endpoint = format!("{}/v1/traces", base.trim_end_matches('/'));
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TraceSetupError::Exporter(e.to_string()))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(resource)
            .build();
        Ok(Some(Self { provider }))
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("pivotal-flow"))
    }

    /// Exports every finished span still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("trace exporter did not shut down cleanly: {error}");
        }
    }
}

/// Collects injected fields.
struct Fields(Vec<(&'static str, String)>);

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        if !value.is_empty() {
            self.0.push((key, value));
        }
    }
}

/// Makes `span` continue the trace whose context `lookup` yields for
/// [`TRACEPARENT`] / [`TRACESTATE`]. A missing or malformed `traceparent`
/// leaves the span a root.
pub fn set_parent<'a>(span: &tracing::Span, lookup: impl Fn(&str) -> Option<&'a str>) {
    let fields: std::collections::HashMap<String, String> = [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|key| Some((key.to_owned(), lookup(key)?.to_owned())))
        .collect();
    if fields.is_empty() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&fields);
    if context.span().span_context().is_valid() {
        // Only fails when the span is disabled; nothing to continue then.
        let _ = span.set_parent(context);
    }
}

/// The current span's trace context as `traceparent` (and `tracestate`)
/// fields; empty when tracing is off or the span is not recorded.
pub fn current_context() -> Vec<(&'static str, String)> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut fields = Fields(Vec::new());
    TraceContextPropagator::new().inject_context(&context, &mut fields);
    fields.0
}

/// The server span of an HTTP request, continuing the caller's
/// `traceparent`, named by method and route template (not the raw path, so
/// that span names stay few). Used as `TraceLayer::make_span_with`.
pub fn http_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let method = request.method().as_str();
    let path = request.uri().path();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or(path, axum::extract::MatchedPath::as_str);
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let headers = request.headers();
    set_parent(&span, |key| {
        headers.get(key).and_then(|value| value.to_str().ok())
    });
    span
}

/// Records the status of the answer on the span made by [`http_span`]
/// (`TraceLayer::on_response`); 5xx marks the span as failed.
pub fn http_response<B>(
    response: &axum::http::Response<B>,
    latency: std::time::Duration,
    span: &tracing::Span,
) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(
        status = status.as_u16(),
        latency_ms = latency.as_millis(),
        "answered"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `f` with an OpenTelemetry layer that records (and exports nowhere).
    fn traced<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f)
    }

    fn parts(traceparent: &str) -> Vec<String> {
        traceparent.split('-').map(str::to_owned).collect()
    }

    #[test]
    fn a_span_continues_the_given_parent() {
        let fields = traced(|| {
            let span = tracing::info_span!("child");
            set_parent(&span, |key| (key == TRACEPARENT).then_some(PARENT));
            let _entered = span.enter();
            current_context()
        });
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert_eq!(fields[0].0, TRACEPARENT);
        let (own, parent) = (parts(&fields[0].1), parts(PARENT));
        assert_eq!(own[1], parent[1], "same trace");
        assert_ne!(own[2], parent[2], "a span of its own");
        assert_eq!(own[3], "01", "sampled, as its parent");
    }

    #[test]
    fn a_malformed_parent_starts_a_new_trace() {
        let fields = traced(|| {
            let span = tracing::info_span!("root");
            set_parent(&span, |_| Some("00-zz-00f067aa0ba902b7-01"));
            let _entered = span.enter();
            current_context()
        });
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert_ne!(parts(&fields[0].1)[1], parts(PARENT)[1]);
    }

    #[test]
    fn without_tracing_nothing_is_propagated() {
        let span = tracing::info_span!("untraced");
        set_parent(&span, |_| Some(PARENT));
        let _entered = span.enter();
        assert!(current_context().is_empty());
    }

    #[test]
    fn settings_are_checked() {
        let settings = |endpoint: &str, ratio: f64| TelemetrySettings {
            otlp_endpoint: endpoint.into(),
            trace_sample_ratio: ratio,
        };
        assert!(matches!(
            Tracer::from_settings(&settings("", 1.0), "test"),
            Ok(None)
        ));
        assert!(matches!(
            Tracer::from_settings(&settings("", 1.5), "test"),
            Err(TraceSetupError::SampleRatio(_))
        ));
        assert!(matches!(
            Tracer::from_settings(&settings("collector:4318", 1.0), "test"),
            Err(TraceSetupError::Endpoint(_))
        ));
    }
}
