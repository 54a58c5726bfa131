//! What the fuzz targets of every crate share. Each crate keeps its targets in `tests/it/fuzz.rs`,
//! run by `cargo test` on the stable toolchain through `bolero`, which replays the files committed
//! under `tests/it/__fuzz__/<target>/corpus/` and `crashes/` and then runs a fixed number of
//! random inputs (`BOLERO_RANDOM_ITERATIONS` runs more).
//!
//! Under `cargo test` bolero has no coverage feedback, and random bytes almost never get past a
//! JSON parser or a bundle's magic bytes. So each target has a mutated twin (`<target>-mutated`)
//! whose random value is a [`Recipe`]: which committed input to start from and a few edits to make to it, from bit
//! flips to JSON values replaced by awkward ones. Edits of real inputs reach the checks behind the
//! parser. A failing input is kept as a file ([`Target::check`]) to be committed under `crashes/`,
//! where every later `cargo test` replays it.

#![deny(missing_docs)]

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bolero::{ValueGenerator, produce, produce_with};
use serde_json::Value;

/// A mutated target's random value: the index of the committed input to start from, then the
/// edits to make to it, in order.
pub type Recipe = (u16, Vec<Edit>);

/// One edit, `(kind, position, argument, word)`: what each means is in [`Corpus::edit`].
pub type Edit = (u8, u32, u32, u16);

/// Bolero's generator of recipes: 1 to 4 edits, few enough that most edited JSON still parses
/// and reaches the checks behind the parser.
pub fn recipes() -> impl ValueGenerator<Output = Recipe> {
    (
        produce::<u16>(),
        produce_with::<Vec<Edit>>().len(1usize..=4),
    )
}

/// One input taking longer than this counts as a hang. Generous: targets run in debug builds on a
/// shared machine, and a real hang (a loop over an attacker's count) takes far longer.
pub const HANG: Duration = Duration::from_secs(20);

/// A fuzz target: where its committed inputs are, and where a failing input is kept.
#[derive(Debug, Clone)]
pub struct Target {
    name: &'static str,
    work_dir: PathBuf,
    failures: PathBuf,
}

impl Target {
    /// The target `name` of the test binary whose sources are in `tests_dir` (bolero's work
    /// directory is `tests_dir/__fuzz__/name`); failing inputs are kept under `scratch` (the
    /// test's `CARGO_TARGET_TMPDIR`).
    pub fn new(name: &'static str, tests_dir: &Path, scratch: &Path) -> Target {
        Target {
            name,
            work_dir: tests_dir.join("__fuzz__").join(name),
            failures: scratch.join("fuzz-failures").join(name),
        }
    }

    /// The committed inputs (`corpus/`, then `crashes/`), to start mutations from.
    pub fn corpus(&self) -> Corpus {
        let mut seeds = Vec::new();
        for sub in ["corpus", "crashes"] {
            let dir = self.work_dir.join(sub);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            paths.sort();
            for path in paths {
                let bytes = fs::read(&path)
                    .unwrap_or_else(|e| panic!("reading corpus file {}: {e}", path.display()));
                seeds.push(bytes);
            }
        }
        assert!(
            !seeds.is_empty(),
            "fuzz target {}: no committed input in {}/corpus to start mutations from",
            self.name,
            self.work_dir.display()
        );
        Corpus::new(seeds)
    }

    /// Runs `property` on `input`. If it panics or takes longer than [`HANG`], the input is written
    /// to a file and the test fails naming it, so it can be committed as a regression test.
    pub fn check(&self, input: &[u8], property: impl FnOnce(&[u8])) {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| property(input)));
        let took = started.elapsed();
        let failure = match outcome {
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()),
            Ok(()) if took > HANG => format!("one input took {took:?}, over {HANG:?}"),
            Ok(()) => return,
        };
        let kept = match self.keep(input) {
            Ok(path) => format!("the input is kept in {}", path.display()),
            Err(e) => format!(
                "the input could not be kept ({e}); it is {:?}",
                input.escape_ascii().to_string()
            ),
        };
        panic!(
            "fuzz target {}: {failure}\n{kept}: copy it into {} to replay it in every `cargo test`",
            self.name,
            self.work_dir.join("crashes").display()
        );
    }

    /// Writes `input` under the failures directory, named by its hash so a failure found again
    /// is kept once.
    fn keep(&self, input: &[u8]) -> std::io::Result<PathBuf> {
        // FNV-1a: stable across runs and Rust versions, unlike the standard library's hasher.
        let hash = input.iter().fold(0xcbf29ce484222325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        let path = self.failures.join(format!("{hash:016x}"));
        fs::create_dir_all(&self.failures)?;
        fs::write(&path, input)?;
        Ok(path)
    }
}

