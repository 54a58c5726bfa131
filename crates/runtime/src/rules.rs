//! The four rule interfaces of `wit/his-rules.wit`, each as a [`RuleKind`]: its generated
//! bindings, how to call its one function, and the host's own invariants on its answers, which
//! every candidate must keep whatever its rules are.

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre};

use crate::engine::Sandbox;

/// One rule interface: how the host instantiates, calls and checks a component that exports it.
pub trait RuleKind: Send + Sync + 'static {
    /// The component name it is installed under in the version store, e.g. `fees`.
    const COMPONENT: &'static str;
    /// The exported interface, e.g. `nonstop:his-rules/fees@0.1.0`.
    const INTERFACE: &'static str;
    /// The exported function test vectors name, e.g. `quote`.
    const FUNCTION: &'static str;
    /// Generated bindings of an instance.
    type Bindings: Send + 'static;
    /// Generated pre-instantiated form.
    type Pre: Clone + Send + Sync + 'static;
    /// The function's argument.
    type Input: Serialize + DeserializeOwned + Clone + Send + Sync + std::fmt::Debug + 'static;
    /// The function's result.
    type Output: Serialize + DeserializeOwned + Clone + Send + Sync + std::fmt::Debug + 'static;

    /// Checks the component's exports and prepares fast instantiation.
    fn pre(pre: InstancePre<Sandbox>) -> wasmtime::Result<Self::Pre>;
    /// A new instance.
    fn instantiate(pre: &Self::Pre, store: &mut Store<Sandbox>)
    -> wasmtime::Result<Self::Bindings>;
    /// Calls the function.
    fn call(
        b: &Self::Bindings,
        store: &mut Store<Sandbox>,
        input: &Self::Input,
    ) -> wasmtime::Result<Self::Output>;
    /// The host's invariants on an answer; `Err` names the one broken.
    fn invariants(input: &Self::Input, output: &Self::Output) -> Result<(), String>;

    /// Whether an answer is a refusal ("cannot price this"), not a result.
    fn is_refusal(output: &Self::Output) -> bool;
}

/// The sum, or `None` on overflow (a guest's numbers must not be able to wrap a check).
fn checked_sum(values: impl Iterator<Item = i64>) -> Option<i64> {
    values.into_iter().try_fold(0i64, i64::checked_add)
}

/// True when `component` exports an instance named `interface`.
pub(crate) fn exports(component: &Component, interface: &str) -> bool {
    component.get_export_index(None, interface).is_some()
}

/// Generated bindings of each world, with serde on every type so test vectors can be JSON.
pub mod bindings {
    #![allow(missing_docs)]
    /// `fees-rules` world.
    pub mod fees {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "fees-rules",
            additional_derives: [serde::Serialize, serde::Deserialize],
        });
    }
    /// `insurance-rules` world.
    pub mod insurance {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "insurance-rules",
            additional_derives: [serde::Serialize, serde::Deserialize],
        });
    }
    /// `triage-rules` world.
    pub mod triage {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "triage-rules",
            additional_derives: [serde::Serialize, serde::Deserialize],
        });
    }
    /// `quota-rules` world.
    pub mod quota {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "quota-rules",
            additional_derives: [serde::Serialize, serde::Deserialize],
        });
    }
}

pub use bindings::fees::exports::nonstop::his_rules::fees as fees_types;
pub use bindings::insurance::exports::nonstop::his_rules::insurance as insurance_types;
pub use bindings::quota::exports::nonstop::his_rules::quota as quota_types;
pub use bindings::triage::exports::nonstop::his_rules::triage as triage_types;

/// Registration fees: `quote(fee-request) -> result<fee-quote, string>`.
pub struct Fees;
/// Insurance split: `split(split-request) -> result<split-result, string>`.
pub struct Insurance;
/// Triage order: `assess(ticket) -> assessment`.
pub struct Triage;
/// Registration quota: `decide(quota-request) -> decision`.
pub struct Quota;

