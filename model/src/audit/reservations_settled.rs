//! `liveness_reservations`: after the faults stop and the run settles, every reservation ended
//! converted or released; none is still held (the expiry job ran, nothing got stuck).

use shopsim_sim::check::{Checker, Report};
use shopsim_sim::history::History;

use super::{int, text};
use crate::shop::ShopState;

/// See the module documentation.
pub struct ReservationsSettled;

impl Checker<ShopState> for ReservationsSettled {
    fn name(&self) -> &str {
        "liveness_reservations"
    }

    fn check(&self, _history: &History, state: &ShopState) -> Report {
        let reservations = state.rows("reservations");
        match reservations.iter().find(|r| text(r, "status") == "held") {
            Some(r) => Report::invalid(
                "liveness_reservations",
                format!(
                    "reservation {} (cart {}, product {}) is still held after the run settled; it expired at {} ms",
                    int(r, "id"),
                    int(r, "cart_id"),
                    int(r, "product_id"),
                    int(r, "expires_at")
                ),
            ),
            None => Report::valid("liveness_reservations", format!("{} reservations settled", reservations.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;

    #[test]
    fn canary_held_forever() {
        let s = state(&[(
            "reservations",
            "id,cart_id,product_id,quantity,status,expires_at; 1,2,3,1,'held',5000",
        )]);
        assert_eq!(
            ReservationsSettled.check(&history(vec![]), &s).verdict,
            Verdict::Invalid
        );
    }
}