/// Committed inputs and the words edits may insert.
#[derive(Debug, Clone)]
pub struct Corpus {
    seeds: Vec<Vec<u8>>,
    words: Vec<Vec<u8>>,
}

/// Byte strings that tend to matter to a JSON parser.
const JSON_WORDS: &[&[u8]] = &[
    b"\"", b"\\", b"{", b"}", b"[", b"]", b",", b":", b"null", b"true", b"-", b"0", b"e", b"1e999",
    b".", b"\\u0000", b"\\ud800", b"\xff", b"\xc3", b"\0", b" ", b"\n", b"/", b"..",
];

/// How many values [`awkward`] has.
const AWKWARD_COUNT: usize = 51;

/// JSON values that tend to find the edges of a field: boundaries of every integer width, floats
/// out of range, strings that are empty, long, path-like, or not quite dates or versions.
fn awkward(i: usize) -> Value {
    const TEXTS: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "-0",
        "-1",
        "1",
        "255",
        "256",
        "65535",
        "65536",
        "2147483647",
        "2147483648",
        "-2147483649",
        "4294967295",
        "4294967296",
        "9007199254740993",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "1e308",
        "-1e308",
        "0.5",
        "5e-324",
        "\"\"",
        "\" \"",
        "\"x\"",
        "\"0\"",
        "\"-1\"",
        "\"1.0.0\"",
        "\"1.0.0-rc.1+build.5\"",
        "\"18446744073709551616.0.0\"",
        "\"1970-01-01\"",
        "\"2024-02-30\"",
        "\"9999-12-31\"",
        "\"2026-01-01T00:00:00Z\"",
        "\"../../escape\"",
        "\"/etc/passwd\"",
        "\"a/b\"",
        "\".\"",
        "\"..\"",
        "\"\\u0000\"",
        "\"中文名字\"",
        "\"sha256:00\"",
        "[]",
        "{}",
        "[null]",
        "{\"unknown\": 1}",
    ];
    debug_assert_eq!(TEXTS.len() + 3, AWKWARD_COUNT);
    match i % (TEXTS.len() + 3) {
        n if n < TEXTS.len() => serde_json::from_str(TEXTS[n]).expect("awkward values are JSON"),
        n if n == TEXTS.len() => Value::String("x".repeat(5000)),
        n if n == TEXTS.len() + 1 => Value::String("长".repeat(300)),
        // Deeper than serde_json's recursion limit of 128 once it is inside the document.
        _ => (0..130).fold(Value::Null, |v, _| Value::Array(vec![v])),
    }
}

impl Corpus {
    /// Mutations of `seeds` rather than of a target's files as committed: the bodies alone of
    /// inputs that also hold a route, say. `seeds` must not be empty.
    pub fn new(seeds: Vec<Vec<u8>>) -> Corpus {
        assert!(!seeds.is_empty(), "mutations need a seed to start from");
        Corpus {
            seeds,
            words: JSON_WORDS.iter().map(|w| w.to_vec()).collect(),
        }
    }

    /// Adds words edits may insert: the format's own (field names, magic bytes).
    pub fn with_words(mut self, words: &[&[u8]]) -> Corpus {
        self.words.extend(words.iter().map(|w| w.to_vec()));
        self
    }

    /// The committed inputs.
    pub fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    /// The input `recipe` describes: its starting input with its edits made in order.
    pub fn mutate(&self, (pick, edits): &Recipe) -> Vec<u8> {
        let mut out = self.seeds[usize::from(*pick) % self.seeds.len()].clone();
        for edit in edits {
            self.edit(&mut out, *edit);
        }
        out
    }

