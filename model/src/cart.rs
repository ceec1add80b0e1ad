//! Carts, stock reservations and checkout: `POST /api/v1/cart`, `POST /api/v1/cart/{id}/items`,
//! `POST /api/v1/cart/{id}/convert`, and the job that releases expired reservations.
//!
//! Adding an item reserves stock for a TTL inside one transaction that locks the product row
//! (`lockForUpdate`), so two shoppers cannot both take the last unit. Converting locks the cart
//! row first, so converting one cart twice, concurrently or not, yields one order: the second
//! call returns the first's order.

use serde_json::json;
use shopsim_sim::db::Value;
use shopsim_sim::{always, sometimes};

use crate::app::{insert_id, int_at, q, text_at, App, AppResult};
use crate::http::HttpResponse;
use crate::windows;

/// `POST /api/v1/cart`.
pub async fn create(app: &App, tenant: i64) -> AppResult<HttpResponse> {
    let engine = app.engine;
    let now = app.now_ms();
    let mut conn = app.pool.acquire().await?;
    let id = insert_id(
        engine,
        &mut conn,
        "insert into carts (tenant_id, status, created_at) values (?, 'open', ?)",
        &[Value::Int(tenant), Value::Int(now)],
    )
    .await?;
    Ok(HttpResponse::new(201, json!({ "cart_id": id })))
}

/// `POST /api/v1/cart/{id}/items`: reserves `quantity` of `product` for the cart.
pub async fn add_item(
    app: &App,
    tenant: i64,
    cart_id: i64,
    product: i64,
    quantity: i64,
) -> AppResult<HttpResponse> {
    assert!(quantity > 0);
    let engine = app.engine;
    let bug = app.bugs.oversell_check_then_act;
    let cart_unlocked = app.bugs.add_item_without_cart_lock;
    let expires_at = app.now_ms() + app.config.reservation_ttl_ms as i64;
    // The planted replica bug: availability is judged from the (lagging) replica and the
    // primary transaction below trusts that judgement.
    let replica_check = match (&app.replica_pool, app.bugs.stock_check_from_replica) {
        (Some(replica), true) => {
            let mut conn = replica.acquire().await?;
            let row = q(
                engine,
                &mut conn,
                "select stock, reserved from products where id = ? and tenant_id = ?",
                &[Value::Int(product), Value::Int(tenant)],
            )
            .await?;
            match (int_at(&row, 0, 0), int_at(&row, 0, 1)) {
                (Some(stock), Some(reserved)) if stock - reserved >= quantity => true,
                (Some(stock), Some(reserved)) => {
                    return Ok(HttpResponse::new(
                        422,
                        json!({"error": "insufficient stock", "product_id": product, "available": stock - reserved, "requested": quantity}),
                    ))
                }
                _ => return Ok(HttpResponse::not_found("product")),
            }
        }
        _ => false,
    };
    let mut conn = app.pool.acquire().await?;
    let bump_early = app.bugs.catalog_version_bumped_before_commit;
    if bump_early {
        // The planted bug: the catalog is invalidated (the product's version bumped) in a
        // statement of its own, before the stock change below commits; a reader in between
        // caches the old stock under the new version.
        q(
            engine,
            &mut conn,
            "update products set version = version + 1 where id = ? and tenant_id = ?",
            &[Value::Int(product), Value::Int(tenant)],
        )
        .await?;
    }
    // The stock change and the product's catalog version change in one statement, so a
    // reader that sees the new version sees the new stock.
    let bump = if bump_early {
        ""
    } else {
        ", version = version + 1"
    };
    conn.transaction(app.attempts(), move |c| {
        Box::pin(async move {
            // The cart row is locked so that a concurrent convert sees this item or none of it;
            // the planted bug reads it unlocked, so an add racing the convert slips in beside
            // the order.
            let lock = if cart_unlocked { "" } else { " for update" };
            let sql = format!("select status from carts where id = ? and tenant_id = ?{lock}");
            let cart = q(engine, c, &sql, &[Value::Int(cart_id), Value::Int(tenant)]).await?;
            match text_at(&cart, 0, 0).as_deref() {
                None => return Ok(HttpResponse::not_found("cart")),
                Some("open") => {}
                Some(_) => {
                    sometimes!(windows::ADD_ITEM_CART_CONVERTED, true).await;
                    return Ok(HttpResponse::new(409, json!({"error": "cart is already converted"})));
                }
            }
            let lock = if bug { "" } else { " for update" };
            let sql = format!("select stock, reserved from products where id = ? and tenant_id = ?{lock}");
            let row = q(engine, c, &sql, &[Value::Int(product), Value::Int(tenant)]).await?;
            let (Some(stock), Some(reserved)) = (int_at(&row, 0, 0), int_at(&row, 0, 1)) else {
                return Ok(HttpResponse::not_found("product"));
            };
            let available = stock - reserved;
            sometimes!(windows::ADD_ITEM_LAST_UNITS, available > 0 && available <= quantity).await;
            if available < quantity && !replica_check {
                return Ok(HttpResponse::new(
                    422,
                    json!({"error": "insufficient stock", "product_id": product, "available": available, "requested": quantity}),
                ));
            }
            if bug {
                // Check-then-act: writes the quantity read earlier, not the current one.
                let sql = format!("update products set reserved = ?{bump} where id = ?");
                q(engine, c, &sql, &[Value::Int(reserved + quantity), Value::Int(product)]).await?;
            } else {
                let sql = format!("update products set reserved = reserved + ?{bump} where id = ?");
                q(engine, c, &sql, &[Value::Int(quantity), Value::Int(product)]).await?;
            }
            let reservation = insert_id(
                engine,
                c,
                "insert into reservations (tenant_id, cart_id, product_id, quantity, status, expires_at) values (?, ?, ?, ?, 'held', ?)",
                &[Value::Int(tenant), Value::Int(cart_id), Value::Int(product), Value::Int(quantity), Value::Int(expires_at)],
            )
            .await?;
            q(
                engine,
                c,
                "insert into cart_items (tenant_id, cart_id, product_id, quantity, reservation_id) values (?, ?, ?, ?, ?)",
                &[Value::Int(tenant), Value::Int(cart_id), Value::Int(product), Value::Int(quantity), Value::Int(reservation)],
            )
            .await?;
            Ok(HttpResponse::new(201, json!({"reservation_id": reservation, "expires_at": expires_at})))
        })
    })
    .await
}

