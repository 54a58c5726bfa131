//! Fuzz target for a candidate's checks file (`checks.json`, carried in a bundle's manifest as
//! `CandidateChecks`): parsed, then run as the agent runs check 1 and 2 on a candidate
//! (`LoadedVersion::new` with the required exports, then `checks::run_vectors`) against each
//! reference rule module, so every vector input the parser lets through reaches a real guest.
//! The property: nothing panics or hangs; a failure names its check; checks that pass really
//! hold (every vector names the interface's function and gets its expected answer); and parsed
//! checks survive being written and read again.
//!
//! Longer: `BOLERO_RANDOM_ITERATIONS=50000 cargo test -p nonstop-runtime --test it fuzz::`.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use nonstop_bundle::{CandidateChecks, TestVector};
use nonstop_fuzzing::{Target, recipes};
use nonstop_runtime::checks::{self, CheckFailure};
use nonstop_runtime::{Fees, Insurance, LoadedVersion, Quota, RuleEngine, RuleKind, Triage};
use wasmtime::component::Component;

use crate::{engine, module_path, tag};

/// Random inputs after the committed ones. Each test first compiles the four modules (2.5 s in a
/// debug build); then an edited file takes about 1 ms, most of them stopping at the parser.
const RANDOM: usize = 300;
const MUTATED: usize = 4000;

fn target() -> Target {
    Target::new(
        "checks",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it"),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    )
}

#[test]
fn checks() {
    let t = target();
    let modules = Modules::load();
    bolero::check!(name = "checks")
        .with_iterations(RANDOM)
        .for_each(|input| t.check(input, |input| modules.check(input)));
}

#[test]
fn checks_mutated() {
    let t = target();
    let modules = Modules::load();
    let corpus = t.corpus().with_words(&[
        b"\"quote\"",
        b"\"split\"",
        b"\"assess\"",
        b"\"decide\"",
        b"\"Ok\"",
        b"\"Err\"",
        b"\"exports\"",
        b"\"nonstop:his-rules/fees@0.1.0\"",
    ]);
    bolero::check!(name = "checks-mutated")
        .with_generator(recipes())
        .with_iterations(MUTATED)
        .with_shrink_time(Duration::ZERO)
        .for_each(|recipe| t.check(&corpus.mutate(recipe), |input| modules.check(input)));
}

/// The reference module of each rule interface, compiled once.
struct Modules {
    engine: RuleEngine,
    fees: Component,
    insurance: Component,
    triage: Component,
    quota: Component,
    _dir: tempfile::TempDir,
}

impl Modules {
    /// The modules, as bolero's closures need them: a panic leaves nothing half-changed in
    /// them (each call gets its own instance), so they are safe to use after one.
    fn load() -> AssertUnwindSafe<Modules> {
        let engine = engine();
        // Copied out of the source tree, so the compiled cache lands beside the copy.
        let dir = tempfile::tempdir().unwrap();
        let compile = |name: &str| {
            let path = dir.path().join(format!("{name}.wasm"));
            std::fs::copy(module_path(name), &path).unwrap();
            engine.load(&path, &tag("", name, "1.0.0").digest).unwrap()
        };
        AssertUnwindSafe(Modules {
            fees: compile("fees-v1"),
            insurance: compile("insurance-v1"),
            triage: compile("triage-v1"),
            quota: compile("quota-v1"),
            engine,
            _dir: dir,
        })
    }

    fn check(&self, input: &[u8]) {
        let Ok(checks) = serde_json::from_slice::<CandidateChecks>(input) else {
            return;
        };
        let written = serde_json::to_vec(&checks).unwrap();
        let again: CandidateChecks =
            serde_json::from_slice(&written).expect("written checks parse");
        assert_eq!(
            again, checks,
            "the checks changed when written and read again"
        );

        self.run::<Fees>(&self.fees, "fees-v1", &checks);
        self.run::<Insurance>(&self.insurance, "insurance-v1", &checks);
        self.run::<Triage>(&self.triage, "triage-v1", &checks);
        self.run::<Quota>(&self.quota, "quota-v1", &checks);
    }

    /// Checks 1 and 2 as the agent runs them on a candidate of rule `R`.
    fn run<R: RuleKind>(&self, component: &Component, name: &str, checks: &CandidateChecks) {
        let tag = tag(R::COMPONENT, name, "1.0.0");
        let version = match LoadedVersion::<R>::new(&self.engine, tag, component, &checks.exports) {
            Ok(v) => v,
            Err(e) => {
                let failure = CheckFailure::Load(e).to_string();
                assert!(failure.starts_with("check 1 "), "{failure}");
                return;
            }
        };
        match checks::run_vectors(&version, &checks.test_vectors, 1) {
            Ok(passed) => {
                assert_eq!(passed, checks.test_vectors.len());
                for v in &checks.test_vectors {
                    really_passes(&version, v);
                }
            }
            Err(failure) => {
                let text = failure.to_string();
                assert!(text.starts_with("check 2 "), "{text}");
            }
        }
    }
}

/// A vector `run_vectors` passed: it names the interface's function, its input fits the
/// function, and the guest answers it as expected.
fn really_passes<R: RuleKind>(version: &LoadedVersion<R>, v: &TestVector) {
    assert_eq!(v.function, R::FUNCTION);
    let input: R::Input = serde_json::from_value(v.input.clone()).expect("a passed input fits");
    let answer = version
        .call(&input)
        .expect("a passed vector's call succeeds");
    assert_eq!(serde_json::to_value(answer).unwrap(), v.expected);
}
