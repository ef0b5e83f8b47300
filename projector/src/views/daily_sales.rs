//! `rm_daily_sales_orders`: what each order adds to the daily sales report
//! (`GET /v1/reports/daily-sales`), per SKU and UTC day.
//!
//! The report sums many order streams, so no single stream version could
//! guard a row of it: a redelivered or replayed event would count twice.
//! Each order's contribution is kept instead, as a row of its own stream
//! (its lines, the day it was confirmed, the day a confirmed order was
//! cancelled), guarded by that stream's version like every other row; the
//! query-service adds the contributions up when the report is read. An
//! order counts on the day it was confirmed, and counts negatively on the
//! day it was cancelled after that.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use domain::Event;
use domain::EventData;
use domain::order::{OrderEvent, OrderLine};
use event_store::RecordedEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApplyError, Declaration, View};

/// One order's contribution to the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSales {
    pub order_id: Uuid,
    /// Units and revenue per SKU of the order, by SKU.
    pub lines: Vec<SkuSales>,
    /// The UTC day the order was confirmed, once it is.
    pub confirmed_on: Option<NaiveDate>,
    /// The UTC day the order was cancelled, if it was confirmed before: an
    /// order cancelled before confirmation never counted.
    pub cancelled_on: Option<NaiveDate>,
    pub version: u64,
}

/// What an order sold of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuSales {
    pub sku: String,
    pub units: i64,
    pub revenue_cents: i64,
}

/// One line of the report: a day's net sales of a SKU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaySales {
    pub units: i64,
    pub revenue_cents: i64,
}

impl OrderSales {
    /// What this order adds to each (day, SKU): its lines on the day it
    /// was confirmed, and the same taken away on the day it was cancelled.
    pub fn contributions(&self) -> Vec<(NaiveDate, &str, DaySales)> {
        let mut all = Vec::new();
        let Some(confirmed) = self.confirmed_on else {
            return all;
        };
        for (day, sign) in [(Some(confirmed), 1), (self.cancelled_on, -1)] {
            let Some(day) = day else { continue };
            for line in &self.lines {
                all.push((
                    day,
                    line.sku.as_str(),
                    DaySales {
                        units: sign * line.units,
                        revenue_cents: sign * line.revenue_cents,
                    },
                ));
            }
        }
        all
    }
}

/// The report from the orders' contributions, per (day, SKU): what the
/// query-service's SQL computes from the table.
pub fn report<'a>(
    orders: impl IntoIterator<Item = &'a OrderSales>,
) -> BTreeMap<(NaiveDate, String), DaySales> {
    let mut report: BTreeMap<(NaiveDate, String), DaySales> = BTreeMap::new();
    for order in orders {
        for (day, sku, sales) in order.contributions() {
            let entry = report.entry((day, sku.to_owned())).or_default();
            entry.units += sales.units;
            entry.revenue_cents += sales.revenue_cents;
        }
    }
    report
}

/// Units and revenue per SKU, several lines of one SKU added together.
fn by_sku(lines: &[OrderLine]) -> Vec<SkuSales> {
    let mut sums: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for line in lines {
        let sum = sums.entry(line.sku.as_str()).or_default();
        sum.0 = sum.0.saturating_add(line.quantity);
        sum.1 = sum
            .1
            .saturating_add(line.quantity.saturating_mul(line.unit_price_cents));
    }
    sums.into_iter()
        .map(|(sku, (units, revenue_cents))| SkuSales {
            sku: sku.to_owned(),
            units,
            revenue_cents,
        })
        .collect()
}

impl View for OrderSales {
    // The same streams as `rm_orders`, folded into another table.
    const DECLARATION: Declaration = read_models::DAILY_SALES;

    fn version(&self) -> u64 {
        self.version
    }

    fn create<D: EventData>(event: &RecordedEvent<D>) -> Result<Self, ApplyError> {
        match OrderEvent::decode(&event.event_type, &event.data)? {
            OrderEvent::OrderPlaced {
                order_id, lines, ..
            } => Ok(OrderSales {
                order_id,
                lines: by_sku(&lines),
                confirmed_on: None,
                cancelled_on: None,
                version: event.version,
            }),
            _ => Err(ApplyError::out_of_place(event, "no OrderPlaced before")),
        }
    }