impl RuleKind for Fees {
    const COMPONENT: &'static str = "fees";
    const INTERFACE: &'static str = "nonstop:his-rules/fees@0.1.0";
    const FUNCTION: &'static str = "quote";
    type Bindings = bindings::fees::FeesRules;
    type Pre = bindings::fees::FeesRulesPre<Sandbox>;
    type Input = fees_types::FeeRequest;
    type Output = Result<fees_types::FeeQuote, String>;

    fn pre(pre: InstancePre<Sandbox>) -> wasmtime::Result<Self::Pre> {
        bindings::fees::FeesRulesPre::new(pre)
    }
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<Sandbox>,
    ) -> wasmtime::Result<Self::Bindings> {
        pre.instantiate(store)
    }
    fn call(
        b: &Self::Bindings,
        store: &mut Store<Sandbox>,
        input: &Self::Input,
    ) -> wasmtime::Result<Self::Output> {
        b.nonstop_his_rules_fees().call_quote(store, *input)
    }
    fn is_refusal(output: &Self::Output) -> bool {
        output.is_err()
    }
    fn invariants(_: &Self::Input, output: &Self::Output) -> Result<(), String> {
        let Ok(q) = output else { return Ok(()) };
        if let Some(l) = q.lines.iter().find(|l| l.amount_fen < 0) {
            return Err(format!(
                "fee line {} is negative ({} fen)",
                l.code, l.amount_fen
            ));
        }
        let sum = checked_sum(q.lines.iter().map(|l| l.amount_fen)).ok_or("fee lines overflow")?;
        if sum != q.total_fen {
            return Err(format!(
                "fee lines sum to {sum} fen but the total is {} fen",
                q.total_fen
            ));
        }
        Ok(())
    }
}

impl RuleKind for Insurance {
    const COMPONENT: &'static str = "insurance";
    const INTERFACE: &'static str = "nonstop:his-rules/insurance@0.1.0";
    const FUNCTION: &'static str = "split";
    type Bindings = bindings::insurance::InsuranceRules;
    type Pre = bindings::insurance::InsuranceRulesPre<Sandbox>;
    type Input = insurance_types::SplitRequest;
    type Output = Result<insurance_types::SplitResult, String>;

    fn pre(pre: InstancePre<Sandbox>) -> wasmtime::Result<Self::Pre> {
        bindings::insurance::InsuranceRulesPre::new(pre)
    }
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<Sandbox>,
    ) -> wasmtime::Result<Self::Bindings> {
        pre.instantiate(store)
    }
    fn call(
        b: &Self::Bindings,
        store: &mut Store<Sandbox>,
        input: &Self::Input,
    ) -> wasmtime::Result<Self::Output> {
        b.nonstop_his_rules_insurance().call_split(store, input)
    }
    fn is_refusal(output: &Self::Output) -> bool {
        output.is_err()
    }
    fn invariants(input: &Self::Input, output: &Self::Output) -> Result<(), String> {
        let Ok(s) = output else { return Ok(()) };
        let total =
            checked_sum(input.lines.iter().map(|l| l.amount_fen)).ok_or("order lines overflow")?;
        if s.total_fen != total {
            return Err(format!(
                "split total {} fen differs from the order total {total} fen",
                s.total_fen
            ));
        }
        if s.fund_fen < 0 || s.self_pay_fen < 0 {
            return Err(format!(
                "negative part: fund {} fen, self-pay {} fen",
                s.fund_fen, s.self_pay_fen
            ));
        }
        if s.fund_fen.checked_add(s.self_pay_fen) != Some(total) {
            return Err(format!(
                "fund {} + self-pay {} fen do not sum to the total {total} fen",
                s.fund_fen, s.self_pay_fen
            ));
        }
        if s.lines.len() != input.lines.len() {
            return Err(format!(
                "{} line splits for {} order lines",
                s.lines.len(),
                input.lines.len()
            ));
        }
        for (line, split) in input.lines.iter().zip(&s.lines) {
            if split.fund_fen < 0
                || split.self_pay_fen < 0
                || split.fund_fen.checked_add(split.self_pay_fen) != Some(line.amount_fen)
            {
                return Err(format!(
                    "line {} is split {} + {} fen, not into its {} fen",
                    line.code, split.fund_fen, split.self_pay_fen, line.amount_fen
                ));
            }
        }
        let cap_left = input
            .annual_cap_fen
            .saturating_sub(input.fund_paid_this_year_fen)
            .max(0);
        if s.fund_fen > cap_left {
            return Err(format!(
                "fund pays {} fen, over the {cap_left} fen left under the annual cap",
                s.fund_fen
            ));
        }
        Ok(())
    }
}

