//! Traces end to end: the platform's spans, exported over OTLP to the test
//! binary's receiver (`harness::otlp`), join an order's placement, its
//! saga's step calls on both sides and the consumers that processed its
//! events, by trace id (a call's server span is the child of the
//! orchestrator's client span) or by links (a consumer's span links to the
//! span that appended the events it processed).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, ensure};
use domain::saga::{SagaAction, SagaStep, api};
use harness::eventually;
use harness::otlp::{self, Kind, Span};
use harness::platform::Platform;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::write_api::address;

const SETTLE: Duration = Duration::from_secs(90);

/// The spans of the traces reachable from `trace_id` through links, in
/// either direction (a span in one trace linking to a span in another
/// joins them).
fn joined(spans: &[Span], trace_id: &str) -> Vec<Span> {
    let mut traces = HashSet::from([trace_id.to_owned()]);
    loop {
        let before = traces.len();
        for span in spans {
            let linked = span.links.iter().any(|(trace, _)| traces.contains(trace));
            if linked || traces.contains(&span.trace_id) {
                traces.insert(span.trace_id.clone());
                traces.extend(span.links.iter().map(|(trace, _)| trace.clone()));
            }
        }
        if traces.len() == before {
            break;
        }
    }
    spans
        .iter()
        .filter(|span| traces.contains(&span.trace_id))
        .cloned()
        .collect()
}

async fn post(platform: &Platform, path: &str, body: Value) -> Value {
    let response = platform
        .client
        .post(format!("{}{path}", platform.command.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Places an order that goes through, and waits until its saga completed.
async fn a_completed_order(platform: &Platform) -> String {
    post(
        platform,
        "/v1/products",
        json!({"sku": "traced", "name": "Traced", "price_cents": 250, "initial_stock": 5}),
    )
    .await;
    let customer = post(
        platform,
        "/v1/customers",
        json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .await["customer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    post(
        platform,
        &format!("/v1/customers/{customer}/deposits"),
        json!({"amount_cents": 10_000}),
    )
    .await;
    let order = post(
        platform,
        "/v1/orders",
        json!({"customer_id": customer, "lines": [{"sku": "traced", "quantity": 2}],
               "shipping_address": address("GB")}),
    )
    .await["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(SETTLE, "the saga completed", || async {
        let response = platform
            .client
            .get(format!("{}/v1/sagas/{order}", platform.query.url))
            .send()
            .await?;
        ensure!(response.status() == StatusCode::OK, "{}", response.status());
        let saga: Value = response.json().await?;
        ensure!(saga["status"] == "completed", "{saga}");
        Ok(())
    })
    .await;
    order
}

/// The `traceparent` stored with the order's `OrderPlaced`: the
/// placement's server span, as (trace id, span id).
async fn placement_context(platform: &Platform, order: &str) -> (String, String) {
    let events: Value = platform
        .client
        .get(format!(
            "{}/v1/streams/order-{order}/events",
            platform.command.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let placed = &events["events"][0];
    assert_eq!(placed["type"], "OrderPlaced", "{events}");
    let traceparent = placed["metadata"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent stored with the placement: {placed}"));
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn an_orders_placement_step_calls_and_projections_are_joined_by_trace_and_links() {
    let (collector, _recording) = otlp::record();
    let platform = Platform::start().await;
    let order = a_completed_order(&platform).await;
    let (trace_id, placement_span) = placement_context(&platform, &order).await;
    let (trace_id, placement_span) = (trace_id.as_str(), placement_span.as_str());
    let calls: Vec<&str> = SagaStep::ALL
        .iter()
        .map(|step| api::of(SagaAction::Run(*step)).route)
        .chain([api::CONFIRM.route])
        .collect();

    // The exporter sends its batches every few seconds.
    eventually(SETTLE, "the order's spans exported", || async {
        let spans = joined(&collector.spans(), trace_id);
        let placement = spans
            .iter()
            .find(|span| span.span_id == placement_span)
            .context("no placement span yet")?;
        ensure!(
            placement.kind == Kind::Server && placement.name == "POST /v1/orders",
            "the placement's span: {placement:?}"
        );
        ensure!(placement.attribute("http.route") == Some("/v1/orders"));
        ensure!(placement.attribute("http.response.status_code") == Some("202"));
        ensure!(
            spans.iter().any(|span| span.trace_id == trace_id
                && span.parent_span_id == placement_span
                && span.name == "event_store.append"),
            "the placement's append is not its child"
        );

        // Each step call: the orchestrator's client span, and
        // command-service's server span as its child, in one trace.
        for route in &calls {
            let name = format!("POST {route}");
            let client = spans
                .iter()
                .find(|span| {
                    span.kind == Kind::Client
                        && span.name == name
                        && span.attribute("order_id") == Some(order.as_str())
                })
                .with_context(|| format!("no client span {name} for the order"))?;
            ensure!(
                spans.iter().any(|span| span.kind == Kind::Server
                    && span.name == name
                    && span.trace_id == client.trace_id
                    && span.parent_span_id == client.span_id),
                "no server span {name} under the client's {client:?}"
            );
        }

        // The relay's publication and both consumers' processing link to
        // the placement's span.
        let linking = |kind: Kind| {
            spans.iter().filter(move |span| {
                span.kind == kind
                    && span
                        .links
                        .iter()
                        .any(|(trace, span)| *trace == trace_id && *span == placement_span)
            })
        };
        ensure!(
            linking(Kind::Producer).count() > 0,
            "no publication links to the placement"
        );
        let groups: Vec<&str> = linking(Kind::Consumer)
            .filter_map(|span| span.attribute("messaging.consumer.group.name"))
            .collect();
        for consumer in ["projector", "saga-orchestrator"] {
            ensure!(
                groups.iter().any(|group| group.ends_with(consumer)),
                "no {consumer} span links to the placement: {groups:?}"
            );
        }
        Ok(())
    })
    .await;
}
