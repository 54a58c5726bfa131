//! A BAD fees module for tests: it keeps state between calls. Each answer's fee grows with the
//! number of calls its instance has served, so one patient's visit changes the next patient's
//! price unless every call gets a fresh instance.

use std::sync::atomic::{AtomicI64, Ordering};

wit_bindgen::generate!({ path: "../../wit", world: "fees-rules" });

use exports::nonstop::his_rules::fees::{FeeLine, FeeQuote, FeeRequest, Guest};

static CALLS_SEEN: AtomicI64 = AtomicI64::new(0);

struct Fees;

impl Guest for Fees {
    fn quote(_: FeeRequest) -> Result<FeeQuote, String> {
        let seen = CALLS_SEEN.fetch_add(1, Ordering::Relaxed);
        let amount_fen = 1000 + 100 * seen;
        let lines = vec![FeeLine { code: "REG-BASE".into(), description: "registration".into(), amount_fen }];
        Ok(FeeQuote { total_fen: amount_fen, lines })
    }
}

export!(Fees);
