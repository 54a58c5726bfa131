//! Triage queue order, version 1: emergencies first by level, then priority groups (80 and over,
//! 65 and over, under 6, disabled, military), appointments before walk-ins, patients back from
//! tests ahead of new ones; each missed call costs priority. A missed patient is requeued behind
//! the next 3 waiting patients and the ticket expires after 3 misses.

wit_bindgen::generate!({ path: "../../wit", world: "triage-rules" });

use exports::nonstop::his_rules::triage::{Assessment, Guest, Ticket};

struct Triage;

impl Guest for Triage {
    fn assess(t: Ticket) -> Assessment {
        let mut weight: i64 = match t.emergency_level {
            1 => 1_000_000,
            2 => 500_000,
            3 => 100_000,
            4 => 50_000,
            _ => 0,
        };
        weight += if t.age_years >= 80 {
            3000
        } else if t.age_years >= 65 {
            2000
        } else if t.age_years < 6 {
            1500
        } else {
            0
        };
        if t.disabled {
            weight += 2000;
        }
        if t.military {
            weight += 2000;
        }
        if t.appointment {
            weight += 1000;
        }
        if t.returned_from_tests {
            weight += 2500;
        }
        if t.revisit {
            weight += 500;
        }
        weight -= 1000 * i64::from(t.missed_calls);
        Assessment { weight, requeue_behind: 3, max_misses: 3 }
    }
}

export!(Triage);
