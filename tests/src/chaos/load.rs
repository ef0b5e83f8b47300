//! The load: a catalogue and customers made for this run, then clients that
//! place orders at an offered rate and cancel some of them, every POST with
//! an `Idempotency-Key`, repeated with the same key and body until it gets
//! a definite answer. Every acknowledged request is recorded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Endpoints, say};

/// Countries the platform ships to by default (`SHIPPING_COUNTRIES`).
const SERVED: [&str; 5] = ["US", "GB", "DE", "JP", "AU"];
/// A valid country code that is not served.
const UNSERVED: &str = "BR";

/// What a rich customer deposits: more than any run can spend.
const RICH_DEPOSIT: i64 = 10_000_000_000;
/// What a tight customer deposits: a few orders' worth, so their orders
/// compete for it and some are declined.
const TIGHT_DEPOSIT: i64 = 2_000;
/// What a poor customer deposits: less than any order costs.
const POOR_DEPOSIT: i64 = 100;
/// Stock of the scarce product: less than any order asks of it.
const SCARCE_STOCK: i64 = 2;

/// A small deterministic generator (splitmix64): no dependency, and a run
/// can be repeated from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Debug, Clone)]
pub struct Product {
    pub sku: String,
    pub price_cents: i64,
    pub stock: i64,
}

/// Everything this run created before the load; the checks are scoped to
/// these products and customers (and every order of these customers).
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub run: String,
    /// Stock no run exhausts.
    pub plentiful: Vec<Product>,
    /// Stock for about half the orders that ask for it.
    pub limited: Vec<Product>,
    /// Less stock than any order asks for.
    pub scarce: Product,
    /// Customers whose balance never runs out.
    pub rich: Vec<Uuid>,
    /// Customers whose balance covers a few orders.
    pub tight: Vec<Uuid>,
    /// Customers whose balance covers no order.
    pub poor: Vec<Uuid>,
}

impl Catalogue {
    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.plentiful
            .iter()
            .chain(&self.limited)
            .chain(std::iter::once(&self.scarce))
    }

    pub fn customers(&self) -> impl Iterator<Item = &Uuid> {
        self.rich.iter().chain(&self.tight).chain(&self.poor)
    }
}

/// What an order was made to test, and so how it must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Rich customer, plentiful stock, served country: confirmed.
    Normal,
    /// One unit of a limited product: confirmed, or rejected for stock.
    ContendedStock,
    /// A tight customer: confirmed, or rejected for payment.
    ContendedBalance,
    /// More than the scarce product's stock (next to a plentiful line, so
    /// the reservation must be all or nothing): rejected for stock.
    TooMuch,
    /// An unserved country: rejected for shipping, after the reservation
    /// and the charge are undone.
    Unserved,
    /// A poor customer: rejected for payment, after the reservation is
    /// undone.
    Broke,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::ContendedStock => "contended-stock",
            Kind::ContendedBalance => "contended-balance",
            Kind::TooMuch => "too-much",
            Kind::Unserved => "unserved",
            Kind::Broke => "broke",
        }
    }

    fn draw(rng: &mut Rng) -> Kind {
        let x = rng.unit();
        match x {
            x if x < 0.60 => Kind::Normal,
            x if x < 0.70 => Kind::ContendedStock,
            x if x < 0.80 => Kind::ContendedBalance,
            x if x < 0.87 => Kind::TooMuch,
            x if x < 0.94 => Kind::Unserved,
            _ => Kind::Broke,
        }
    }
}

/// The answer to the order's cancellation, if one was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    NotAsked,
    /// 202.
    Acknowledged,
    /// 409: the order had already ended (rejected or cancelled).
    Refused,
    /// Any other definite answer.
    Unexpected(String),
    /// No definite answer within the request budget.
    Unanswered(String),
}

/// An order whose placement was acknowledged (202).
#[derive(Debug, Clone)]
pub struct PlacedOrder {
    pub order_id: Uuid,
    pub kind: Kind,
    pub customer_id: Uuid,
    pub lines: Vec<(String, i64)>,
    pub cancel: Cancel,
}

/// Everything the clients did.
#[derive(Debug, Default)]
pub struct LoadRecord {
    /// Placements attempted.
    pub offered: u64,
    /// Placements acknowledged.
    pub placed: Vec<PlacedOrder>,
    /// Placements answered with anything but 202 (every order is valid).
    pub refused: Vec<String>,
    /// Placements with no definite answer within the budget.
    pub unanswered: Vec<String>,
    /// Requests repeated after a connection error, a 5xx or a busy 409.
    pub retries: u64,
    /// When the last client finished.
    pub finished: Option<Instant>,
}