/// `POST /api/v1/cart/{id}/convert`: turns the cart and its held reservations into an order.
pub async fn convert(app: &App, tenant: i64, cart_id: i64) -> AppResult<HttpResponse> {
    let engine = app.engine;
    let bug = app.bugs.double_order_on_convert;
    let by_product = app.config.lock_products_in_id_order;
    let mut conn = app.pool.acquire().await?;
    conn.transaction(app.attempts(), move |c| {
        Box::pin(async move {
            let lock = if bug { "" } else { " for update" };
            let sql = format!("select status from carts where id = ? and tenant_id = ?{lock}");
            let cart = q(engine, c, &sql, &[Value::Int(cart_id), Value::Int(tenant)]).await?;
            match text_at(&cart, 0, 0).as_deref() {
                None => return Ok(HttpResponse::not_found("cart")),
                Some("converted") => {
                    let order = q(engine, c, "select id from orders where cart_id = ?", &[Value::Int(cart_id)]).await?;
                    sometimes!(windows::CONVERT_ALREADY_CONVERTED, true).await;
                    return Ok(HttpResponse::new(200, json!({"order_id": int_at(&order, 0, 0), "existing": true})));
                }
                Some(_) => {}
            }
            // Candidates without a range lock (on InnoDB a locking read by cart would also lock
            // the gap to the next cart's reservations); each is then locked by primary key and
            // re-checked, since the expiry job may have released it meanwhile.
            let candidates = q(
                engine,
                c,
                "select id, product_id, quantity from reservations where cart_id = ? and status = 'held' order by id",
                &[Value::Int(cart_id)],
            )
            .await?;
            let mut order: Vec<&Vec<Value>> = candidates.rows.iter().collect();
            if by_product {
                // One global lock order (product, then reservation) for every convert: no two
                // converts can each hold a product the other waits for.
                order.sort_by_key(|row| (row[1].as_int(), row[0].as_int()));
            }
            let mut total = 0i64;
            let mut converted = 0;
            for candidate in order {
                let reservation = candidate[0].as_int().expect("ids are not null");
                let (product, quantity) = if bug {
                    // Trusts the unlocked read: another convert may be converting these too.
                    (candidate[1].as_int().expect("not null"), candidate[2].as_int().expect("not null"))
                } else {
                    let row = q(
                        engine,
                        c,
                        "select product_id, quantity, status from reservations where id = ? for update",
                        &[Value::Int(reservation)],
                    )
                    .await?;
                    if text_at(&row, 0, 2).as_deref() != Some("held") {
                        sometimes!(windows::CONVERT_RESERVATION_TAKEN, true).await;
                        continue;
                    }
                    match (int_at(&row, 0, 0), int_at(&row, 0, 1)) {
                        (Some(product), Some(quantity)) => (product, quantity),
                        _ => unreachable!("reservation columns are not null"),
                    }
                };
                let price = q(engine, c, "select price from products where id = ?", &[Value::Int(product)]).await?;
                total += int_at(&price, 0, 0).unwrap_or(0) * quantity;
                q(
                    engine,
                    c,
                    "update products set stock = stock - ?, reserved = reserved - ?, version = version + 1 where id = ?",
                    &[Value::Int(quantity), Value::Int(quantity), Value::Int(product)],
                )
                .await?;
                q(engine, c, "update reservations set status = 'converted' where id = ?", &[Value::Int(reservation)]).await?;
                converted += 1;
            }
            if converted == 0 {
                return Ok(HttpResponse::new(422, json!({"error": "no reserved items (empty cart or reservations expired)"})));
            }
            let order = insert_id(
                engine,
                c,
                "insert into orders (tenant_id, cart_id, total, status) values (?, ?, ?, 'placed')",
                &[Value::Int(tenant), Value::Int(cart_id), Value::Int(total)],
            )
            .await?;
            q(
                engine,
                c,
                "insert into financial_orders (tenant_id, order_id, status, total, paid) values (?, ?, 'draft', ?, 0)",
                &[Value::Int(tenant), Value::Int(order), Value::Int(total)],
            )
            .await?;
            q(engine, c, "update carts set status = 'converted' where id = ?", &[Value::Int(cart_id)]).await?;
            Ok(HttpResponse::new(201, json!({"order_id": order, "total": total})))
        })
    })
    .await
}

