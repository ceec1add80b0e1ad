//! HTTP-shaped requests and responses over the harness RPC layer.

use serde::{Deserialize, Serialize};

/// A request to an app node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, `PATCH`.
    pub method: String,
    /// `/api/v1/cart/12/items`.
    pub path: String,
    /// The tenant (the `X-Tenant` header).
    pub tenant: i64,
    /// The JSON body.
    pub body: serde_json::Value,
    /// The client's id for the request (an `X-Request-Id` header): the index of its history
    /// operation. The app tags the request's database statements with it, so a transcript
    /// tells which request ran which statement; nothing else reads it.
    #[serde(default)]
    pub request_id: Option<u64>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The JSON body.
    pub body: serde_json::Value,
    /// SQL statements the request issued (an `X-Query-Count` debug header).
    pub queries: Option<u32>,
    /// The tenants whose rows the request's statements read or wrote, in order (a debug
    /// header from the database's row audit): a request must touch only its own tenant's.
    pub row_tenants: Vec<i64>,
    /// The first statement that touched a row of another tenant than the request's, if any,
    /// with that tenant: the witness a check names.
    pub foreign_statement: Option<(i64, String)>,
}

impl HttpResponse {
    /// A response with `status` and `body`.
    pub fn new(status: u16, body: serde_json::Value) -> HttpResponse {
        assert!((100..600).contains(&status));
        HttpResponse {
            status,
            body,
            queries: None,
            row_tenants: Vec::new(),
            foreign_statement: None,
        }
    }

    /// A 404 naming what was not found (`cart`, `order`, `payment`, `product`,
    /// `financial_order`) in its `missing` field, so a client can tell which of the objects
    /// its request named is missing.
    pub fn not_found(what: &str) -> HttpResponse {
        HttpResponse::new(
            404,
            serde_json::json!({"error": format!("{} not found", what.replace('_', " ")), "missing": what}),
        )
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The route class of a path, as used for latency classes and history kinds:
/// `/api/v1/cart/12/items` -> `/api/v1/cart/{id}/items`.
pub fn route(method: &str, path: &str) -> String {
    let parts: Vec<String> = path
        .split('/')
        .map(|p| {
            if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) {
                "{id}".to_string()
            } else {
                p.to_string()
            }
        })
        .collect();
    format!("{method} {}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_name_the_class() {
        assert_eq!(
            super::route("POST", "/api/v1/cart/12/items"),
            "POST /api/v1/cart/{id}/items"
        );
    }
}
