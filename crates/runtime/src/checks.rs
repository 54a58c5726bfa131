//! Candidate checks: testing the copy's running state before it may go live. Run on the agent's
//! thread, never on a request-serving one, and never on live traffic (shadow calls discard the
//! candidate's answers).
//!
//! 1. it compiles and exports the expected interface ([`LoadedVersion::new`]);
//! 2. it gives the bundle's test vectors their expected answers, keeps the host's invariants on
//!    each, and answers the same input the same way twice ([`run_vectors`]);
//! 3. beside live traffic it neither fails nor slows down past the configured ratio, and its
//!    differences from the live answers are counted and reported ([`shadow`]).

use std::time::{Duration, Instant};

use nonstop_bundle::TestVector;
use serde::Serialize;

use crate::{CallFailure, LiveModule, LoadedVersion, RuleKind, RuntimeError};

/// Which preset requirement a candidate failed, with the evidence.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailure {
    /// Check 1: it does not compile, or does not export the interface.
    #[error("check 1 (compiles and exports the interface): {0}")]
    Load(RuntimeError),
    /// Check 2: the bundle carries fewer test vectors than the node requires.
    #[error(
        "check 2 (test vectors): the bundle carries {found}, the node requires at least {required}"
    )]
    TooFewVectors {
        /// Vectors carried.
        found: usize,
        /// Vectors required.
        required: usize,
    },
    /// Check 2: a vector names another function.
    #[error(
        "check 2 (test vector {index}): names function {function}, but the interface's function is {expected}"
    )]
    WrongFunction {
        /// Vector index (from 0).
        index: usize,
        /// Function named.
        function: String,
        /// The interface's function.
        expected: &'static str,
    },
    /// Check 2: a vector's input does not fit the function.
    #[error("check 2 (test vector {index}): input does not fit the function: {error}")]
    BadVectorInput {
        /// Vector index.
        index: usize,
        /// Why.
        error: String,
    },
    /// Check 2: the call failed.
    #[error("check 2 (test vector {index}): {failure}")]
    VectorCall {
        /// Vector index.
        index: usize,
        /// How the call failed.
        failure: CallFailure,
    },
    /// Check 2: a wrong answer.
    #[error("check 2 (test vector {index}): expected {expected}, got {got}")]
    VectorMismatch {
        /// Vector index.
        index: usize,
        /// Expected answer (JSON).
        expected: String,
        /// Actual answer (JSON).
        got: String,
    },
    /// Check 2: the same input gave two answers (the module keeps state between calls).
    #[error("check 2 (test vector {index}): the same input gave {first} then {second}")]
    Nondeterministic {
        /// Vector index.
        index: usize,
        /// First answer.
        first: String,
        /// Second answer.
        second: String,
    },
    /// Check 3: the candidate failed on a live input.
    #[error("check 3 (shadow traffic, call {index}): {failure}; input {input}")]
    ShadowCall {
        /// Shadow call index.
        index: usize,
        /// How it failed.
        failure: CallFailure,
        /// The live input (JSON).
        input: String,
    },
    /// Check 3: not enough live traffic arrived in time.
    #[error(
        "check 3 (shadow traffic): only {seen} of {required} live calls arrived within {secs} s"
    )]
    ShadowStarved {
        /// Samples processed.
        seen: u32,
        /// Samples required.
        required: u32,
        /// The timeout.
        secs: u64,
    },
    /// Check 3: the candidate refuses inputs the live version answers.
    #[error(
        "check 3 (shadow traffic): refused {refused} of {calls} live inputs the live version answered, over the limit of {max_rate}"
    )]
    NewRefusals {
        /// Inputs refused.
        refused: u32,
        /// Calls shadowed.
        calls: u32,
        /// The limit, as a share of calls.
        max_rate: f64,
    },
    /// Check 3: the candidate is too slow.
    #[error(
        "check 3 (shadow traffic): candidate median {candidate_us:.1} µs is {ratio:.2}x the live version's {live_us:.1} µs, over the limit of {max}x"
    )]
    TooSlow {
        /// Candidate median latency.
        candidate_us: f64,
        /// Live median latency on the same inputs.
        live_us: f64,
        /// Their ratio.
        ratio: f64,
        /// The limit.
        max: f64,
    },
}