    fn update<D: EventData>(&mut self, event: &RecordedEvent<D>) -> Result<(), ApplyError> {
        let day = event.recorded_at.date_naive();
        match OrderEvent::decode(&event.event_type, &event.data)? {
            OrderEvent::OrderPlaced { .. } => {
                return Err(ApplyError::out_of_place(event, "the order exists"));
            }
            OrderEvent::OrderConfirmed { .. } => self.confirmed_on = Some(day),
            OrderEvent::OrderCancelled { .. } if self.confirmed_on.is_some() => {
                self.cancelled_on = Some(day);
            }
            OrderEvent::OrderCancelled { .. }
            | OrderEvent::OrderRejected { .. }
            | OrderEvent::OrderCancellationRequested { .. } => {}
        }
        self.version = event.version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use domain::order::ShippingAddress;

    use super::*;
    use crate::views::testing::recorded;

    fn placed(order_id: Uuid, lines: &[(&str, i64, i64)]) -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id,
            customer_id: Uuid::from_u128(9),
            lines: lines
                .iter()
                .map(|&(sku, quantity, unit_price_cents)| OrderLine {
                    sku: sku.into(),
                    quantity,
                    unit_price_cents,
                })
                .collect(),
            total_cents: lines.iter().map(|(_, q, p)| q * p).sum(),
            shipping_address: ShippingAddress {
                name: "Ada".into(),
                line1: "1 Analytical St".into(),
                city: "London".into(),
                postal_code: "N1".into(),
                country: "GB".into(),
            },
        }
    }

    fn confirmed(order_id: Uuid) -> OrderEvent {
        OrderEvent::OrderConfirmed {
            order_id,
            tracking_number: "TRK".into(),
        }
    }

    fn cancelled(order_id: Uuid) -> OrderEvent {
        OrderEvent::OrderCancelled {
            order_id,
            reason: "changed my mind".into(),
        }
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
    }

    /// An event of an order's stream recorded on a day of December 2026, at
    /// `hour` UTC.
    fn on(order_id: Uuid, version: u64, d: u32, hour: u32, event: &OrderEvent) -> RecordedEvent {
        let mut event = recorded(&format!("order-{order_id}"), version, event);
        event.recorded_at = Utc.with_ymd_and_hms(2026, 12, d, hour, 59, 59).unwrap();
        event
    }

    fn fold(events: &[RecordedEvent]) -> OrderSales {
        crate::views::testing::fold(events)
    }

    fn sales(units: i64, revenue_cents: i64) -> DaySales {
        DaySales {
            units,
            revenue_cents,
        }
    }

    #[test]
    fn a_placed_order_sells_nothing_until_it_is_confirmed() {
        let id = Uuid::from_u128(1);
        let row = fold(&[on(id, 1, 1, 9, &placed(id, &[("mug", 2, 900)]))]);
        assert_eq!(row.confirmed_on, None);
        assert!(report([&row]).is_empty());
    }

    #[test]
    fn a_confirmed_order_counts_its_lines_on_the_utc_day_of_its_confirmation() {
        let id = Uuid::from_u128(1);
        let row = fold(&[
            on(
                id,
                1,
                1,
                23,
                &placed(id, &[("mug", 2, 900), ("cup", 1, 300)]),
            ),
            on(id, 2, 2, 0, &confirmed(id)),
        ]);
        assert_eq!(
            report([&row]),
            BTreeMap::from([
                ((day(2), "cup".to_owned()), sales(1, 300)),
                ((day(2), "mug".to_owned()), sales(2, 1_800)),
            ])
        );
    }

    #[test]
    fn lines_of_one_sku_are_added_together() {
        let id = Uuid::from_u128(1);
        let row = fold(&[on(
            id,
            1,
            1,
            9,
            &placed(id, &[("mug", 2, 900), ("mug", 1, 800)]),
        )]);
        assert_eq!(
            row.lines,
            [SkuSales {
                sku: "mug".into(),
                units: 3,
                revenue_cents: 2_600
            }]
        );
    }

    #[test]
    fn a_confirmed_order_cancelled_later_is_taken_off_the_day_of_its_cancellation() {
        let id = Uuid::from_u128(1);
        let requested = OrderEvent::OrderCancellationRequested {
            order_id: id,
            reason: "changed my mind".into(),
        };
        let row = fold(&[
            on(id, 1, 1, 9, &placed(id, &[("mug", 2, 900)])),
            on(id, 2, 1, 10, &confirmed(id)),
            on(id, 3, 3, 8, &requested),
            on(id, 4, 3, 9, &cancelled(id)),
        ]);
        assert_eq!(
            report([&row]),
            BTreeMap::from([
                ((day(1), "mug".to_owned()), sales(2, 1_800)),
                ((day(3), "mug".to_owned()), sales(-2, -1_800)),
            ])
        );
    }

    #[test]
    fn confirmed_and_cancelled_the_same_day_nets_to_zero() {
        let id = Uuid::from_u128(1);
        let row = fold(&[
            on(id, 1, 1, 9, &placed(id, &[("mug", 2, 900)])),
            on(id, 2, 1, 10, &confirmed(id)),
            on(id, 3, 1, 11, &cancelled(id)),
        ]);
        assert_eq!(
            report([&row]),
            BTreeMap::from([((day(1), "mug".to_owned()), sales(0, 0))])
        );
    }

    #[test]
    fn orders_cancelled_or_rejected_before_confirmation_never_count() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let cancelled_early = fold(&[
            on(a, 1, 1, 9, &placed(a, &[("mug", 2, 900)])),
            on(a, 2, 1, 10, &cancelled(a)),
        ]);
        assert_eq!(cancelled_early.cancelled_on, None);
        let rejected = fold(&[
            on(b, 1, 1, 9, &placed(b, &[("mug", 2, 900)])),
            on(
                b,
                2,
                1,
                10,
                &OrderEvent::OrderRejected {
                    order_id: b,
                    reason: domain::RejectionReason::PaymentDeclined,
                },
            ),
        ]);
        assert!(report([&cancelled_early, &rejected]).is_empty());
    }

    #[test]
    fn the_report_adds_up_the_orders_of_a_day_and_sku() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let first = fold(&[
            on(a, 1, 1, 9, &placed(a, &[("mug", 2, 900)])),
            on(a, 2, 1, 10, &confirmed(a)),
        ]);
        let second = fold(&[
            on(b, 1, 1, 9, &placed(b, &[("mug", 1, 900), ("cup", 4, 250)])),
            on(b, 2, 1, 12, &confirmed(b)),
        ]);
        assert_eq!(
            report([&first, &second]),
            BTreeMap::from([
                ((day(1), "cup".to_owned()), sales(4, 1_000)),
                ((day(1), "mug".to_owned()), sales(3, 2_700)),
            ])
        );
    }

    #[test]
    fn folding_a_confirmation_again_counts_it_once() {
        // `store::apply_events` already skips versions a row has; besides,
        // the fold records the day of a confirmation rather than adding to
        // a sum, so even a second fold of it changes nothing.
        let id = Uuid::from_u128(1);
        let row = fold(&[
            on(id, 1, 1, 9, &placed(id, &[("mug", 2, 900)])),
            on(id, 2, 1, 10, &confirmed(id)),
        ]);
        let mut again = Some(row.clone());
        OrderSales::apply(&mut again, &on(id, 2, 1, 10, &confirmed(id))).unwrap();
        assert_eq!(report([&again.unwrap()]), report([&row]));
    }

    #[test]
    fn a_cancellation_without_a_placement_is_refused() {
        let id = Uuid::from_u128(1);
        assert!(matches!(
            OrderSales::apply(&mut None, &on(id, 1, 1, 9, &cancelled(id))),
            Err(ApplyError::OutOfPlace { .. })
        ));
    }
}
