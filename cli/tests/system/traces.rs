//! OpenTelemetry traces: one trace shows a command from its HTTP request
//! through the event store, the relay's Kafka record and the projector's span
//! for its read model. The command API, relay and projector run as processes
//! exporting OTLP/HTTP to a collector endpoint served by this test, which
//! decodes what they send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use pivotal_test_support::{TestEnv, eventually, http};
use prost::Message as _;
use serde_json::json;
use uuid::Uuid;

use crate::harness::{free_port, sign_up, spawn_process_with, terminate, wait_healthy};

/// One exported span with what the assertions need.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// Serves `POST /v1/traces` and keeps every span it receives.
async fn collector() -> (String, Arc<Mutex<Vec<Exported>>>) {
    let spans: Arc<Mutex<Vec<Exported>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                let mut kept = kept.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref()?.value.as_ref())
                        .map(|v| match v {
                            AnyValue::StringValue(s) => s.clone(),
                            other => format!("{other:?}"),
                        })
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            kept.push(Exported {
                                service: service.clone(),
                                name: span.name,
                                kind: span.kind,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                            });
                        }
                    }
                }
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_follows_a_command_to_its_read_model() {
    let env = TestEnv::new().await;
    let (collector_url, spans) = collector().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let traced = |extra: &[(&'static str, String)]| {
        let mut vars = vec![
            ("PIVOTAL_TELEMETRY__OTLP_ENDPOINT", collector_url.clone()),
            ("PIVOTAL_TELEMETRY__TRACE_SAMPLE_RATIO", "0".to_owned()),
        ];
        vars.extend_from_slice(extra);
        vars
    };
    let mut commands = spawn_process_with(
        &env,
        "command-api",
        &traced(&[("PIVOTAL_COMMAND_API__LISTEN", listen.clone())]),
    );
    let mut relay = spawn_process_with(&env, "relay", &traced(&[]));
    let mut projector = spawn_process_with(&env, "projector", &traced(&[]));
    let base = format!("http://{listen}");
    wait_healthy(&base, "the command API").await;
    let token = sign_up(&base, "Traced Ltd").await;

    // A caller's sampled trace is continued even though the process samples
    // no trace of its own (ratio 0): sampling follows the parent.
    let trace_id = Uuid::new_v4().simple().to_string();
    let caller_span = &Uuid::new_v4().simple().to_string()[..16];
    let created = http()
        .post(format!("{base}/v1/customers"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"legalName": "Traced Ltd", "currency": "NZD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let customer: serde_json::Value = created.json().await.unwrap();
    let customer_id = customer["id"].as_str().unwrap().to_owned();
    // A second trace: a route with an id names its span by the template.
    let tags_trace = Uuid::new_v4().simple().to_string();
    let tagged = http()
        .put(format!("{base}/v1/customers/{customer_id}/tags"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{tags_trace}-{caller_span}-01"))
        .json(&json!({"tags": ["traced"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.status(), 200);
    // A malformed traceparent is ignored: the command succeeds untraced.
    let untraced = http()
        .post(format!("{base}/v1/customers"))
        .bearer_auth(&token)
        .header("traceparent", "00-not-a-trace-01")
        .json(&json!({"legalName": "Untraced Ltd", "currency": "NZD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(untraced.status(), 201);
    let untraced: serde_json::Value = untraced.json().await.unwrap();

    // The stored event carries the trace context of the command's span.
    let stored: HashMap<String, Option<String>> = sqlx::query_as(
        "SELECT aggregate_id, metadata::jsonb ->> 'traceparent' FROM events
         WHERE event_type = 'customer.created'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let traceparent = stored[&customer_id].clone().unwrap();
    assert_eq!(traceparent.split('-').nth(1), Some(trace_id.as_str()));
    // The other command started a trace of its own that is not sampled
    // (ratio 0); its context still travels, marked unsampled, so that no later
    // hop records it either.
    if let Some(other) = &stored[untraced["id"].as_str().unwrap()] {
        let fields: Vec<&str> = other.split('-').collect();
        assert_ne!(fields[1], trace_id);
        assert_eq!(fields[3], "00", "{other}");
    }

    eventually(Duration::from_secs(60), || async {
        let (count,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM rm_customers WHERE id::text = $1")
                .bind(&customer_id)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        (count == 1).then_some(())
    })
    .await
    .expect("the customer reaches its read model");
    // Stopping each process sends what its exporter still holds.
    for process in [&mut commands, &mut relay, &mut projector] {
        let status = terminate(process, Duration::from_secs(30)).expect("stopped");
        assert!(status.success(), "{status:?}");
    }
    let spans = spans.lock().unwrap().clone();
    let trace: Vec<&Exported> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let find = |service: &str, name: &str| {
        trace
            .iter()
            .find(|s| s.service == service && s.name == name)
            .copied()
            .unwrap_or_else(|| panic!("no {service} span `{name}` in {trace:#?}"))
    };
    let request = find("command-api", "POST /v1/customers");
    assert_eq!(request.parent_span_id, caller_span, "continues the caller");
    assert_eq!(request.kind, SpanKind::Server as i32);
    let execute = find("command-api", "execute customer");
    let topic = format!("{}.customer.events", env.settings.kafka.topic_prefix);
    let publish = find("relay", &format!("publish {topic}"));
    assert_eq!(publish.kind, SpanKind::Producer as i32);
    assert_eq!(
        publish.parent_span_id, execute.span_id,
        "the relay continues the stored context of the command's span"
    );
    let project = find("projector", "project customer.created");
    assert_eq!(project.kind, SpanKind::Consumer as i32);
    assert_eq!(
        project.parent_span_id, publish.span_id,
        "the projector continues the context of the Kafka record"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == tags_trace && s.name == "PUT /v1/customers/{id}/tags"),
        "no span named by the route template in {spans:#?}"
    );
    // Each span's parent is in the trace, up to the caller's span.
    let ids: Vec<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    for span in &trace {
        assert!(
            span.parent_span_id == caller_span || ids.contains(&span.parent_span_id.as_str()),
            "{span:?} has a parent outside the trace"
        );
    }
    // Nothing of the untraced command was exported (ratio 0, no parent).
    assert!(
        spans
            .iter()
            .all(|s| s.service != "relay" || [&trace_id, &tags_trace].contains(&&s.trace_id)),
        "{spans:#?}"
    );
}
