//! The preset requirements a candidate program must meet before it may take the socket (step 3
//! for the program): it answers its health check; it keeps the API's contract (every operation
//! the live program documents is still documented, and every documented read without parameters
//! answers as the live program answers it); a replay of a sample of the live program's own read
//! requests gives the same status and shape of answer; and its memory stays within a limit.
//! Each documented read's answer is also checked against its JSON schema, in the candidate's
//! OpenAPI document and in the live program's (`jsonschema`); against the live program's, a
//! field it did not know is allowed (a new program may add to an answer, as it may add an
//! endpoint; it may not take away or change what the live one documents).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use serde::Deserialize;
use serde_json::Value;
use tower::ServiceExt;

use crate::sample::{Sample, Sampled};

/// Limits of the candidate program's checks (`[program]` in the node's configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgramChecks {
    /// Seconds a candidate has to answer on its private socket (and, later, to accept).
    pub start_secs: u64,
    /// Largest resident memory the candidate may use after its checks, in MiB.
    pub max_rss_mib: u64,
    /// How many of the live program's recent reads are kept to replay against a candidate.
    pub replay: usize,
    /// One read in this many is kept (its answer is read whole to learn its shape).
    pub sample_every: u64,
}

impl Default for ProgramChecks {
    fn default() -> Self {
        ProgramChecks {
            start_secs: 30,
            max_rss_mib: 1024,
            replay: 64,
            sample_every: 8,
        }
    }
}

/// What the checks are run against.
pub struct Target<'a> {
    /// The candidate's private address.
    pub addr: &'a str,
    /// Its process id.
    pub pid: u32,
    /// The live program's own router, called in-process for the contract's answers (no
    /// network, no credentials: nothing it answers is a patient's data).
    pub live: axum::Router,
    /// The live program's recent reads and their answers.
    pub sample: &'a Arc<Sample>,
    /// The limits.
    pub checks: &'a ProgramChecks,
}

/// Runs every check; `Ok` with a summary, or the first failure, naming what differed.
pub async fn run(t: Target<'_>) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let base = format!("http://{}", t.addr);
    // Health.
    let health = get(&client, &base, "/health", None).await?;
    if health.0 != 200 {
        return Err(format!("health check: /health answered {}", health.0));
    }
    // The contract: the live program's operations are all still documented...
    let (_, live_doc) = call_live(&t.live, "/api/v1/openapi.json").await?;
    let (status, cand_doc) = get(&client, &base, "/api/v1/openapi.json", None).await?;
    let (Some(live_doc), Some(cand_doc)) = (live_doc, cand_doc) else {
        return Err(format!(
            "contract: /api/v1/openapi.json answered {status} without an OpenAPI document"
        ));
    };
    let live_ops = operations(&live_doc);
    let cand_ops = operations(&cand_doc);
    let live_contract = allowing_additions(&live_doc);
    let missing: Vec<_> = live_ops.iter().filter(|o| !cand_ops.contains(o)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "contract: the candidate no longer documents {}",
            missing
                .iter()
                .map(|(m, p)| format!("{} {p}", m.to_uppercase()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // ...and each documented read without parameters answers as the live one does.
    let mut reads = 0;
    for (method, path) in &live_ops {
        if method != "get"
            || path.contains('{')
            || path == "/api/v1/openapi.json"
            || [&live_doc, &cand_doc]
                .into_iter()
                .any(|doc| describes_listener(doc, method, path))
        {
            continue;
        }
        let (live_status, live_body) = call_live(&t.live, path).await?;
        let (cand_status, cand_body) = get(&client, &base, path, None).await?;
        if live_status != cand_status {
            return Err(format!(
                "contract: GET {path} answered {cand_status} where the live program answers {live_status}"
            ));
        }
        if let (Some(l), Some(c)) = (&live_body, &cand_body)
            && let Some(d) = shape_difference(l, c, "")
        {
            return Err(format!("contract: GET {path}: {d}"));
        }
        // Its answer is what both documents say it is: its own, and the live program's (the
        // contract its clients were given), so that a change the live program shares is caught
        // too.
        if let Some(body) = &cand_body {
            for (whose, doc) in [
                ("its own", &cand_doc),
                ("the live program's", &live_contract),
            ] {
                if let Some(d) = schema_difference(doc, "get", path, cand_status, body) {
                    return Err(format!(
                        "contract: GET {path} answered {cand_status} unlike {whose} OpenAPI \
                         document: {d}"
                    ));
                }
            }
        }
        reads += 1;
    }
    // A replay of the live program's own reads.
    let sampled: Vec<Sampled> = t.sample.recent();
    for s in &sampled {
        let (status, body) = get(&client, &base, &s.path, s.authorization.as_deref()).await?;
        if status != s.status {
            return Err(format!(
                "shadow replay: GET {} answered {status} where the live program answered {}",
                s.path, s.status
            ));
        }
        if let Some(body) = &body
            && let Some(d) = shape_difference(&s.body, body, "")
        {
            return Err(format!("shadow replay: GET {}: {d}", s.path));
        }
    }
    // Memory, after all of the above.
    let rss = resident_mib(t.pid)?;
    if rss > t.checks.max_rss_mib {
        return Err(format!(
            "memory: the candidate uses {rss} MiB, over the limit of {} MiB",
            t.checks.max_rss_mib
        ));
    }
    Ok(format!(
        "health ok; contract: {} operations documented, {reads} reads answered as live; {} live \
         reads replayed alike; {rss} MiB resident",
        live_ops.len(),
        sampled.len()
    ))
}

async fn get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<(u16, Option<Value>), String> {
    let mut request = client.get(format!("{base}{path}"));
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("the candidate did not answer GET {path}: {e}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("the candidate's answer to GET {path} broke off: {e}"))?;
    Ok((status, serde_json::from_slice(&bytes).ok()))
}

async fn call_live(live: &axum::Router, path: &str) -> Result<(u16, Option<Value>), String> {
    let mut request = axum::http::Request::get(path)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    // As the listener gives each request (the handlers that record a client's address read it).
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))));
    let response = live
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| format!("the live program did not answer GET {path}: {e}"))?;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
        .await
        .map_err(|e| format!("the live program's answer to GET {path}: {e}"))?;
    Ok((status, serde_json::from_slice(&bytes).ok()))
}

