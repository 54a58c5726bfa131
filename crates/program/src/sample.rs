//! A sample of the live program's own reads and their answers, to replay against a candidate
//! program (its shadow check). One successful-or-refused JSON read in `every` is kept, up to
//! `keep` of the most recent; the answer's body is read whole to keep it, so only those pay.
//! The credentials a kept read carried are kept with it, in memory only, to replay it as the
//! same user; they are never written anywhere.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

/// A kept read.
#[derive(Debug, Clone)]
pub struct Sampled {
    /// Path and query.
    pub path: String,
    /// The `Authorization` header it carried.
    pub authorization: Option<String>,
    /// The live program's status.
    pub status: u16,
    /// The live program's answer.
    pub body: Value,
}

/// The kept reads.
pub struct Sample {
    every: u64,
    keep: usize,
    seen: AtomicU64,
    reads: Mutex<VecDeque<Sampled>>,
}

/// Answers larger than this are not kept.
const MAX_BODY: usize = 256 * 1024;

impl Sample {
    /// Keeps one read in `every`, the `keep` most recent.
    pub fn new(every: u64, keep: usize) -> Arc<Sample> {
        Arc::new(Sample {
            every: every.max(1),
            keep,
            seen: AtomicU64::new(0),
            reads: Mutex::new(VecDeque::new()),
        })
    }

    /// The kept reads, oldest first.
    pub fn recent(&self) -> Vec<Sampled> {
        self.reads
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect()
    }

    fn push(&self, s: Sampled) {
        let mut reads = self.reads.lock().expect("not poisoned");
        if reads.len() >= self.keep {
            reads.pop_front();
        }
        if self.keep > 0 {
            reads.push_back(s);
        }
    }
}

/// Middleware: keeps one API read in `every`, with its answer.
pub async fn record(State(sample): State<Arc<Sample>>, request: Request, next: Next) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let wanted = request.method() == Method::GET
        && path.starts_with("/api/v1/")
        && !path.starts_with("/api/v1/openapi.json")
        && sample.seen.fetch_add(1, Ordering::Relaxed) % sample.every == 0;
    if !wanted {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let status = response.status().as_u16();
    // Server errors are not a baseline to compare with; streams and pages are not JSON; an
    // answer of unknown or large size is let through untouched.
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_BODY as u64);
    if !json || status >= 500 || !small {
        return response;
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            if let Ok(value) = serde_json::from_slice(&bytes) {
                sample.push(Sampled {
                    path,
                    authorization,
                    status,
                    body: value,
                });
            }
            Response::from_parts(parts, Body::from(bytes))
        }
        // Its body failed as it was read; the client would have seen the same.
        Err(e) => {
            tracing::warn!(%path, error = %e, "an answer's body failed while it was sampled");
            Response::from_parts(parts, Body::empty())
        }
    }
}
