//! The read models' declarations: for each, its table, its columns, the
//! stream category it folds and how it keys its rows.
//!
//! The projector writes these tables and the query-service reads them, so
//! both take the names and column lists from here rather than each writing
//! them out (the tables themselves are made by `projector/migrations`).
//! This crate is data only: the folds are the projector's (`views`), the
//! queries the query-service's.

use domain::stream;

pub mod sagas;

/// What a read model declares about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declaration {
    /// The name operators use (`GET /v1/projections`, rebuilds, metrics).
    pub name: &'static str,
    /// The table the query-service reads.
    pub table: &'static str,
    /// The stream category whose events it takes. Several read models may
    /// take one category: each gets every event of it.
    pub stream_prefix: &'static str,
    /// The key column and its SQL type. A row is one stream's fold, keyed
    /// by the stream id after its prefix, and carries that stream's version:
    /// a read model summing across streams keeps each stream's contribution
    /// as its row and adds them up when it is read (see [`DAILY_SALES`]).
    pub key: (&'static str, &'static str),
    /// Every column with its SQL type, in table order: the record type
    /// the projector writes rows through (`jsonb_to_recordset`).
    pub columns: &'static str,
}

impl Declaration {
    /// Whether this read model takes the events of `stream_id`.
    pub fn takes(&self, stream_id: &str) -> bool {
        stream_id.starts_with(self.stream_prefix)
    }

    /// The column names, in table order.
    pub fn column_names(&self) -> impl Iterator<Item = &'static str> + use<> {
        self.columns
            .split(',')
            .map(|definition| definition.split_whitespace().next().expect("a column name"))
    }

    /// The column names as a `select` list, in table order.
    pub fn select_list(&self) -> String {
        self.column_names().collect::<Vec<_>>().join(", ")
    }
}

/// `rm_orders`: an order's detail, one row per order stream.
pub const ORDERS: Declaration = Declaration {
    name: "orders",
    table: "rm_orders",
    stream_prefix: stream::ORDER,
    key: ("order_id", "uuid"),
    columns: "order_id uuid, customer_id uuid, status text, lines jsonb, total_cents bigint, \
              shipping_address jsonb, rejection_reason text, tracking_number text, \
              created_at timestamptz, updated_at timestamptz, version bigint",
};

/// `rm_products`: a product's price and stock.
pub const PRODUCTS: Declaration = Declaration {
    name: "products",
    table: "rm_products",
    stream_prefix: stream::PRODUCT,
    key: ("sku", "text"),
    columns: "sku text, name text, price_cents bigint, on_hand bigint, reserved bigint, \
              available bigint, version bigint",
};

/// `rm_customers`: a customer and their balance.
pub const CUSTOMERS: Declaration = Declaration {
    name: "customers",
    table: "rm_customers",
    stream_prefix: stream::CUSTOMER,
    key: ("customer_id", "uuid"),
    columns: "customer_id uuid, name text, email text, balance_cents bigint, version bigint",
};

/// `rm_sagas`: a saga's summary columns and its detail document.
pub const SAGAS: Declaration = Declaration {
    name: "sagas",
    table: "rm_sagas",
    stream_prefix: stream::SAGA,
    key: ("order_id", "uuid"),
    columns: "order_id uuid, status text, current_step text, failure_reason text, \
              started_at timestamptz, updated_at timestamptz, finished_at timestamptz, \
              state jsonb, detail jsonb, version bigint, attempts integer, errors text",
};

/// `rm_daily_sales_orders`: each order's contribution to the daily sales
/// report. It takes the same streams as [`ORDERS`]; `lines` is an array of
/// `{sku, units, revenue_cents}`, one per SKU of the order.
pub const DAILY_SALES: Declaration = Declaration {
    name: "daily_sales",
    table: "rm_daily_sales_orders",
    stream_prefix: stream::ORDER,
    key: ("order_id", "uuid"),
    columns: "order_id uuid, lines jsonb, confirmed_on date, cancelled_on date, version bigint",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_select_list_names_the_columns_in_table_order() {
        assert_eq!(
            CUSTOMERS.select_list(),
            "customer_id, name, email, balance_cents, version"
        );
    }

    #[test]
    fn a_read_model_takes_the_streams_of_its_category_only() {
        assert!(DAILY_SALES.takes("order-1") && ORDERS.takes("order-1"));
        assert!(!DAILY_SALES.takes("saga-1") && !DAILY_SALES.takes("orders"));
    }
}
