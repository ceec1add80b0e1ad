//! The catalog read path: `GET /api/v1/products` (a page of products with its total and the
//! products' categories eager-loaded: three statements whatever the page size) and
//! `GET /api/v1/products/{id}`.
//!
//! Freshness: a catalog read shows every stock change that committed at least the replica's
//! lag before the read began (with no replica, every change committed before it began), and
//! never a state that was not committed. Every stock change bumps the product's `version` in
//! the statement that changes the stock, so the versions are part of the committed data and
//! reach the replica with it. A cached response is filed under a key built from the versions
//! it was read at: a page under the tenant's catalog signature (`count(*)` and `sum(version)`
//! of its products, read in the same statement as the page's total; versions only grow, so
//! any change moves the sum), a product under its own version. A reader first reads the
//! signature or version from the read pool, then looks the key up, and on a miss reads the
//! rows from the same pool after it, so what it caches is at least as new as its key. Cache
//! faults cost misses, never staleness: an entry can only be as old as the data that named
//! it. Reads go to the read pool (the replica when the deployment has one).

use std::sync::Arc;

use serde_json::{json, Value as Json};
use shopsim_sim::db::Value;

use crate::app::{q, App, AppResult};
use crate::http::HttpResponse;

/// How long a cached catalog response lives, ms.
pub const CACHE_TTL_MS: u64 = 5_000;

/// The cache key of a catalog response: tenant-scoped, unless the planted bug drops the
/// tenant.
fn cache_key(app: &App, tenant: i64, version: &str, what: &str) -> String {
    if app.bugs.cache_key_without_tenant {
        format!("catalog:v{version}:{what}")
    } else {
        format!("tenant:{tenant}:catalog:v{version}:{what}")
    }
}

fn product_json(row: &[Value], category: Option<&[Value]>) -> Json {
    let int = |i: usize| row[i].as_int().unwrap_or(0);
    // The category is put in as a value: inside `json!` it would be serialized again.
    let category = category.map_or(Json::Null, |c| {
        json!({
            "id": c[0].as_int(),
            "tenant_id": c[1].as_int(),
            "name": c[2].as_text().unwrap_or(""),
        })
    });
    let mut product = json!({
        "id": int(0),
        "tenant_id": int(1),
        "sku": row[2].as_text().unwrap_or(""),
        "name": row[3].as_text().unwrap_or(""),
        "price": int(5),
        "available": int(6) - int(7),
        "version": int(8),
    });
    product["category"] = category;
    product
}

const PRODUCT_COLUMNS: &str =
    "id, tenant_id, sku, name, category_id, price, stock, reserved, version";

