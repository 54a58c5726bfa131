//! A BAD fees module for tests: it grows its memory without bound. The host's memory limit must
//! stop it.

wit_bindgen::generate!({ path: "../../wit", world: "fees-rules" });

use exports::nonstop::his_rules::fees::{FeeQuote, FeeRequest, Guest};

struct Fees;

impl Guest for Fees {
    fn quote(r: FeeRequest) -> Result<FeeQuote, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![r.registration_level; 1 << 20]);
            core::hint::black_box(&hoard);
        }
    }
}

export!(Fees);
