//! Insurance split, version 1. Class A items are fully eligible, class B items after a 10% share
//! the patient pays first, class C items not at all. The yearly deductible is taken from eligible
//! amounts first, then the fund pays 70% (employee) or 50% (resident) of the rest, up to what is
//! left of the annual cap. Every line is split in integer fen, so the parts sum exactly.

wit_bindgen::generate!({ path: "../../wit", world: "insurance-rules" });

use exports::nonstop::his_rules::insurance::{
    Guest, InsuranceCategory, ItemClass, LineSplit, SplitRequest, SplitResult,
};

struct Insurance;

impl Guest for Insurance {
    fn split(r: SplitRequest) -> Result<SplitResult, String> {
        if let Some(bad) = r.lines.iter().find(|l| l.amount_fen < 0) {
            return Err(format!("line {} has a negative amount", bad.code));
        }
        if r.deductible_used_fen < 0 || r.fund_paid_this_year_fen < 0 || r.annual_cap_fen < 0 {
            return Err("deductible used, fund paid and annual cap must not be negative".into());
        }
        let (deductible, ratio_percent): (i64, i64) = match r.category {
            InsuranceCategory::None => (0, 0),
            InsuranceCategory::Employee => (180_000, 70),
            InsuranceCategory::Resident => (50_000, 50),
        };
        let mut deductible_left = (deductible - r.deductible_used_fen).max(0);
        let mut cap_left = (r.annual_cap_fen - r.fund_paid_this_year_fen).max(0);
        let mut deductible_applied_fen = 0;
        let mut lines = Vec::with_capacity(r.lines.len());
        for l in &r.lines {
            let eligible = match l.item_class {
                ItemClass::ClassA => l.amount_fen,
                ItemClass::ClassB => l.amount_fen * 90 / 100,
                ItemClass::ClassC => 0,
            };
            let eligible = if ratio_percent == 0 { 0 } else { eligible };
            let from_deductible = eligible.min(deductible_left);
            deductible_left -= from_deductible;
            deductible_applied_fen += from_deductible;
            let fund = ((eligible - from_deductible) * ratio_percent / 100).min(cap_left);
            cap_left -= fund;
            lines.push(LineSplit { code: l.code.clone(), fund_fen: fund, self_pay_fen: l.amount_fen - fund });
        }
        let total_fen = r.lines.iter().map(|l| l.amount_fen).sum();
        let fund_fen = lines.iter().map(|l| l.fund_fen).sum();
        Ok(SplitResult {
            total_fen,
            fund_fen,
            self_pay_fen: total_fen - fund_fen,
            deductible_applied_fen,
            lines,
        })
    }
}

export!(Insurance);
