//! A BAD module for tests: published as `fees`, but it exports the triage interface.

wit_bindgen::generate!({ path: "../../wit", world: "triage-rules" });

use exports::nonstop::his_rules::triage::{Assessment, Guest, Ticket};

struct NotFees;

impl Guest for NotFees {
    fn assess(t: Ticket) -> Assessment {
        Assessment { weight: i64::from(t.age_years), requeue_behind: 1, max_misses: 1 }
    }
}

export!(NotFees);
