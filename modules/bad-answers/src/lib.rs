//! A BAD fees module for tests: consistent with itself (lines sum to the total, nothing negative)
//! but every fee is 1 yuan, which its bundle's test vectors (version 1's answers) refuse.

wit_bindgen::generate!({ path: "../../wit", world: "fees-rules" });

use exports::nonstop::his_rules::fees::{FeeLine, FeeQuote, FeeRequest, Guest};

struct Fees;

impl Guest for Fees {
    fn quote(_: FeeRequest) -> Result<FeeQuote, String> {
        let lines = vec![FeeLine { code: "REG-BASE".into(), description: "registration".into(), amount_fen: 100 }];
        Ok(FeeQuote { total_fen: 100, lines })
    }
}

export!(Fees);
