-- The shop's tables, as the Laravel migrations create them (PostgreSQL spelling; MariaDB gets
-- AUTO_INCREMENT for BIGSERIAL). Lines ending in a `-- key:<name>` comment are the unique keys
-- that planted bugs remove.
create table categories (id bigserial primary key, tenant_id int not null, name text not null)
create table products (id bigserial primary key, tenant_id int not null, sku text not null, name text not null, category_id int not null, price int not null, stock int not null, reserved int not null default 0, version int not null default 0, unique (tenant_id, sku))
create index products_tenant on products (tenant_id)
create table carts (id bigserial primary key, tenant_id int not null, status text not null, created_at int not null)
create table cart_items (id bigserial primary key, tenant_id int not null, cart_id int not null, product_id int not null, quantity int not null, reservation_id int not null)
create index cart_items_cart on cart_items (cart_id)
create table reservations (id bigserial primary key, tenant_id int not null, cart_id int not null, product_id int not null, quantity int not null, status text not null, expires_at int not null)
create index reservations_cart on reservations (cart_id)
create index reservations_status on reservations (status)
create table orders (id bigserial primary key, tenant_id int not null, cart_id int not null, total int not null, status text not null)
create unique index orders_cart_id_key on orders (cart_id) -- key:orders_cart
create table financial_orders (id bigserial primary key, tenant_id int not null, order_id int not null, status text not null, total int not null, paid int not null default 0, address text, locked_total int)
create index financial_orders_order on financial_orders (order_id)
create table payments (id bigserial primary key, tenant_id int not null, order_id int not null, amount int not null, status text not null)
create index payments_order on payments (order_id)
create table idempotency_keys (name text primary key, created_at int not null)
create table ledger_transactions (id bigserial primary key, tenant_id int not null, payment_id int not null, amount int not null)
create unique index ledger_payment_key on ledger_transactions (payment_id) -- key:ledger_payment
create table receipts (payment_id int primary key, tenant_id int not null, sent_at int not null)
create table audit_log (id bigserial primary key, tenant_id int not null, financial_order_id int not null, action text not null, detail text not null)
create table jobs (id bigserial primary key, tenant_id int not null, kind text not null, payload int not null, attempts int not null default 0, available_at int not null default 0, reserved_at int)
create table failed_jobs (id bigserial primary key, tenant_id int not null, kind text not null, payload int not null, attempts int not null, exception text not null, failed_at int not null)
create index jobs_reserved on jobs (reserved_at)