/// A definite answer, or none within the budget.
pub enum Answer {
    Definite { status: StatusCode, body: Value },
    Unanswered(String),
}

/// Sends POSTs until they get a definite answer.
pub struct Poster {
    http: reqwest::Client,
    budget: Duration,
    retries: AtomicU64,
}

impl Poster {
    pub fn new(budget: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .default_headers(crate::auth::binary_headers())
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .build()?,
            budget,
            retries: AtomicU64::new(0),
        })
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// POSTs `body` to `url` with `Idempotency-Key: key`, again with the
    /// same key and bytes after a connection error, a timeout, a 5xx, a 408
    /// or 429, or a 409 with `Retry-After` ("not now"), backing off from
    /// 100 ms to 2 s, until a definite answer (any other status) or the
    /// budget is spent.
    pub async fn post(&self, url: &str, key: &str, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).expect("a JSON value serialises");
        let deadline = Instant::now() + self.budget;
        let mut pause = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let reason = match self
                .http
                .post(url)
                .header("idempotency-key", key)
                .header(CONTENT_TYPE, "application/json")
                .body(bytes.clone())
                .send()
                .await
            {
                Ok(response) => {
                    let status = response.status();
                    let busy = status == StatusCode::CONFLICT
                        && response.headers().contains_key(RETRY_AFTER);
                    let again = status.is_server_error()
                        || busy
                        || status == StatusCode::REQUEST_TIMEOUT
                        || status == StatusCode::TOO_MANY_REQUESTS;
                    match response.bytes().await {
                        Ok(body) if !again => {
                            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            return Answer::Definite { status, body };
                        }
                        Ok(body) => format!("{status} {}", String::from_utf8_lossy(&body)),
                        Err(error) => format!("{status}, reading the body failed: {error}"),
                    }
                }
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() + pause > deadline {
                return Answer::Unanswered(format!(
                    "POST {url} (key {key}): no definite answer in {attempts} attempts over {:?}; last: {reason}",
                    self.budget
                ));
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(jitter(pause)).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// A setup request that must succeed with `expected` (or one of them).
    async fn setup(
        &self,
        url: &str,
        key: &str,
        body: &Value,
        expected: &[StatusCode],
    ) -> anyhow::Result<Value> {
        match self.post(url, key, body).await {
            Answer::Definite { status, body } if expected.contains(&status) => Ok(body),
            Answer::Definite { status, body } => {
                bail!("POST {url} answered {status}: {body}")
            }
            Answer::Unanswered(why) => bail!("{why}"),
        }
    }
}

/// Between half and all of `pause`, so retries do not arrive in step.
fn jitter(pause: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    pause.mul_f64(0.5 + 0.5 * (f64::from(nanos % 1000) / 1000.0))
}

/// Creates the products and customers for a load of `rate` orders per
/// second over `seconds`, each request keyed like every other.
pub async fn setup(
    poster: &Poster,
    endpoints: &Endpoints,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<Catalogue> {
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let orders = (rate * seconds).max(10.0);
    let plentiful_count = ((rate / 3.0) as usize).clamp(6, 40);
    let limited_count = 4;
    // About half of the orders that ask for a limited product get it.
    let limited_stock = ((orders * 0.10 / limited_count as f64 / 2.0) as i64).max(2);
    let product = |kind: &str, i: usize, price_cents: i64, stock: i64| Product {
        sku: format!("chaos-{run}-{kind}{i}"),
        price_cents,
        stock,
    };
    let plentiful: Vec<Product> = (0..plentiful_count)
        .map(|i| product("p", i, 100 + 50 * (i as i64 % 17), 1_000_000))
        .collect();
    let limited: Vec<Product> = (0..limited_count)
        .map(|i| product("l", i, 250, limited_stock))
        .collect();
    let scarce = product("s", 0, 300, SCARCE_STOCK);

    let products_url = format!("{}/v1/products", endpoints.command);
    let all_products: Vec<Product> = plentiful
        .iter()
        .chain(&limited)
        .chain(std::iter::once(&scarce))
        .cloned()
        .collect();
    let created = futures::stream::iter(all_products.iter().map(|p| {
        let body = json!({"sku": p.sku, "name": format!("Chaos {}", p.sku),
                          "price_cents": p.price_cents, "initial_stock": p.stock});
        let key = format!("chaos-{run}-product-{}", p.sku);
        let url = &products_url;
        async move {
            // 409: an earlier attempt with this key created it and its
            // response was lost with a 5xx.
            poster
                .setup(
                    url,
                    &key,
                    &body,
                    &[StatusCode::CREATED, StatusCode::CONFLICT],
                )
                .await
                .with_context(|| format!("creating product {}", p.sku))
        }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    for result in created {
        result?;
    }

    let rich_count = ((rate / 2.0) as usize).clamp(8, 60);
    let mut wanted = Vec::new();
    wanted.extend((0..rich_count).map(|i| ("rich", i, RICH_DEPOSIT)));
    wanted.extend((0..4).map(|i| ("tight", i, TIGHT_DEPOSIT)));
    wanted.extend((0..2).map(|i| ("poor", i, POOR_DEPOSIT)));
    let customers = futures::stream::iter(wanted.into_iter().map(|(class, i, deposit)| {
        let run = &run;
        async move {
            let body = json!({"name": format!("Chaos {class} {i}"),
                              "email": format!("{class}{i}@chaos-{run}.example")});
            let key = format!("chaos-{run}-customer-{class}-{i}");
            let created = poster
                .setup(
                    &format!("{}/v1/customers", endpoints.command),
                    &key,
                    &body,
                    &[StatusCode::CREATED],
                )
                .await
                .with_context(|| format!("creating customer {class} {i}"))?;
            let id: Uuid = created["customer_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("no customer_id in {created}"))?;
            poster
                .setup(
                    &format!("{}/v1/customers/{id}/deposits", endpoints.command),
                    &format!("{key}-deposit"),
                    &json!({"amount_cents": deposit}),
                    &[StatusCode::OK],
                )
                .await
                .with_context(|| format!("depositing for customer {class} {i}"))?;
            anyhow::Ok((class, id))
        }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    let mut catalogue = Catalogue {
        run,
        plentiful,
        limited,
        scarce,
        rich: vec![],
        tight: vec![],
        poor: vec![],
    };
    for result in customers {
        let (class, id) = result?;
        match class {
            "rich" => catalogue.rich.push(id),
            "tight" => catalogue.tight.push(id),
            _ => catalogue.poor.push(id),
        }
    }
    Ok(catalogue)
}

/// How the clients load the platform.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Orders per second offered, over all clients.
    pub rate: f64,
    pub duration: Duration,
    pub clients: usize,
    /// Share of acknowledged orders each client cancels.
    pub cancel_fraction: f64,
    /// Longest wait for a cancellation after the order's acknowledgement.
    pub cancel_within: Duration,
    pub seed: u64,
}

/// Runs the clients from `start` until `settings.duration` has passed and
/// each has finished its last request; returns what they did.
pub async fn run(
    poster: Arc<Poster>,
    endpoints: &Endpoints,
    catalogue: Arc<Catalogue>,
    settings: &LoadSettings,
    start: Instant,
) -> LoadRecord {
    let end = start + settings.duration;
    let interval = Duration::from_secs_f64(settings.clients as f64 / settings.rate);
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..settings.clients {
        let client = Client {
            poster: Arc::clone(&poster),
            command: endpoints.command.clone(),
            catalogue: Arc::clone(&catalogue),
            rng: Rng::new(settings.seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)),
            cancel_fraction: settings.cancel_fraction,
            cancel_within: settings.cancel_within,
            index,
            record: LoadRecord::default(),
            cancels: VecDeque::new(),
        };
        let first = start + Duration::from_secs_f64(index as f64 / settings.rate);
        clients.spawn(client.run(first, interval, end));
    }
    let mut record = LoadRecord::default();
    while let Some(done) = clients.join_next().await {
        match done {
            Ok(client) => {
                record.offered += client.offered;
                record.placed.extend(client.placed);
                record.refused.extend(client.refused);
                record.unanswered.extend(client.unanswered);
            }
            Err(error) => record.refused.push(format!("a client panicked: {error}")),
        }
    }
    record.retries = poster.retries();
    record.finished = Some(Instant::now());
    say(format!(
        "load: {} placements offered, {} acknowledged, {:.1} s after the start",
        record.offered,
        record.placed.len(),
        start.elapsed().as_secs_f64()
    ));
    record
}

struct Client {
    poster: Arc<Poster>,
    command: String,
    catalogue: Arc<Catalogue>,
    rng: Rng,
    cancel_fraction: f64,
    cancel_within: Duration,
    index: usize,
    record: LoadRecord,
    /// Cancellations to send, soonest first: when, and the index in
    /// `record.placed`.
    cancels: VecDeque<(Instant, usize)>,
}

impl Client {
    async fn run(mut self, first: Instant, interval: Duration, end: Instant) -> LoadRecord {
        let mut next = first;
        let mut sequence = 0u64;
        while next < end {
            self.cancel_due(Some(next)).await;
            tokio::time::sleep_until(next.into()).await;
            self.place(sequence).await;
            sequence += 1;
            next += interval;
        }
        self.cancel_due(None).await;
        self.record
    }

    /// Sends the cancellations due by `by` (all of them when `None`, each
    /// at its time).
    async fn cancel_due(&mut self, by: Option<Instant>) {
        while let Some(&(due, index)) = self.cancels.front() {
            if by.is_some_and(|by| due > by) {
                return;
            }
            self.cancels.pop_front();
            tokio::time::sleep_until(due.into()).await;
            let order_id = self.record.placed[index].order_id;
            let key = format!("chaos-{}-cancel-{order_id}", self.catalogue.run);
            let url = format!("{}/v1/orders/{order_id}/cancel", self.command);
            let answer = self
                .poster
                .post(&url, &key, &json!({"reason": "chaos: changed my mind"}))
                .await;
            self.record.placed[index].cancel = match answer {
                Answer::Definite { status, .. } if status == StatusCode::ACCEPTED => {
                    Cancel::Acknowledged
                }
                Answer::Definite { status, .. } if status == StatusCode::CONFLICT => {
                    Cancel::Refused
                }
                Answer::Definite { status, body } => Cancel::Unexpected(format!("{status} {body}")),
                Answer::Unanswered(why) => Cancel::Unanswered(why),
            };
        }
    }

    async fn place(&mut self, sequence: u64) {
        let kind = Kind::draw(&mut self.rng);
        let catalogue = Arc::clone(&self.catalogue);
        let rng = &mut self.rng;
        let (customer_id, lines, country) = match kind {
            Kind::Normal => {
                let first = rng.pick(&catalogue.plentiful);
                let mut lines = vec![(first.sku.clone(), 1 + rng.below(3) as i64)];
                if rng.unit() < 0.4 {
                    let second = rng.pick(&catalogue.plentiful);
                    if second.sku != first.sku {
                        lines.push((second.sku.clone(), 1 + rng.below(2) as i64));
                    }
                }
                (*rng.pick(&catalogue.rich), lines, *rng.pick(&SERVED))
            }
            Kind::ContendedStock => (
                *rng.pick(&catalogue.rich),
                vec![(rng.pick(&catalogue.limited).sku.clone(), 1)],
                *rng.pick(&SERVED),
            ),
            Kind::ContendedBalance => (
                *rng.pick(&catalogue.tight),
                vec![(rng.pick(&catalogue.plentiful).sku.clone(), 1)],
                *rng.pick(&SERVED),
            ),
            Kind::TooMuch => (
                *rng.pick(&catalogue.rich),
                vec![
                    (rng.pick(&catalogue.plentiful).sku.clone(), 1),
                    (
                        catalogue.scarce.sku.clone(),
                        SCARCE_STOCK + 1 + rng.below(3) as i64,
                    ),
                ],
                *rng.pick(&SERVED),
            ),
            Kind::Unserved => (
                *rng.pick(&catalogue.rich),
                vec![(rng.pick(&catalogue.plentiful).sku.clone(), 1)],
                UNSERVED,
            ),
            Kind::Broke => (
                *rng.pick(&catalogue.poor),
                vec![(rng.pick(&catalogue.plentiful).sku.clone(), 2)],
                *rng.pick(&SERVED),
            ),
        };
        let body = json!({
            "customer_id": customer_id,
            "lines": lines.iter().map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity})).collect::<Vec<_>>(),
            "shipping_address": {"name": "Chaos Monkey", "line1": "1 Fault Lane",
                                 "city": "Crashton", "postal_code": "K1LL", "country": country},
        });
        let key = format!("chaos-{}-order-{}-{sequence}", catalogue.run, self.index);
        self.record.offered += 1;
        let url = format!("{}/v1/orders", self.command);
        match self.poster.post(&url, &key, &body).await {
            Answer::Definite { status, body } if status == StatusCode::ACCEPTED => {
                let Some(order_id) = body["order_id"].as_str().and_then(|s| s.parse().ok()) else {
                    self.record
                        .refused
                        .push(format!("202 without an order_id: {body}"));
                    return;
                };
                self.record.placed.push(PlacedOrder {
                    order_id,
                    kind,
                    customer_id,
                    lines,
                    cancel: Cancel::NotAsked,
                });
                if self.rng.unit() < self.cancel_fraction {
                    let due = Instant::now() + self.cancel_within.mul_f64(self.rng.unit());
                    let at = self.cancels.partition_point(|(d, _)| *d <= due);
                    self.cancels.insert(at, (due, self.record.placed.len() - 1));
                }
            }
            Answer::Definite { status, body } => self.record.refused.push(format!(
                "placing a {} order (key {key}) answered {status}: {body}",
                kind.name()
            )),
            Answer::Unanswered(why) => self.record.unanswered.push(why),
        }
    }
}
