//! A BAD fees module for tests: it never returns. The host's deadline must stop it.

wit_bindgen::generate!({ path: "../../wit", world: "fees-rules" });

use exports::nonstop::his_rules::fees::{FeeQuote, FeeRequest, Guest};

struct Fees;

impl Guest for Fees {
    fn quote(r: FeeRequest) -> Result<FeeQuote, String> {
        let mut n = u64::from(r.patient_age_years);
        // Opaque to the optimiser, so the loop is really executed.
        loop {
            n = core::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
            if n == u64::MAX && core::hint::black_box(false) {
                break;
            }
        }
        Err(format!("unreachable {n}"))
    }
}

export!(Fees);
