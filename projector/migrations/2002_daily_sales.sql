-- The daily sales report's read model: each order's contribution (its
-- units and revenue per SKU, the UTC day it was confirmed, and the day it
-- was cancelled after that), one row per order stream, guarded by the
-- stream's version like every read model. The query-service sums the rows
-- per SKU and day, so a redelivered event, which cannot move a row to a
-- later version, never counts twice.
--
-- The projector registers the projection's row in `projections` itself
-- (`store::register`).

create table rm_daily_sales_orders (
    order_id      uuid primary key,
    -- [{sku, units, revenue_cents}], one element per SKU.
    lines         jsonb not null,
    confirmed_on  date,
    cancelled_on  date,
    version       bigint not null
);
-- The report reads the orders confirmed, and those cancelled, in a range
-- of days.
create index rm_daily_sales_orders_confirmed on rm_daily_sales_orders (confirmed_on)
    where confirmed_on is not null;
create index rm_daily_sales_orders_cancelled on rm_daily_sales_orders (cancelled_on)
    where cancelled_on is not null;

-- As in 2001: the projector owns it (a rebuild replaces it), and the
-- query-service may read it. Tables the projector creates later (a
-- rebuild's shadow) are readable through 2001's default privileges.
alter table rm_daily_sales_orders owner to orders_projector;
grant select on rm_daily_sales_orders to orders_query;