/// Runs every test vector twice on `version`: the answer must equal the expected one, keep the
/// host's invariants, and be the same both times. Returns how many passed.
pub fn run_vectors<R: RuleKind>(
    version: &LoadedVersion<R>,
    vectors: &[TestVector],
    required: usize,
) -> Result<usize, CheckFailure> {
    if vectors.len() < required {
        return Err(CheckFailure::TooFewVectors {
            found: vectors.len(),
            required,
        });
    }
    for (index, v) in vectors.iter().enumerate() {
        if v.function != R::FUNCTION {
            return Err(CheckFailure::WrongFunction {
                index,
                function: v.function.clone(),
                expected: R::FUNCTION,
            });
        }
        let input: R::Input =
            serde_json::from_value(v.input.clone()).map_err(|e| CheckFailure::BadVectorInput {
                index,
                error: e.to_string(),
            })?;
        let answer = |()| {
            version
                .call(&input)
                .map(|out| to_json(&out))
                .map_err(|failure| CheckFailure::VectorCall { index, failure })
        };
        let first = answer(())?;
        if first != v.expected {
            return Err(CheckFailure::VectorMismatch {
                index,
                expected: v.expected.to_string(),
                got: first.to_string(),
            });
        }
        let second = answer(())?;
        if second != first {
            return Err(CheckFailure::Nondeterministic {
                index,
                first: first.to_string(),
                second: second.to_string(),
            });
        }
    }
    Ok(vectors.len())
}

/// What check 3 requires.
#[derive(Debug, Clone)]
pub struct ShadowLimits {
    /// Live calls to shadow.
    pub calls: u32,
    /// How long to wait for them.
    pub timeout: Duration,
    /// Largest candidate / live median latency ratio.
    pub max_latency_ratio: f64,
    /// Largest share of shadowed calls the candidate may refuse although live answered them.
    pub max_new_refusal_rate: f64,
    /// After this long without a live call, the remaining calls replay recorded inputs instead
    /// of waiting: an idle hospital (the night, when updates are pushed) has no traffic to
    /// shadow, and waiting for it would reject every update.
    pub idle: Duration,
    /// Inputs to replay besides the live ones seen (the bundle's test vector inputs, in the
    /// interface's JSON form). With none, an idle node waits until `timeout`.
    pub replay: Vec<serde_json::Value>,
}

/// What shadow traffic showed.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// Calls the candidate shadowed.
    pub calls: u32,
    /// Of them, replays of recorded inputs while live traffic was idle (both versions called on
    /// this thread); the others are live calls.
    pub replayed: u32,
    /// How many of its answers differed from the live answers.
    pub differences: u32,
    /// How many inputs it refused that the live version answered.
    pub new_refusals: u32,
    /// Up to three differing calls: input, live answer, candidate answer.
    pub examples: Vec<[serde_json::Value; 3]>,
    /// Median latency of the live version on the same inputs (a private instance, this thread).
    pub live_median_us: f64,
    /// Median latency of the candidate (a private instance, this thread).
    pub candidate_median_us: f64,
    /// `candidate_median_us / live_median_us`.
    pub latency_ratio: f64,
}

/// Runs the candidate beside live calls of `module` (check 3). Live answers are never taken from
/// the candidate; its answers are checked, compared and discarded. For the latency ratio both
/// versions are timed on private instances on this thread, on the same inputs, so the ratio
/// compares like with like and the live version's own counters and instances are untouched.
pub fn shadow<R: RuleKind>(
    module: &LiveModule<R>,
    candidate: &LoadedVersion<R>,
    limits: &ShadowLimits,
) -> Result<ShadowReport, CheckFailure> {
    let samples = module.tap(1024);
    let result = shadow_samples(module, candidate, &samples, limits);
    module.untap();
    result
}

