//! The store's state machine against a simple model: any sequence of operations, including
//! reopening the store, leaves the same live / candidate / standby / retired / rejected versions as
//! the model, and refuses exactly the operations the model refuses.

use nonstop_store::Store;
use proptest::prelude::*;

use crate::{bundle, comp};

#[derive(Debug, Clone)]
enum Op {
    Stage,
    Promote,
    Reject,
    Rollback,
    Gc(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Stage),
        3 => Just(Op::Promote),
        1 => Just(Op::Reject),
        2 => Just(Op::Rollback),
        1 => (0usize..3).prop_map(Op::Gc),
        1 => Just(Op::Reopen),
    ]
}

/// What the store should hold, as plain version numbers (majors).
#[derive(Debug, Default, Clone, PartialEq)]
struct Model {
    live: Option<u64>,
    candidate: Option<u64>,
    standby: Option<u64>,
    retired: Vec<u64>,
    rejected: Vec<u64>,
    next: u64,
}

impl Model {
    /// Applies `op`; `false` when the store must refuse it.
    fn apply(&mut self, op: &Op) -> bool {
        match op {
            Op::Stage if self.candidate.is_some() => false,
            Op::Stage => {
                self.next += 1;
                self.candidate = Some(self.next);
                true
            }
            Op::Promote => match self.candidate.take() {
                None => false,
                Some(c) => {
                    if let Some(s) = self.standby.take() {
                        self.retired.insert(0, s);
                    }
                    self.standby = self.live.replace(c);
                    true
                }
            },
            Op::Reject => match self.candidate.take() {
                None => false,
                Some(c) => {
                    self.rejected.insert(0, c);
                    true
                }
            },
            Op::Rollback => match self.standby.take() {
                None => false,
                Some(s) => {
                    let bad = self
                        .live
                        .replace(s)
                        .expect("a standby implies a live version");
                    self.rejected.insert(0, bad);
                    if !self.retired.is_empty() {
                        self.standby = Some(self.retired.remove(0));
                    }
                    true
                }
            },
            Op::Gc(keep) => {
                self.retired.truncate(*keep);
                self.rejected.truncate(*keep);
                true
            }
            Op::Reopen => true,
        }
    }
}

fn observed(store: &Store) -> Model {
    let Ok(s) = store.component(&comp("quota")) else {
        return Model::default();
    };
    let major = |e: &Option<nonstop_store::VersionEntry>| e.as_ref().map(|e| e.version.major);
    Model {
        live: major(&s.live),
        candidate: major(&s.candidate),
        standby: major(&s.standby),
        retired: s.retired.iter().map(|e| e.version.major).collect(),
        rejected: s.rejected.iter().map(|r| r.entry.version.major).collect(),
        next: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::init(dir.path()).unwrap();
        let mut model = Model::default();
        let c = comp("quota");
        for op in &ops {
            let allowed = model.apply(op);
            let result = match op {
                Op::Stage => store.stage(&bundle("quota", &format!("{}.0.0", model.next.max(1)), 32)).map(drop),
                Op::Promote => store.promote(&c, None).map(drop),
                Op::Reject => store.reject(&c, None, "model").map(drop),
                Op::Rollback => store.rollback(&c, "model").map(drop),
                Op::Gc(keep) => store.gc(*keep).map(drop),
                Op::Reopen => {
                    drop(store);
                    store = Store::init(dir.path()).unwrap();
                    Ok(())
                }
            };
            // A refusal on a component never staged is "unknown component"; either way it is refused.
            prop_assert_eq!(result.is_ok(), allowed, "{:?} gave {:?}", op, result.err().map(|e| e.to_string()));
            let want = Model { next: 0, ..model.clone() };
            prop_assert_eq!(observed(&store), want, "after {:?}", op);
        }
    }
}