impl RuleKind for Triage {
    const COMPONENT: &'static str = "triage";
    const INTERFACE: &'static str = "nonstop:his-rules/triage@0.1.0";
    const FUNCTION: &'static str = "assess";
    type Bindings = bindings::triage::TriageRules;
    type Pre = bindings::triage::TriageRulesPre<Sandbox>;
    type Input = triage_types::Ticket;
    type Output = triage_types::Assessment;

    fn pre(pre: InstancePre<Sandbox>) -> wasmtime::Result<Self::Pre> {
        bindings::triage::TriageRulesPre::new(pre)
    }
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<Sandbox>,
    ) -> wasmtime::Result<Self::Bindings> {
        pre.instantiate(store)
    }
    fn call(
        b: &Self::Bindings,
        store: &mut Store<Sandbox>,
        input: &Self::Input,
    ) -> wasmtime::Result<Self::Output> {
        b.nonstop_his_rules_triage().call_assess(store, *input)
    }
    fn is_refusal(_: &Self::Output) -> bool {
        false
    }
    fn invariants(_: &Self::Input, a: &Self::Output) -> Result<(), String> {
        // The weight is an integer, so the queue order (weight, then check-in time) is total;
        // what can still break the queue is a ticket that never expires or is requeued nowhere.
        if a.max_misses == 0 {
            return Err(
                "max-misses is 0: a missed patient would expire before being called".into(),
            );
        }
        if a.requeue_behind > 1000 {
            return Err(format!(
                "requeue-behind {} would send a missed patient out of reach",
                a.requeue_behind
            ));
        }
        Ok(())
    }
}

impl RuleKind for Quota {
    const COMPONENT: &'static str = "quota";
    const INTERFACE: &'static str = "nonstop:his-rules/quota@0.1.0";
    const FUNCTION: &'static str = "decide";
    type Bindings = bindings::quota::QuotaRules;
    type Pre = bindings::quota::QuotaRulesPre<Sandbox>;
    type Input = quota_types::QuotaRequest;
    type Output = quota_types::Decision;

    fn pre(pre: InstancePre<Sandbox>) -> wasmtime::Result<Self::Pre> {
        bindings::quota::QuotaRulesPre::new(pre)
    }
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<Sandbox>,
    ) -> wasmtime::Result<Self::Bindings> {
        pre.instantiate(store)
    }
    fn call(
        b: &Self::Bindings,
        store: &mut Store<Sandbox>,
        input: &Self::Input,
    ) -> wasmtime::Result<Self::Output> {
        b.nonstop_his_rules_quota().call_decide(store, *input)
    }
    fn is_refusal(d: &Self::Output) -> bool {
        !d.accept
    }
    fn invariants(r: &Self::Input, d: &Self::Output) -> Result<(), String> {
        use quota_types::Channel;
        if !d.accept {
            return if d.reason.is_empty() {
                Err("a refusal must say why".into())
            } else {
                Ok(())
            };
        }
        let remaining = match d.take_from {
            None => return Err("an accepted registration must name the pool it takes from".into()),
            Some(Channel::OnSite) => r.remaining_on_site,
            Some(Channel::Online) => r.remaining_online,
            Some(Channel::ElderlyReserved) => r.remaining_elderly,
        };
        if remaining == 0 {
            return Err(format!(
                "accepted from the {:?} pool, which is empty",
                d.take_from
            ));
        }
        Ok(())
    }
}