/// The scheduled job that releases expired reservations; returns how many expired
/// reservations it found (released by it, or converted first by a checkout).
///
/// Candidates are read without locks; each is released by a conditional UPDATE on its primary
/// key (which locks just that row and re-checks that it is still held), so a convert that got
/// there first wins and the job never holds a range lock.
pub async fn release_expired(app: &App) -> AppResult<usize> {
    let engine = app.engine;
    let now = app.now_ms();
    let recheck = !app.bugs.expiry_releases_without_recheck;
    let mut conn = app.pool.acquire().await?;
    let expired = q(
        engine,
        &mut conn,
        "select id, product_id, quantity from reservations where status = 'held' and expires_at < ? order by id limit 50",
        &[Value::Int(now)],
    )
    .await?;
    for row in &expired.rows {
        let (Some(reservation), Some(product), Some(quantity)) =
            (row[0].as_int(), row[1].as_int(), row[2].as_int())
        else {
            unreachable!("reservation columns are not null");
        };
        conn.transaction(app.attempts(), move |c| {
            Box::pin(async move {
                // The planted bug drops the re-check: a reservation converted since the
                // candidates were read is released all the same.
                let sql = if recheck {
                    "update reservations set status = 'released' where id = ? and status = 'held'"
                } else {
                    "update reservations set status = 'released' where id = ?"
                };
                let updated = q(engine, c, sql, &[Value::Int(reservation)]).await?;
                if updated.rows_affected == 0 {
                    return Ok(false);
                }
                always!(
                    "expiry: one reservation released at a time",
                    updated.rows_affected == 1
                );
                q(
                    engine,
                    c,
                    "update products set reserved = reserved - ?, version = version + 1 where id = ?",
                    &[Value::Int(quantity), Value::Int(product)],
                )
                .await?;
                Ok(true)
            })
        })
        .await?;
    }
    Ok(expired.rows.len())
}