    /// Makes one edit to `out`. Kinds (modulo 14): 0 flip a bit, 1 set a byte, 2 remove a run,
    /// 3 insert a word, 4 replace a run with a word, 5 repeat a run elsewhere, 6 truncate, 7 the
    /// tail of another committed input, 8 and 9 a 32- or 64-bit big-endian integer that matters
    /// to a length field, 10 to 13 (when `out` is JSON) replace a value with an awkward one,
    /// remove a member, add a member, copy one value over another.
    pub fn edit(&self, out: &mut Vec<u8>, (kind, at, arg, word): Edit) {
        let (at, arg, word) = (at as usize, arg as usize, usize::from(word));
        let len = out.len();
        // Half the edits of a JSON input change its values and keep it JSON: byte edits mostly
        // stop at the parser, value edits reach the checks behind it.
        let kind = if kind >= 128 && serde_json::from_slice::<Value>(out).is_ok() {
            10 + kind % 4
        } else {
            kind % 14
        };
        let pos = at % (len + 1);
        let span = |max: usize| (arg % max.max(1)).min(len - pos);
        match kind {
            0 if len > 0 => out[at % len] ^= 1 << (arg % 8),
            1 if len > 0 => out[at % len] = arg as u8,
            2 => {
                out.drain(pos..pos + span(64));
            }
            3 => {
                let w = &self.words[word % self.words.len()];
                out.splice(pos..pos, w.iter().copied());
            }
            4 => {
                let w = &self.words[word % self.words.len()];
                out.splice(pos..pos + span(16), w.iter().copied());
            }
            5 => {
                let piece = out[pos..pos + span(64)].to_vec();
                let to = word % (len + 1);
                out.splice(to..to, piece);
            }
            6 => out.truncate(pos),
            7 => {
                // The tail of another committed input from one of its positions: mixes formats'
                // valid pieces, such as a manifest with another bundle's signature block.
                let other = &self.seeds[word % self.seeds.len()];
                let from = arg % (other.len() + 1);
                out.truncate(pos);
                out.extend_from_slice(&other[from..]);
            }
            8 => put_be(out, pos, 4, awkward_int(arg, len)),
            9 => put_be(out, pos, 8, awkward_int(arg, len)),
            10..=13 => {
                if let Ok(mut doc) = serde_json::from_slice::<Value>(out) {
                    edit_json(&mut doc, kind - 10, at, arg, word);
                    *out = if arg % 2 == 0 {
                        serde_json::to_vec(&doc)
                    } else {
                        serde_json::to_vec_pretty(&doc)
                    }
                    .expect("a JSON value serialises");
                } else if len > 0 {
                    out[at % len] = b"\"{}[],:0-"[word % 9];
                }
            }
            _ => {}
        }
    }
}

/// An awkward value, three times in four of the same JSON type as `like`: a value of the right
/// type gets past deserialisation to the validation behind it.
fn awkward_like(like: &Value, i: usize) -> Value {
    if !i.is_multiple_of(4) {
        let same = (0..AWKWARD_COUNT)
            .map(|j| awkward(i / 4 + j))
            .find(|v| std::mem::discriminant(v) == std::mem::discriminant(like));
        if let Some(v) = same {
            return v;
        }
    }
    awkward(i)
}

/// Integers that matter to a length or count field: zero, sign bits, all ones, and off by one
/// from the input's own length.
fn awkward_int(i: usize, len: usize) -> u64 {
    let len = len as u64;
    [
        0,
        1,
        0x7f,
        0x80,
        0xff,
        0xffff,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        u64::MAX,
        1 << 63,
        len.saturating_sub(1),
        len + 1,
    ][i % 13]
}

/// Overwrites (or appends) `width` big-endian bytes of `value` at `pos`.
fn put_be(out: &mut Vec<u8>, pos: usize, width: usize, value: u64) {
    let bytes = &value.to_be_bytes()[8 - width..];
    let end = (pos + width).min(out.len());
    out.splice(pos..end, bytes.iter().copied());
}

