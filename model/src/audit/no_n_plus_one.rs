//! `no_n_plus_one`: a product list request issues a bounded number of statements (the tenant
//! context, the total, the page, and the categories eager-loaded for it), whatever the page
//! size. The
//! count is the app's query listener's, so every statement counts.

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::History;

use crate::shop::ShopState;

/// Statements a product list may issue: the tenant context, the total, the page and its
/// categories.
pub const LIST_QUERIES_MAX: u64 = 4;

/// See the module documentation.
pub struct NoNPlusOne;

impl Checker<ShopState> for NoNPlusOne {
    fn name(&self) -> &str {
        "no_n_plus_one"
    }

    fn check(&self, history: &History, _state: &ShopState) -> Report {
        let mut lists = 0;
        for op in history.of_kind("GET /api/v1/products") {
            let Some(queries) = op.details["response"]["queries"].as_u64() else {
                continue;
            };
            lists += 1;
            if queries > LIST_QUERIES_MAX {
                let size = op.details["response"]["body"]["products"]
                    .as_array()
                    .map_or(0, Vec::len);
                return Report::invalid(
                    "no_n_plus_one",
                    format!("{} issued {queries} statements for a page of {size} products (at most {LIST_QUERIES_MAX})", describe(op)),
                );
            }
        }
        Report::valid(
            "no_n_plus_one",
            format!("{lists} product lists, at most {LIST_QUERIES_MAX} statements each"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;

    #[test]
    fn canary_one_query_per_product() {
        let mut list = op(
            0,
            "GET /api/v1/products",
            Some(200),
            serde_json::json!({"products": [{}, {}, {}]}),
            1,
            2,
        );
        list.details["response"]["queries"] = 6.into();
        let r = NoNPlusOne.check(&history(vec![list]), &ShopState::default());
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness
                .ends_with("issued 6 statements for a page of 3 products (at most 4)"),
            "{}",
            r.witness
        );
    }
}