/// `GET /api/v1/products?page=&per_page=`.
pub async fn list(app: &App, tenant: i64, page: i64, per_page: i64) -> AppResult<HttpResponse> {
    if page < 1 || !(1..=100).contains(&per_page) {
        return Ok(HttpResponse::new(
            422,
            json!({"error": "page must be >= 1 and per_page in 1..=100"}),
        ));
    }
    let engine = app.engine;
    let mut conn = app.tenant_conn(app.read_pool(), tenant).await?;
    // The tenant scope lives in the connection's session (as a tenancy package's global scope
    // or a row-level security policy would): the page is whatever that tenant owns.
    let scope = match engine {
        shopsim_sim::db::Engine::Postgres => "current_setting('app.tenant_id')::bigint",
        shopsim_sim::db::Engine::InnoDb => "@tenant_id",
    };
    // The page's total, as `paginate()` counts it before fetching the page, with the catalog
    // signature the cache key is built from.
    let count = if app.bugs.page_total_without_tenant_scope {
        "select count(*), sum(version) from products".to_string()
    } else {
        format!("select count(*), sum(version) from products where tenant_id = {scope}")
    };
    let signature = q(engine, &mut conn, &count, &[]).await?;
    let total = crate::app::int_at(&signature, 0, 0).unwrap_or(0);
    let version_sum = crate::app::int_at(&signature, 0, 1).unwrap_or(0);
    let key = cache_key(
        app,
        tenant,
        &format!("{total}.{version_sum}"),
        &format!("products:{page}:{per_page}"),
    );
    if let Some(cached) = app.cache().get_json(&key).await {
        if let Json::Object(body) = &*cached {
            return Ok(page_response(body.clone(), page, "hit"));
        }
    }
    let sql = format!(
        "select {PRODUCT_COLUMNS} from products where tenant_id = {scope} order by id limit ? offset ?"
    );
    let rows = q(
        engine,
        &mut conn,
        &sql,
        &[Value::Int(per_page), Value::Int((page - 1) * per_page)],
    )
    .await?;
    let mut categories: Vec<Vec<Value>> = Vec::new();
    if app.bugs.n_plus_one_product_list {
        // Lazy loading: one query per product.
        for row in &rows.rows {
            let c = q(
                engine,
                &mut conn,
                "select id, tenant_id, name from categories where id = ?",
                &[row[4].clone()],
            )
            .await?;
            categories.extend(c.rows);
        }
    } else if !rows.rows.is_empty() {
        // Eager loading (`with('category')`): one query for the page.
        let mut ids: Vec<i64> = rows.rows.iter().filter_map(|r| r[4].as_int()).collect();
        ids.sort_unstable();
        ids.dedup();
        let marks = vec!["?"; ids.len()].join(", ");
        let sql = format!(
            "select id, tenant_id, name from categories where tenant_id = {scope} and id in ({marks})"
        );
        let params: Vec<Value> = ids.into_iter().map(Value::Int).collect();
        categories = q(engine, &mut conn, &sql, &params).await?.rows;
    }
    drop(conn);
    let products: Vec<Json> = rows
        .rows
        .iter()
        .map(|r| {
            product_json(
                r,
                categories.iter().find(|c| c[0] == r[4]).map(Vec::as_slice),
            )
        })
        .collect();
    let mut body = serde_json::Map::new();
    body.insert("products".to_string(), Json::Array(products));
    body.insert("total".to_string(), total.into());
    let cached = Arc::new(Json::Object(body.clone()));
    app.cache().set_json(&key, cached, CACHE_TTL_MS).await;
    Ok(page_response(body, page, "miss"))
}

/// A product page response: the cached part (`products`, `total`) plus the page number and
/// whether it came from the cache. Built by moving the JSON, not copying it: `json!` would
/// copy every product.
fn page_response(mut body: serde_json::Map<String, Json>, page: i64, cache: &str) -> HttpResponse {
    body.insert("page".to_string(), page.into());
    body.insert("cache".to_string(), cache.into());
    HttpResponse::new(200, Json::Object(body))
}

/// `GET /api/v1/products/{id}`.
pub async fn show(app: &App, tenant: i64, id: i64) -> AppResult<HttpResponse> {
    let engine = app.engine;
    let mut conn = app.read_pool().acquire().await?;
    let version = q(
        engine,
        &mut conn,
        "select version from products where id = ? and tenant_id = ?",
        &[Value::Int(id), Value::Int(tenant)],
    )
    .await?;
    let Some(version) = crate::app::int_at(&version, 0, 0) else {
        return Ok(HttpResponse::not_found("product"));
    };
    let key = cache_key(app, tenant, &version.to_string(), &format!("product:{id}"));
    if let Some(cached) = app.cache().get_json(&key).await {
        return Ok(product_response(Json::clone(&cached), "hit"));
    }
    let sql = format!("select {PRODUCT_COLUMNS} from products where id = ? and tenant_id = ?");
    let rows = q(
        engine,
        &mut conn,
        &sql,
        &[Value::Int(id), Value::Int(tenant)],
    )
    .await?;
    let Some(row) = rows.rows.first() else {
        return Ok(HttpResponse::not_found("product"));
    };
    let category = q(
        engine,
        &mut conn,
        "select id, tenant_id, name from categories where id = ? and tenant_id = ?",
        &[row[4].clone(), Value::Int(tenant)],
    )
    .await?;
    drop(conn);
    let product = product_json(row, category.rows.first().map(Vec::as_slice));
    app.cache()
        .set_json(&key, Arc::new(product.clone()), CACHE_TTL_MS)
        .await;
    Ok(product_response(product, "miss"))
}

/// A product detail response, `{"product": ..., "cache": ...}`, with the product moved in
/// (`json!` would copy it).
fn product_response(product: Json, cache: &str) -> HttpResponse {
    let mut body = serde_json::Map::new();
    body.insert("product".to_string(), product);
    body.insert("cache".to_string(), cache.into());
    HttpResponse::new(200, Json::Object(body))
}
