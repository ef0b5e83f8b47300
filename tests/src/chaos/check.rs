//! The checks, all against the event store itself: the `events` table is
//! read in position order and folded here (with the domain's event types
//! for decoding, and the domain's saga fold for a saga's status), and the
//! fold is what the acknowledgements, the invariants and the read models
//! are held against.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use domain::Event;
use domain::RejectionReason;
use domain::customer::CustomerEvent;
use domain::order::OrderEvent;
use domain::product::ProductEvent;
use domain::saga::{SagaEvent, SagaState, SagaStatus};
use domain::shipment::ShipmentEvent;
use domain::stream;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::Endpoints;
use super::load::{Cancel, Catalogue, Kind, LoadRecord};

/// Events that end a saga.
const SAGA_ENDS: [&str; 3] = ["SagaCompleted", "SagaCompensated", "SagaFailed"];

/// Every order of the run's customers in the store (acknowledged or not).
pub async fn discover_orders(pg: &PgPool, catalogue: &Catalogue) -> anyhow::Result<Vec<Uuid>> {
    let customers: Vec<String> = catalogue.customers().map(Uuid::to_string).collect();
    let ids: Vec<(Option<String>,)> = sqlx::query_as(
        "select data->>'order_id' from events
         where type = 'OrderPlaced' and data->>'customer_id' = any($1)",
    )
    .bind(&customers)
    .fetch_all(pg)
    .await
    .context("finding the run's orders in the store")?;
    ids.into_iter()
        .map(|(id,)| {
            id.as_deref()
                .unwrap_or_default()
                .parse()
                .context("an OrderPlaced without a valid order_id")
        })
        .collect()
}