fn shadow_samples<R: RuleKind>(
    module: &LiveModule<R>,
    candidate: &LoadedVersion<R>,
    samples: &std::sync::mpsc::Receiver<crate::live::ShadowSample<R>>,
    limits: &ShadowLimits,
) -> Result<ShadowReport, CheckFailure> {
    let deadline = Instant::now() + limits.timeout;
    let mut report = ShadowReport {
        calls: 0,
        replayed: 0,
        differences: 0,
        new_refusals: 0,
        examples: Vec::new(),
        live_median_us: 0.0,
        candidate_median_us: 0.0,
        latency_ratio: 1.0,
    };
    let (mut live_us, mut cand_us) = (Vec::new(), Vec::new());
    let live_version = module.live();
    // Latency is timed as production pays it: where every call gets an instance of its own (the
    // default), instantiating is part of each timed call, so a candidate slow to start is caught;
    // otherwise on one warm instance of each.
    let fresh = candidate.instance_per_call();
    let warm = |v: &LoadedVersion<R>| (!fresh).then(|| v.held_instance().ok()).flatten();
    let mut live_timer = live_version.as_deref().and_then(warm);
    let mut cand_timer = warm(candidate);
    let mut replay = Replay::new(&limits.replay);
    let mut last_live = Instant::now();
    // False once the live version answered none of the inputs to replay (until a live input
    // adds one): then only live traffic can end the wait.
    let mut can_replay = true;
    while report.calls < limits.calls {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let wait = match can_replay {
            true => left.min(limits.idle.saturating_sub(now - last_live)),
            false => left,
        };
        let sample = match samples.recv_timeout(wait) {
            Ok(sample) => {
                last_live = Instant::now();
                replay.record(&sample.input);
                can_replay = true;
                sample
            }
            Err(_) if Instant::now() >= deadline => {
                return Err(CheckFailure::ShadowStarved {
                    seen: report.calls,
                    required: limits.calls,
                    secs: limits.timeout.as_secs(),
                });
            }
            Err(_) if last_live.elapsed() < limits.idle => continue,
            Err(_) => match live_version.as_deref().and_then(|live| replay.next(live)) {
                Some(sample) => {
                    report.replayed += 1;
                    sample
                }
                None => {
                    can_replay = false;
                    continue;
                }
            },
        };
        let index = report.calls as usize;
        let out = candidate
            .call(&sample.input)
            .map_err(|failure| CheckFailure::ShadowCall {
                index,
                failure,
                input: to_json(&sample.input).to_string(),
            })?;
        let timed = match (&live_version, live_timer.as_mut(), cand_timer.as_mut()) {
            (Some(live), _, _) if fresh => time_both(
                || {
                    candidate
                        .held_instance()
                        .is_ok_and(|mut i| i.call(&sample.input).is_ok())
                },
                || {
                    live.held_instance()
                        .is_ok_and(|mut i| i.call(&sample.input).is_ok())
                },
            ),
            (_, Some(live), Some(cand)) => time_both(
                || cand.call(&sample.input).is_ok(),
                || live.call(&sample.input).is_ok(),
            ),
            _ => None,
        };
        if let Some((cand, live)) = timed {
            cand_us.push(cand);
            live_us.push(live);
        }
        if R::is_refusal(&out) && !R::is_refusal(&sample.live_output) {
            report.new_refusals += 1;
        }
        let (live_json, cand_json) = (to_json(&sample.live_output), to_json(&out));
        if live_json != cand_json {
            report.differences += 1;
            if report.examples.len() < 3 {
                report
                    .examples
                    .push([to_json(&sample.input), live_json, cand_json]);
            }
        }
        report.calls += 1;
    }
    report.live_median_us = median(&mut live_us);
    report.candidate_median_us = median(&mut cand_us);
    if report.live_median_us > 0.0 {
        report.latency_ratio = report.candidate_median_us / report.live_median_us;
    }
    if f64::from(report.new_refusals) > limits.max_new_refusal_rate * f64::from(report.calls) {
        return Err(CheckFailure::NewRefusals {
            refused: report.new_refusals,
            calls: report.calls,
            max_rate: limits.max_new_refusal_rate,
        });
    }
    if report.latency_ratio > limits.max_latency_ratio {
        return Err(CheckFailure::TooSlow {
            candidate_us: report.candidate_median_us,
            live_us: report.live_median_us,
            ratio: report.latency_ratio,
            max: limits.max_latency_ratio,
        });
    }
    Ok(report)
}

/// Inputs to shadow while live traffic is idle: the bundle's test vector inputs and the live
/// inputs seen during this check, in turn. The live version answers them on a private instance
/// (its counters and pooled instances untouched).
struct Replay<R: RuleKind> {
    inputs: Vec<R::Input>,
    next: usize,
}

impl<R: RuleKind> Replay<R> {
    /// Live inputs kept for replay, at most.
    const KEEP: usize = 256;

    fn new(vectors: &[serde_json::Value]) -> Self {
        Replay {
            // A vector whose input does not fit was refused by check 2 already.
            inputs: vectors
                .iter()
                .filter_map(|v| serde_json::from_value(v.clone()).ok())
                .collect(),
            next: 0,
        }
    }

    fn record(&mut self, input: &R::Input) {
        if self.inputs.len() < Self::KEEP {
            self.inputs.push(input.clone());
        }
    }

    /// The next input with the live version's answer; `None` if the live version answers none.
    fn next(&mut self, live: &LoadedVersion<R>) -> Option<crate::live::ShadowSample<R>> {
        for _ in 0..self.inputs.len() {
            let input = self.inputs[self.next % self.inputs.len()].clone();
            self.next += 1;
            let answer = live
                .held_instance()
                .ok()
                .and_then(|mut i| i.call(&input).ok());
            if let Some(live_output) = answer {
                return Some(crate::live::ShadowSample { input, live_output });
            }
        }
        None
    }
}

/// Microseconds each of two calls took, one after the other; `None` if either failed.
fn time_both(
    mut candidate: impl FnMut() -> bool,
    mut live: impl FnMut() -> bool,
) -> Option<(f64, f64)> {
    let t0 = Instant::now();
    let cand_ok = candidate();
    let t1 = Instant::now();
    let live_ok = live();
    let t2 = Instant::now();
    (cand_ok && live_ok).then(|| ((t1 - t0).as_secs_f64() * 1e6, (t2 - t1).as_secs_f64() * 1e6))
}

fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value)
        .unwrap_or_else(|e| serde_json::Value::String(format!("<not serialisable: {e}>")))
}
