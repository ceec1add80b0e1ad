//! `every_endpoint_has_a_latency_class`: every request in the history — shoppers', admins',
//! adversaries' and the provider's webhook deliveries — belongs to a latency class, so no
//! endpoint can grow slow unseen. The classes themselves are `sim::check::LatencySla` checks.

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::History;

use crate::shop::ShopState;

/// See the module documentation.
pub struct EveryEndpointHasALatencyClass {
    kinds: Vec<String>,
}

const NAME: &str = "every_endpoint_has_a_latency_class";

impl EveryEndpointHasALatencyClass {
    /// The check for these classes: (name, kinds, threshold).
    pub fn new(classes: &[(&str, &[&str], f64)]) -> Self {
        EveryEndpointHasALatencyClass {
            kinds: classes
                .iter()
                .flat_map(|(_, kinds, _)| kinds.iter().map(|k| k.to_string()))
                .collect(),
        }
    }
}

impl Checker<ShopState> for EveryEndpointHasALatencyClass {
    fn name(&self) -> &str {
        NAME
    }

    fn check(&self, history: &History, _state: &ShopState) -> Report {
        // A request is an operation with a path: every client's and the provider's.
        let requests = history
            .ops
            .iter()
            .filter(|op| op.details["path"].is_string());
        let mut seen = 0;
        for op in requests {
            seen += 1;
            if !self.kinds.contains(&op.kind) {
                return Report::invalid(NAME, format!("{} is in no latency class", describe(op)));
            }
        }
        if seen == 0 {
            return Report::unknown(NAME, "nothing to judge: no request");
        }
        Report::valid(NAME, format!("{seen} requests, each in a latency class"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;

    #[test]
    fn canary_endpoint_without_a_class() {
        let kinds: &[&str] = &["GET /a"];
        let check = EveryEndpointHasALatencyClass::new(&[("a", kinds, 1.0)]);
        let mut ok = op(0, "GET /a", Some(200), serde_json::json!({}), 1, 2);
        ok.details["path"] = "/a".into();
        let mut hook = op(1, "POST /webhooks", Some(200), serde_json::json!({}), 1, 2);
        hook.details["path"] = "/webhooks".into();
        hook.process = "provider".into();
        let r = check.check(&history(vec![ok.clone(), hook]), &ShopState::default());
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(
            r.witness,
            "#1 provider POST /webhooks status 200 at 1.0 ms is in no latency class"
        );
        assert_eq!(
            check
                .check(&history(vec![ok]), &ShopState::default())
                .verdict,
            Verdict::Valid
        );
    }
}