/// One edit of a JSON document at its `at`-th node (in pre-order): replace it with an awkward
/// value, remove one of its members, add a member (an existing field name or an unknown one), or
/// replace it with a copy of another node.
fn edit_json(doc: &mut Value, op: u8, at: usize, arg: usize, word: usize) {
    let nodes = count(doc);
    let at = at % nodes;
    match op {
        0 => {
            let node = nth(doc, at);
            *node = awkward_like(node, word);
        }
        1 => match nth(doc, at) {
            Value::Array(items) if !items.is_empty() => {
                items.remove(arg % items.len());
            }
            Value::Object(members) if !members.is_empty() => {
                let key = members.keys().nth(arg % members.len()).cloned();
                if let Some(key) = key {
                    members.remove(&key);
                }
            }
            other => *other = Value::Null,
        },
        2 => {
            let mut keys = Vec::new();
            collect_keys(doc, &mut keys);
            keys.push("unknown_field".into());
            let key = keys[arg % keys.len()].clone();
            match nth(doc, at) {
                Value::Object(members) => {
                    members.insert(key, awkward(word));
                }
                Value::Array(items) => items.insert(arg % (items.len() + 1), awkward(word)),
                other => *other = awkward(word),
            }
        }
        _ => {
            let copy = nth(doc, arg % nodes).clone();
            *nth(doc, at) = copy;
        }
    }
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count).sum(),
        Value::Object(members) => members.values().map(count).sum(),
        _ => 0,
    }
}

/// The `n`-th node in pre-order; `n` must be below [`count`].
fn nth(v: &mut Value, n: usize) -> &mut Value {
    if n == 0 {
        return v;
    }
    let mut n = n - 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(items) => items.iter_mut().collect(),
        Value::Object(members) => members.values_mut().collect(),
        _ => unreachable!("n is below the node count"),
    };
    for child in children {
        let size = count(child);
        if n < size {
            return nth(child, n);
        }
        n -= size;
    }
    unreachable!("n is below the node count")
}

fn collect_keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect_keys(i, out)),
        Value::Object(members) => {
            for (k, v) in members {
                out.push(k.clone());
                collect_keys(v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(seeds: &[&[u8]]) -> Corpus {
        Corpus::new(seeds.iter().map(|s| s.to_vec()).collect())
    }

    #[test]
    fn no_edits_give_the_seed_back() {
        let c = corpus(&[b"first", b"second"]);
        assert_eq!(c.mutate(&(1, vec![])), b"second");
        assert_eq!(c.mutate(&(2, vec![])), b"first");
    }

    #[test]
    fn every_edit_of_every_position_stays_in_bounds() {
        let c = corpus(&[
            b"",
            b"{\"a\": [1, {\"b\": null}], \"c\": \"d\"}",
            b"NSBUNDLE\0\x01",
        ]);
        for pick in 0..3 {
            for kind in 0..14 {
                for at in [0, 1, 5, 1000, u32::MAX] {
                    for arg in [0, 3, 17, u32::MAX] {
                        c.mutate(&(pick, vec![(kind, at, arg, 7)]));
                    }
                }
            }
        }
    }

    #[test]
    fn json_edits_keep_the_document_json() {
        let c = corpus(&[b"{\"a\": [1, {\"b\": null}], \"c\": \"d\"}"]);
        for op in 10..14 {
            for at in 0..8 {
                let out = c.mutate(&(0, vec![(op, at, at + 1, 3)]));
                assert!(serde_json::from_slice::<Value>(&out).is_ok(), "{op} {at}");
            }
        }
    }

    #[test]
    fn a_failing_input_is_kept_and_named() {
        let scratch = std::env::temp_dir().join(format!("nonstop-fuzzing-{}", std::process::id()));
        let t = Target::new("demo", Path::new("tests"), &scratch);
        let err = catch_unwind(|| t.check(b"boom", |_| panic!("it broke"))).unwrap_err();
        let message = err.downcast_ref::<String>().unwrap();
        assert!(message.contains("it broke"), "{message}");
        assert!(message.contains("crashes"), "{message}");
        let kept = fs::read_dir(scratch.join("fuzz-failures/demo"))
            .unwrap()
            .count();
        assert_eq!(kept, 1);
        fs::remove_dir_all(&scratch).unwrap();
    }
}
