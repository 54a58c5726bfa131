//! The agent end to end: real bundles of the real rule modules pushed into a store and runtime
//! while threads call the live rules, as request workers would.

mod program;
mod updates;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nonstop_agent::Agent;
use nonstop_bundle::{
    BundleLimits, CandidateChecks, ComponentKind, Draft, SecretKey, TrustedKeys, Verifier,
};
use nonstop_runtime::rules::fees_types::{ClinicType, DoctorTitle, FeeRequest};
use nonstop_runtime::{CheckConfig, RuleEngine, Rules, RuntimeConfig};
use nonstop_store::Store;

/// A node's update side: a store, the live rules, and the agent driving them.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub rules: Rules,
    pub agent: Agent,
}

/// Preset requirements small enough for tests.
pub fn checks() -> CheckConfig {
    CheckConfig {
        shadow_calls: 50,
        shadow_timeout_secs: 30,
        max_latency_ratio: 20.0,
        watch_calls: 300,
        watch_secs: 2,
        ..CheckConfig::default()
    }
}

pub fn publisher() -> SecretKey {
    SecretKey::from_seed([21; 32])
}

/// Starts a node on `dir` (a new one if `None`).
pub fn start(dir: Option<tempfile::TempDir>) -> Node {
    start_on(
        dir.unwrap_or_else(|| tempfile::tempdir().unwrap()),
        checks(),
    )
}

/// Starts a new node with other preset requirements.
pub fn start_with(checks: CheckConfig) -> Node {
    start_on(tempfile::tempdir().unwrap(), checks)
}

pub fn start_on(dir: tempfile::TempDir, checks: CheckConfig) -> Node {
    let store = Store::init(&dir.path().join("store")).unwrap();
    let mut trusted = TrustedKeys::new();
    trusted.add(publisher().public());
    let engine = RuleEngine::new(RuntimeConfig {
        max_memory_bytes: 4 << 20,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let rules = Rules::new();
    let agent = Agent::start(
        store,
        Verifier::new(trusted, BundleLimits::default()),
        engine,
        rules.clone(),
        checks,
    )
    .unwrap();
    Node { dir, rules, agent }
}

fn modules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../modules")
}

/// A signed bundle of the built module `module`, published as `component` `version`, carrying
/// the test vectors beside the module's source.
pub fn bundle(module: &str, component: &str, version: &str) -> Vec<u8> {
    let payload = std::fs::read(modules().join("dist").join(format!("{module}.wasm"))).unwrap();
    let checks: CandidateChecks = serde_json::from_str(
        &std::fs::read_to_string(modules().join(module).join("checks.json")).unwrap(),
    )
    .unwrap();
    let mut draft = Draft::new(
        component,
        ComponentKind::WasmComponent,
        version.parse().unwrap(),
        "rules.wasm",
    )
    .unwrap();
    draft.checks = checks;
    nonstop_bundle::create(&draft, &payload, &publisher()).unwrap()
}

/// Which visits the traffic thread sends.
pub const GENERAL_ONLY: u64 = 0;
/// General and night clinic visits, all ages.
pub const MIXED: u64 = 1;

/// Calls the live fees rule in a loop, like request workers; counts calls, failed calls, and calls
/// the live version failed but the standby answered ("covered"). When `night_after` names a
/// version, it sends only general visits until that version answers.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    pub calls: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub covered: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the traffic thread saw.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    /// Calls made.
    pub calls: u64,
    /// Calls that got no answer.
    pub failed: u64,
    /// Calls the live version failed and the standby answered.
    pub covered: u64,
}

impl Traffic {
    pub fn start(rules: &Rules, mode: u64, night_after: Option<&str>) -> Traffic {
        let counter = || Arc::new(AtomicU64::new(0));
        let (stop, calls, failed, covered) = (
            Arc::new(AtomicBool::new(false)),
            counter(),
            counter(),
            counter(),
        );
        let fees = rules.fees.clone();
        let night_after: Option<semver::Version> = night_after.map(|v| v.parse().unwrap());
        let (s, c, f, cov) = (stop.clone(), calls.clone(), failed.clone(), covered.clone());
        let thread = std::thread::spawn(move || {
            let mut mixed = mode == MIXED;
            let mut i: u32 = 0;
            while !s.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                let night = mixed && i.is_multiple_of(2);
                let request = FeeRequest {
                    registration_level: 1 + (i % 4) as u8,
                    doctor_title: [
                        DoctorTitle::Chief,
                        DoctorTitle::Attending,
                        DoctorTitle::Resident,
                    ][(i % 3) as usize],
                    clinic_type: if night {
                        ClinicType::Night
                    } else {
                        ClinicType::General
                    },
                    patient_age_years: i % 95,
                    first_visit: i.is_multiple_of(5),
                };
                c.fetch_add(1, Ordering::Relaxed);
                match fees.call(&request) {
                    Ok(answer) => {
                        if answer.live_failure.is_some() {
                            cov.fetch_add(1, Ordering::Relaxed);
                        } else if night_after.as_ref() == Some(&answer.version.version) {
                            mixed = true;
                        }
                    }
                    Err(_) => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if i.is_multiple_of(64) {
                    // Leave the agent thread room on a 2-core machine.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        });
        Traffic {
            stop,
            calls,
            failed,
            covered,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns what it saw.
    pub fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        Tally {
            calls: self.calls.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            covered: self.covered.load(Ordering::Relaxed),
        }
    }
}