/// The orders whose saga has not ended in the store (no saga stream, or
/// none of its terminal events yet). Cheap: one index lookup per saga.
pub async fn unended_sagas(pg: &PgPool, orders: &[Uuid]) -> anyhow::Result<Vec<String>> {
    let streams: Vec<String> = orders.iter().map(|&id| stream::saga(id)).collect();
    let rows: Vec<(String,)> = sqlx::query_as(
        "select s.id from unnest($1::text[]) as s(id)
         where not exists (select 1 from events e where e.stream_id = s.id and e.type = any($2))",
    )
    .bind(&streams)
    .bind(SAGA_ENDS.map(str::to_owned).to_vec())
    .fetch_all(pg)
    .await
    .context("looking for sagas that have not ended")?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

#[derive(Debug, Clone, Default)]
pub struct OrderFold {
    pub customer_id: Uuid,
    /// (sku, quantity, unit price)
    pub lines: Vec<(String, i64, i64)>,
    pub total_cents: i64,
    /// `pending`, `confirmed`, `rejected` or `cancelled`.
    pub status: &'static str,
    pub rejection_reason: Option<RejectionReason>,
    pub tracking_number: Option<String>,
    pub cancellation_requested: bool,
    pub version: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ProductFold {
    pub price_cents: i64,
    pub on_hand: i64,
    pub reserved: i64,
    /// Quantity held per order.
    pub reservations: BTreeMap<Uuid, i64>,
    pub version: i64,
}

#[derive(Debug, Clone, Default)]
pub struct CustomerFold {
    pub balance_cents: i64,
    pub deposits: i64,
    pub charged: i64,
    pub refunded: i64,
    pub version: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ShipmentFold {
    pub created: bool,
    pub cancelled: bool,
    pub tracking_number: String,
}

/// Charges and refunds of one order, over every customer's stream.
#[derive(Debug, Clone, Default)]
pub struct Payments {
    pub charges: Vec<i64>,
    pub refunds: Vec<i64>,
}

/// The run's part of the store, folded.
#[derive(Debug, Default)]
pub struct StoreFold {
    pub orders: BTreeMap<Uuid, OrderFold>,
    pub products: BTreeMap<String, ProductFold>,
    pub customers: BTreeMap<Uuid, CustomerFold>,
    pub sagas: BTreeMap<Uuid, (SagaState, i64)>,
    pub shipments: BTreeMap<Uuid, ShipmentFold>,
    pub payments: BTreeMap<Uuid, Payments>,
    /// Broken invariants seen at some point of the fold: a negative
    /// figure, a second charge, a release of what was not reserved, a gap
    /// in a stream's versions, an event that does not decode.
    pub violations: Vec<String>,
    pub events: usize,
}

/// Reads every event of the run's streams (its products, customers and
/// `orders` with their sagas and shipments) in position order and folds
/// them, noting every broken invariant on the way.
pub async fn fold(
    pg: &PgPool,
    catalogue: &Catalogue,
    orders: &[Uuid],
) -> anyhow::Result<StoreFold> {
    let mut streams: Vec<String> = catalogue
        .products()
        .map(|p| stream::product(&p.sku))
        .collect();
    streams.extend(catalogue.customers().map(|&id| stream::customer(id)));
    for id in orders {
        streams.extend(["order", "saga", "shipment"].map(|kind| format!("{kind}-{id}")));
    }
    let rows: Vec<(i64, String, i64, String, Value)> = sqlx::query_as(
        "select position, stream_id, version, type, data from events
         where stream_id = any($1) order by position",
    )
    .bind(&streams)
    .fetch_all(pg)
    .await
    .context("reading the run's events")?;

    let mut fold = StoreFold {
        events: rows.len(),
        ..StoreFold::default()
    };
    let mut versions: HashMap<String, i64> = HashMap::new();
    for (position, stream, version, event_type, data) in rows {
        let last = versions.entry(stream.clone()).or_insert(0);
        if version != *last + 1 {
            fold.violations.push(format!(
                "{stream}: version {version} follows version {last} in position order (position {position})"
            ));
        }
        *last = version;
        let at = format!("{stream} v{version} ({event_type}, position {position})");
        if let Err(error) = fold.apply(&stream, version, &event_type, &data, &at) {
            fold.violations.push(format!("{at}: {error:#}"));
        }
    }
    Ok(fold)
}

impl StoreFold {
    fn apply(
        &mut self,
        stream: &str,
        version: i64,
        event_type: &str,
        data: &Value,
        at: &str,
    ) -> anyhow::Result<()> {
        let (category, id) = stream
            .split_once('-')
            .with_context(|| format!("stream id {stream} has no category"))?;
        match category {
            "product" => {
                let product = self.products.entry(id.to_owned()).or_default();
                product.version = version;
                match ProductEvent::decode(event_type, data)? {
                    ProductEvent::ProductCreated {
                        price_cents,
                        initial_stock,
                        ..
                    } => {
                        product.price_cents = price_cents;
                        product.on_hand = initial_stock;
                    }
                    ProductEvent::ProductRestocked { quantity, .. } => product.on_hand += quantity,
                    ProductEvent::InventoryReserved {
                        order_id, quantity, ..
                    } => {
                        if let Some(held) = product.reservations.insert(order_id, quantity) {
                            self.violations.push(format!(
                                "{at}: order {order_id} reserved again while it held {held}"
                            ));
                        }
                        product.reserved += quantity;
                    }
                    ProductEvent::InventoryReleased {
                        order_id, quantity, ..
                    } => {
                        match product.reservations.remove(&order_id) {
                            Some(held) if held == quantity => {}
                            held => self.violations.push(format!(
                                "{at}: order {order_id} released {quantity} while it held {held:?}"
                            )),
                        }
                        product.reserved -= quantity;
                    }
                }
                let available = product.on_hand - product.reserved;
                if product.on_hand < 0 || product.reserved < 0 || available < 0 {
                    self.violations.push(format!(
                        "{at}: on_hand {} reserved {} available {available}: a figure is negative",
                        product.on_hand, product.reserved
                    ));
                }
            }
            "customer" => {
                let customer = self.customers.entry(id.parse()?).or_default();
                customer.version = version;
                match CustomerEvent::decode(event_type, data)? {
                    CustomerEvent::CustomerRegistered { .. } => {}
                    CustomerEvent::FundsDeposited { amount_cents, .. } => {
                        customer.deposits += amount_cents;
                    }
                    CustomerEvent::PaymentCharged {
                        order_id,
                        amount_cents,
                        ..
                    } => {
                        customer.charged += amount_cents;
                        let payments = self.payments.entry(order_id).or_default();
                        payments.charges.push(amount_cents);
                        if payments.charges.len() > 1 {
                            self.violations
                                .push(format!("{at}: order {order_id} charged a second time"));
                        }
                    }
                    CustomerEvent::PaymentRefunded {
                        order_id,
                        amount_cents,
                        ..
                    } => {
                        customer.refunded += amount_cents;
                        let payments = self.payments.entry(order_id).or_default();
                        payments.refunds.push(amount_cents);
                        if payments.refunds.len() > payments.charges.len() {
                            self.violations.push(format!(
                                "{at}: order {order_id} refunded more often than charged"
                            ));
                        }
                    }
                }
                customer.balance_cents = customer.deposits - customer.charged + customer.refunded;
                if customer.balance_cents < 0 {
                    self.violations.push(format!(
                        "{at}: balance {} is negative",
                        customer.balance_cents
                    ));
                }
            }
            "order" => {
                let order = self.orders.entry(id.parse()?).or_default();
                order.version = version;
                match OrderEvent::decode(event_type, data)? {
                    OrderEvent::OrderPlaced {
                        customer_id,
                        lines,
                        total_cents,
                        ..
                    } => {
                        order.customer_id = customer_id;
                        order.lines = lines
                            .into_iter()
                            .map(|l| (l.sku, l.quantity, l.unit_price_cents))
                            .collect();
                        order.total_cents = total_cents;
                        order.status = "pending";
                    }
                    OrderEvent::OrderConfirmed {
                        tracking_number, ..
                    } => {
                        order.status = "confirmed";
                        order.tracking_number = Some(tracking_number);
                    }
                    OrderEvent::OrderRejected { reason, .. } => {
                        order.status = "rejected";
                        order.rejection_reason = Some(reason);
                    }
                    OrderEvent::OrderCancellationRequested { .. } => {
                        order.cancellation_requested = true;
                    }
                    OrderEvent::OrderCancelled { .. } => order.status = "cancelled",
                }
            }
            "saga" => {
                let event = SagaEvent::decode(event_type, data)?;
                let (state, saga_version) = self
                    .sagas
                    .entry(id.parse()?)
                    .or_insert_with(|| (SagaState::default(), 0));
                *state = std::mem::take(state).evolve(&event);
                *saga_version = version;
            }
            "shipment" => {
                let shipment = self.shipments.entry(id.parse()?).or_default();
                match ShipmentEvent::decode(event_type, data)? {
                    ShipmentEvent::ShipmentCreated {
                        tracking_number, ..
                    } => {
                        shipment.created = true;
                        shipment.tracking_number = tracking_number;
                    }
                    ShipmentEvent::ShipmentCancelled { .. } => shipment.cancelled = true,
                }
            }
            other => bail!("unexpected stream category {other}"),
        }
        Ok(())
    }

    /// Orders by final status (rejections by reason), for the figures.
    pub fn outcomes(&self) -> BTreeMap<String, usize> {
        let mut outcomes = BTreeMap::new();
        for order in self.orders.values() {
            let name = match order.rejection_reason {
                Some(reason) if order.status == "rejected" => {
                    format!("rejected ({})", reason_name(reason))
                }
                _ => order.status.to_owned(),
            };
            *outcomes.entry(name).or_default() += 1;
        }
        outcomes
    }
}

fn reason_name(reason: RejectionReason) -> &'static str {
    match reason {
        RejectionReason::InsufficientStock => "insufficient_stock",
        RejectionReason::PaymentDeclined => "payment_declined",
        RejectionReason::ShippingUnavailable => "shipping_unavailable",
    }
}

/// How an order may end, given what it was made to test and the answer to
/// its cancellation.
fn allowed_endings(kind: Kind, cancel: &Cancel) -> Vec<(&'static str, Option<RejectionReason>)> {
    use RejectionReason::*;
    let confirmed = ("confirmed", None);
    let rejected = |reason| ("rejected", Some(reason));
    let cancelled = ("cancelled", None);
    let mut endings = match kind {
        Kind::Normal => vec![confirmed],
        Kind::ContendedStock => vec![confirmed, rejected(InsufficientStock)],
        Kind::ContendedBalance => vec![confirmed, rejected(PaymentDeclined)],
        Kind::TooMuch => vec![rejected(InsufficientStock)],
        Kind::Unserved => vec![rejected(ShippingUnavailable)],
        Kind::Broke => vec![rejected(PaymentDeclined)],
    };
    match cancel {
        Cancel::NotAsked | Cancel::Unexpected(_) => {}
        // A cancellation accepted while the order was pending or confirmed
        // ends it cancelled, unless its saga was already rejecting it.
        Cancel::Acknowledged => {
            endings.retain(|(status, _)| *status == "rejected");
            endings.push(cancelled);
        }
        // Refused: the order had already been rejected.
        Cancel::Refused => endings.retain(|(status, _)| *status == "rejected"),
        Cancel::Unanswered(_) => endings.push(cancelled),
    }
    endings
}

/// Everything the store must show after the run: each acknowledged request
/// stored, each saga ended, each order's money and stock consistent with
/// how it ended (and with what it was made to test), and no failed or
/// unanswered request.
pub fn check_store(fold: &StoreFold, catalogue: &Catalogue, record: &LoadRecord) -> Vec<String> {
    let mut failures = Vec::new();
    let prices: HashMap<&str, i64> = catalogue
        .products()
        .map(|p| (p.sku.as_str(), p.price_cents))
        .collect();

    // Acknowledged requests are stored, and orders end as they must.
    for placed in &record.placed {
        let id = placed.order_id;
        let Some(order) = fold.orders.get(&id) else {
            failures.push(format!(
                "order {id} ({}) was acknowledged with 202 but has no OrderPlaced in the store",
                placed.kind.name()
            ));
            continue;
        };
        let stored: Vec<(String, i64)> = order
            .lines
            .iter()
            .map(|(sku, quantity, _)| (sku.clone(), *quantity))
            .collect();
        if order.customer_id != placed.customer_id || stored != placed.lines {
            failures.push(format!(
                "order {id}: stored for customer {} with lines {stored:?}, placed for {} with {:?}",
                order.customer_id, placed.customer_id, placed.lines
            ));
        }
        for (sku, _, unit_price) in &order.lines {
            if prices.get(sku.as_str()) != Some(unit_price) {
                failures.push(format!(
                    "order {id}: {sku} at {unit_price} cents, the catalogue says {:?}",
                    prices.get(sku.as_str())
                ));
            }
        }
        if placed.cancel == Cancel::Acknowledged && !order.cancellation_requested {
            failures.push(format!(
                "order {id}: its cancellation was acknowledged with 202 but no OrderCancellationRequested is stored"
            ));
        }
        match &placed.cancel {
            Cancel::Unexpected(answer) => {
                failures.push(format!("cancelling order {id} answered {answer}"))
            }
            Cancel::Unanswered(why) => failures.push(format!("cancelling order {id}: {why}")),
            _ => {}
        }
        let ending = (order.status, order.rejection_reason);
        let allowed = allowed_endings(placed.kind, &placed.cancel);
        if order.status != "pending" && !allowed.contains(&ending) {
            failures.push(format!(
                "order {id} ({}, cancellation {:?}) ended {} {:?}; allowed: {allowed:?}",
                placed.kind.name(),
                placed.cancel,
                order.status,
                order.rejection_reason.map(reason_name)
            ));
        }
    }
    failures.extend(record.refused.iter().cloned());
    failures.extend(record.unanswered.iter().cloned());

    // Every order of the run, acknowledged or not: its saga ended, and its
    // money and stock match how it ended.
    for (id, order) in &fold.orders {
        let payments = fold.payments.get(id).cloned().unwrap_or_default();
        let charged: i64 = payments.charges.iter().sum();
        let refunded: i64 = payments.refunds.iter().sum();
        let held: Vec<(&str, i64)> = fold
            .products
            .iter()
            .filter_map(|(sku, p)| p.reservations.get(id).map(|q| (sku.as_str(), *q)))
            .collect();
        let shipment = fold.shipments.get(id);
        match fold.sagas.get(id) {
            None => failures.push(format!("order {id}: no saga in the store")),
            Some((saga, _)) => {
                let fits = match saga.status {
                    SagaStatus::Completed => order.status == "confirmed",
                    SagaStatus::Compensated => {
                        order.status == "rejected" || order.status == "cancelled"
                    }
                    _ => false,
                };
                if !fits {
                    failures.push(format!(
                        "order {id} is {} and its saga {} (failure: {:?})",
                        order.status,
                        saga.status.as_str(),
                        saga.failure_reason
                    ));
                }
            }
        }
        match order.status {
            "confirmed" => {
                if payments.charges.len() != 1 || !payments.refunds.is_empty() {
                    failures.push(format!(
                        "order {id} is confirmed with charges {:?} and refunds {:?}; it must hold exactly one charge",
                        payments.charges, payments.refunds
                    ));
                } else if charged != order.total_cents {
                    failures.push(format!(
                        "order {id} is confirmed with a charge of {charged}, its total is {}",
                        order.total_cents
                    ));
                }
                let expected: Vec<(&str, i64)> = order
                    .lines
                    .iter()
                    .map(|(sku, quantity, _)| (sku.as_str(), *quantity))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if held != expected {
                    failures.push(format!(
                        "order {id} is confirmed holding stock {held:?}; its lines are {expected:?}"
                    ));
                }
                if !shipment.is_some_and(|s| s.created && !s.cancelled) {
                    failures.push(format!(
                        "order {id} is confirmed without a live shipment ({shipment:?})"
                    ));
                } else if order.tracking_number.as_deref()
                    != shipment.map(|s| s.tracking_number.as_str())
                {
                    failures.push(format!(
                        "order {id}: tracking number {:?}, its shipment's is {:?}",
                        order.tracking_number,
                        shipment.map(|s| &s.tracking_number)
                    ));
                }
            }
            "rejected" | "cancelled" => {
                if charged != refunded {
                    failures.push(format!(
                        "order {id} is {} with charges {:?} and refunds {:?}; it must hold no money",
                        order.status, payments.charges, payments.refunds
                    ));
                }
                if !held.is_empty() {
                    failures.push(format!(
                        "order {id} is {} and still holds stock {held:?}",
                        order.status
                    ));
                }
                if shipment.is_some_and(|s| s.created && !s.cancelled) {
                    failures.push(format!(
                        "order {id} is {} with a live shipment",
                        order.status
                    ));
                }
            }
            _ => failures.push(format!("order {id} is still {}", order.status)),
        }
    }
    // Money and stock held for orders the run does not know.
    for (id, payments) in &fold.payments {
        if !fold.orders.contains_key(id) {
            failures.push(format!("payments {payments:?} for unknown order {id}"));
        }
    }
    for (sku, product) in &fold.products {
        for id in product.reservations.keys() {
            if !fold.orders.contains_key(id) {
                failures.push(format!("{sku} holds stock for unknown order {id}"));
            }
        }
    }
    for product in catalogue.products() {
        if !fold.products.contains_key(&product.sku) {
            failures.push(format!("product {} is not in the store", product.sku));
        }
    }
    for id in catalogue.customers() {
        if !fold.customers.contains_key(id) {
            failures.push(format!("customer {id} is not in the store"));
        }
    }
    failures
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = http.get(url).send().await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("GET {url} answered {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Projections that are not live at lag 0, as the projector reports them.
pub async fn projections_behind(
    http: &reqwest::Client,
    endpoints: &Endpoints,
) -> anyhow::Result<Vec<String>> {
    let all = get_json(http, &format!("{}/v1/projections", endpoints.projector)).await?;
    let all = all
        .as_array()
        .context("GET /v1/projections is not an array")?;
    if all.is_empty() {
        bail!("GET /v1/projections lists no projection");
    }
    Ok(all
        .iter()
        .filter(|p| p["lag_events"] != 0 || p["status"] != "live")
        .map(|p| {
            format!(
                "projection {} is {} at lag {} events",
                p["name"], p["status"], p["lag_events"]
            )
        })
        .collect())
}

/// Where the query-service's read models differ from the fold.
pub async fn read_model_differences(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    fold: &StoreFold,
    catalogue: &Catalogue,
    sagas_since: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    let mut differences = Vec::new();
    let query = &endpoints.query;
    let mut differ = |what: String, read: &Value, stored: Value| {
        if *read != stored {
            differences.push(format!("{what}: read model {read}, store {stored}"));
        }
    };

    for product in catalogue.products() {
        let Some(stored) = fold.products.get(&product.sku) else {
            continue;
        };
        let view = get_json(http, &format!("{query}/v1/products/{}", product.sku)).await?;
        let what = |field: &str| format!("product {} {field}", product.sku);
        differ(
            what("price_cents"),
            &view["price_cents"],
            stored.price_cents.into(),
        );
        differ(what("on_hand"), &view["on_hand"], stored.on_hand.into());
        differ(what("reserved"), &view["reserved"], stored.reserved.into());
        differ(
            what("available"),
            &view["available"],
            (stored.on_hand - stored.reserved).into(),
        );
        differ(what("version"), &view["version"], stored.version.into());
    }

    for id in catalogue.customers() {
        let Some(stored) = fold.customers.get(id) else {
            continue;
        };
        let view = get_json(http, &format!("{query}/v1/customers/{id}")).await?;
        let what = |field: &str| format!("customer {id} {field}");
        differ(
            what("balance_cents"),
            &view["balance_cents"],
            stored.balance_cents.into(),
        );
        differ(what("version"), &view["version"], stored.version.into());

        // The customer's orders, every page.
        let mut seen = BTreeSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{query}/v1/orders?customer_id={id}&limit=200");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page = get_json(http, &url).await?;
            for view in page["items"]
                .as_array()
                .context("orders page without items")?
            {
                let order_id: Uuid = view["order_id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .context("an order view without order_id")?;
                seen.insert(order_id);
                let Some(stored) = fold.orders.get(&order_id) else {
                    differ(
                        format!("order {order_id} of customer {id}"),
                        &Value::String("present".into()),
                        Value::String("not in the store".into()),
                    );
                    continue;
                };
                let what = |field: &str| format!("order {order_id} {field}");
                differ(what("status"), &view["status"], stored.status.into());
                differ(
                    what("total_cents"),
                    &view["total_cents"],
                    stored.total_cents.into(),
                );
                differ(
                    what("rejection_reason"),
                    &view["rejection_reason"],
                    stored.rejection_reason.map(reason_name).into(),
                );
                differ(
                    what("tracking_number"),
                    &view["tracking_number"],
                    stored.tracking_number.clone().into(),
                );
                differ(what("version"), &view["version"], stored.version.into());
                let lines: Vec<Value> = stored
                    .lines
                    .iter()
                    .map(|(sku, quantity, price)| {
                        serde_json::json!({"sku": sku, "quantity": quantity, "unit_price_cents": price})
                    })
                    .collect();
                differ(what("lines"), &view["lines"], Value::Array(lines));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        for (order_id, order) in &fold.orders {
            if order.customer_id == *id && !seen.contains(order_id) {
                differ(
                    format!("order {order_id}"),
                    &Value::String("missing".into()),
                    Value::String("stored".into()),
                );
            }
        }
    }

    // The sagas, newest first, until every one of the run's was seen or
    // the list reaches sagas older than the run.
    let mut unseen: BTreeSet<Uuid> = fold.orders.keys().copied().collect();
    let mut cursor: Option<String> = None;
    'pages: loop {
        let mut url = format!("{query}/v1/sagas?limit=200");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = get_json(http, &url).await?;
        for view in page["items"]
            .as_array()
            .context("sagas page without items")?
        {
            let started: Option<DateTime<Utc>> =
                view["started_at"].as_str().and_then(|s| s.parse().ok());
            if started.is_some_and(|at| at < sagas_since) {
                break 'pages;
            }
            let Some(order_id) = view["order_id"]
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
            else {
                continue;
            };
            if !unseen.remove(&order_id) {
                continue;
            }
            let Some((saga, _)) = fold.sagas.get(&order_id) else {
                continue;
            };
            let what = |field: &str| format!("saga {order_id} {field}");
            differ(what("status"), &view["status"], saga.status.as_str().into());
            differ(
                what("current_step"),
                &view["current_step"],
                saga.current_step.map(|s| s.as_str()).into(),
            );
            differ(
                what("failure_reason"),
                &view["failure_reason"],
                saga.failure_reason.clone().into(),
            );
        }
        if unseen.is_empty() {
            break;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    for order_id in unseen {
        if fold.sagas.contains_key(&order_id) {
            differ(
                format!("saga {order_id}"),
                &Value::String("missing".into()),
                Value::String("stored".into()),
            );
        }
    }
    Ok(differences)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::chaos::load::{PlacedOrder, Product};

    const ORDER: Uuid = Uuid::from_u128(1);
    const CUSTOMER: Uuid = Uuid::from_u128(2);

    /// Folds `events` (stream, type, data) as if read in this order.
    fn fold_of(events: &[(String, &str, Value)]) -> StoreFold {
        let mut fold = StoreFold::default();
        let mut versions: HashMap<&str, i64> = HashMap::new();
        for (stream, event_type, data) in events {
            let version = versions.entry(stream).or_insert(0);
            *version += 1;
            if let Err(error) = fold.apply(stream, *version, event_type, data, stream) {
                fold.violations.push(format!("{error:#}"));
            }
        }
        fold
    }

    fn customer(events: Vec<(&'static str, Value)>) -> Vec<(String, &'static str, Value)> {
        let mut all = vec![(
            stream::customer(CUSTOMER),
            "CustomerRegistered",
            json!({"customer_id": CUSTOMER, "name": "Ada", "email": "ada@example.com"}),
        )];
        all.extend(
            events
                .into_iter()
                .map(|(t, data)| (stream::customer(CUSTOMER), t, data)),
        );
        all
    }

    fn charge(order: Uuid, amount: i64) -> (&'static str, Value) {
        (
            "PaymentCharged",
            json!({"customer_id": CUSTOMER, "order_id": order, "amount_cents": amount}),
        )
    }

    fn deposit(amount: i64) -> (&'static str, Value) {
        (
            "FundsDeposited",
            json!({"customer_id": CUSTOMER, "amount_cents": amount}),
        )
    }

    fn product(events: Vec<(&'static str, Value)>) -> Vec<(String, &'static str, Value)> {
        let mut all = vec![(
            "product-sku1".to_owned(),
            "ProductCreated",
            json!({"sku": "sku1", "name": "One", "price_cents": 100, "initial_stock": 1}),
        )];
        all.extend(
            events
                .into_iter()
                .map(|(t, data)| ("product-sku1".to_owned(), t, data)),
        );
        all
    }

    fn reserve(order: Uuid) -> (&'static str, Value) {
        (
            "InventoryReserved",
            json!({"sku": "sku1", "order_id": order, "quantity": 1}),
        )
    }

    #[test]
    fn a_second_charge_for_one_order_is_a_violation() {
        let fold = fold_of(&customer(vec![
            deposit(1000),
            charge(ORDER, 300),
            charge(ORDER, 300),
        ]));
        assert!(
            fold.violations
                .iter()
                .any(|v| v.contains("charged a second time")),
            "{:?}",
            fold.violations
        );
    }

    #[test]
    fn a_balance_below_zero_at_any_point_is_a_violation() {
        // Back above zero in the end, but negative in between.
        let fold = fold_of(&customer(vec![
            deposit(100),
            charge(ORDER, 300),
            deposit(1000),
        ]));
        assert_eq!(fold.customers[&CUSTOMER].balance_cents, 800);
        assert!(
            fold.violations.iter().any(|v| v.contains("negative")),
            "{:?}",
            fold.violations
        );
    }

    #[test]
    fn stock_reserved_beyond_what_is_on_hand_is_a_violation() {
        let fold = fold_of(&product(vec![reserve(ORDER), reserve(Uuid::from_u128(3))]));
        assert!(
            fold.violations.iter().any(|v| v.contains("available -1")),
            "{:?}",
            fold.violations
        );
        assert!(
            fold_of(&product(vec![reserve(ORDER)]))
                .violations
                .is_empty()
        );
    }

    /// An order placed for one unit of `sku1`, ended by `ending`, with its
    /// saga ended by `saga_end`.
    fn order(
        ending: (&'static str, Value),
        saga_end: (&'static str, Value),
    ) -> Vec<(String, &'static str, Value)> {
        let order = stream::order(ORDER);
        let saga = stream::saga(ORDER);
        vec![
            (
                order.clone(),
                "OrderPlaced",
                json!({"order_id": ORDER, "customer_id": CUSTOMER,
                       "lines": [{"sku": "sku1", "quantity": 1, "unit_price_cents": 100}],
                       "total_cents": 100,
                       "shipping_address": {"name": "Ada", "line1": "1 Way", "city": "London",
                                            "postal_code": "N1", "country": "GB"}}),
            ),
            (
                saga.clone(),
                "SagaStarted",
                json!({"order_id": ORDER, "customer_id": CUSTOMER, "total_cents": 100}),
            ),
            (order, ending.0, ending.1),
            (saga, saga_end.0, saga_end.1),
        ]
    }

    fn catalogue() -> Catalogue {
        let sku1 = Product {
            sku: "sku1".into(),
            price_cents: 100,
            stock: 1,
        };
        Catalogue {
            run: "test".into(),
            plentiful: vec![sku1.clone()],
            limited: vec![],
            scarce: sku1,
            rich: vec![CUSTOMER],
            tight: vec![],
            poor: vec![],
        }
    }

    fn placed(cancel: Cancel) -> LoadRecord {
        LoadRecord {
            placed: vec![PlacedOrder {
                order_id: ORDER,
                kind: Kind::Normal,
                customer_id: CUSTOMER,
                lines: vec![("sku1".into(), 1)],
                cancel,
            }],
            ..LoadRecord::default()
        }
    }

    #[test]
    fn a_confirmed_order_must_hold_its_charge_and_its_stock() {
        let confirmed = (
            "OrderConfirmed",
            json!({"order_id": ORDER, "tracking_number": "T1"}),
        );
        let completed = ("SagaCompleted", json!({"tracking_number": "T1"}));
        let shipment = (
            stream::shipment(ORDER),
            "ShipmentCreated",
            json!({"order_id": ORDER, "tracking_number": "T1",
                   "address": {"name": "Ada", "line1": "1 Way", "city": "London",
                               "postal_code": "N1", "country": "GB"}}),
        );
        // Everything in place: no failure.
        let mut events = product(vec![reserve(ORDER)]);
        events.extend(customer(vec![deposit(1000), charge(ORDER, 100)]));
        events.extend(order(confirmed.clone(), completed.clone()));
        events.push(shipment.clone());
        let fold = fold_of(&events);
        assert!(fold.violations.is_empty(), "{:?}", fold.violations);
        let failures = check_store(&fold, &catalogue(), &placed(Cancel::NotAsked));
        assert!(failures.is_empty(), "{failures:?}");

        // Confirmed without a charge: caught.
        let mut events = product(vec![reserve(ORDER)]);
        events.extend(customer(vec![deposit(1000)]));
        events.extend(order(confirmed, completed));
        events.push(shipment);
        let failures = check_store(&fold_of(&events), &catalogue(), &placed(Cancel::NotAsked));
        assert!(
            failures.iter().any(|f| f.contains("exactly one charge")),
            "{failures:?}"
        );
    }

    #[test]
    fn a_cancelled_order_must_hold_no_stock_and_no_money() {
        let cancelled = (
            "OrderCancelled",
            json!({"order_id": ORDER, "reason": "changed my mind"}),
        );
        let compensated = ("SagaCompensated", json!({"reason": "cancelled"}));
        let mut events = product(vec![reserve(ORDER)]);
        events.extend(customer(vec![deposit(1000), charge(ORDER, 100)]));
        events.extend(order(cancelled, compensated));
        let failures = check_store(
            &fold_of(&events),
            &catalogue(),
            &placed(Cancel::Acknowledged),
        );
        for expected in [
            "must hold no money",
            "still holds stock",
            "no OrderCancellationRequested",
        ] {
            assert!(
                failures.iter().any(|f| f.contains(expected)),
                "{expected}: {failures:?}"
            );
        }
    }

    #[test]
    fn an_acknowledged_order_missing_from_the_store_is_a_failure() {
        let failures = check_store(
            &StoreFold::default(),
            &catalogue(),
            &placed(Cancel::NotAsked),
        );
        assert!(
            failures.iter().any(|f| f.contains("has no OrderPlaced")),
            "{failures:?}"
        );
    }

    #[test]
    fn an_acknowledged_cancellation_never_allows_a_confirmation() {
        for kind in [Kind::Normal, Kind::ContendedStock, Kind::ContendedBalance] {
            let endings = allowed_endings(kind, &Cancel::Acknowledged);
            assert!(!endings.contains(&("confirmed", None)), "{kind:?}");
            assert!(endings.contains(&("cancelled", None)), "{kind:?}");
        }
        assert_eq!(
            allowed_endings(Kind::Normal, &Cancel::NotAsked),
            vec![("confirmed", None)]
        );
        assert_eq!(
            allowed_endings(Kind::Unserved, &Cancel::Refused),
            vec![("rejected", Some(RejectionReason::ShippingUnavailable))]
        );
        // A normal order cannot have been rejected, so a refused
        // cancellation of one allows no ending at all.
        assert!(allowed_endings(Kind::Normal, &Cancel::Refused).is_empty());
    }
}