/// Whether `doc` marks `method path` as answering about the socket it is asked on
/// (`x-nonstop-listener`): a candidate asked on its private plain-HTTP socket answers it unlike
/// the live program on the shared one (the certificate: whether it serves HTTPS, and with what),
/// so its answers are not compared. Either document's mark counts: the live program's names what
/// its clients were told, the candidate's an operation it newly marks.
fn describes_listener(doc: &Value, method: &str, path: &str) -> bool {
    doc.pointer(&format!(
        "/paths/{}/{method}/x-nonstop-listener",
        path.replace('~', "~0").replace('/', "~1")
    ))
    .and_then(Value::as_bool)
    .unwrap_or(false)
}

/// Every `(method, path)` an OpenAPI document lists.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            if let Some(item) = item.as_object() {
                for method in item.keys() {
                    if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                        ops.push((method.clone(), path.clone()));
                    }
                }
            }
        }
    }
    ops.sort();
    ops
}

/// Where `body`, answered with `status` to `method path`, differs from what the OpenAPI document
/// `doc` says that answer is: an undocumented status, or the first errors against its JSON
/// schema (the document's `components` resolve its `$ref`s). `None` when it matches, or when the
/// answer has no JSON schema documented.
pub fn schema_difference(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    body: &Value,
) -> Option<String> {
    let responses = &doc["paths"][path][method]["responses"];
    let Some(mut response) = responses
        .get(status.to_string())
        .or_else(|| responses.get("default"))
    else {
        return Some(format!("status {status} is not documented"));
    };
    if let Some(name) = response["$ref"].as_str() {
        response = &doc["components"]["responses"][name.rsplit('/').next().unwrap_or_default()];
    }
    let schema = response["content"]["application/json"].get("schema")?;
    let schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": doc["components"],
    });
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => return Some(format!("its documented schema is not valid: {e}")),
    };
    let errors: Vec<String> = validator
        .iter_errors(body)
        .take(3)
        .map(|e| format!("{e} at '{}'", e.instance_path))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// `doc` with every object schema open to fields it does not list (`additionalProperties: false`
/// left out): what a newer program's answers must still meet of an older program's document.
pub fn allowing_additions(doc: &Value) -> Value {
    match doc {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, v)| {
                    !(k.as_str() == "additionalProperties" && **v == Value::Bool(false))
                })
                .map(|(k, v)| (k.clone(), allowing_additions(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(allowing_additions).collect()),
        v => v.clone(),
    }
}

/// Where `candidate`'s answer has another shape than `live`'s: a field the live answer has that
/// it lacks, or a value of another type. Added fields are fine (an expand), and `null` (or a null
/// field left out) and empty arrays match anything (the data may have moved on since the live
/// answer).
pub fn shape_difference(live: &Value, candidate: &Value, at: &str) -> Option<String> {
    match (live, candidate) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Object(l), Value::Object(c)) => l.iter().find_map(|(k, lv)| match c.get(k) {
            // A field the live answer gave as null may be left out (`skip_serializing_if`).
            None if lv.is_null() => None,
            None => Some(format!("`{at}.{k}` is missing from the candidate's answer")),
            Some(cv) => shape_difference(lv, cv, &format!("{at}.{k}")),
        }),
        (Value::Array(l), Value::Array(c)) => match (l.first(), c.first()) {
            (Some(lv), Some(cv)) => shape_difference(lv, cv, &format!("{at}[]")),
            _ => None,
        },
        (l, c) if kind(l) == kind(c) => None,
        (l, c) => Some(format!(
            "`{at}` is {} in the candidate's answer and {} in the live one's",
            kind(c),
            kind(l)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A process's resident memory, in MiB, from `/proc/<pid>/status`.
fn resident_mib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("memory: cannot read the candidate's /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .ok_or_else(|| format!("memory: /proc/{pid}/status has no VmRSS line"))
}
