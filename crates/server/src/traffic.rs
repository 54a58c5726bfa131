//! Each node's traffic around its updates: the samples nodes send over their link (requests,
//! server errors and p99 per interval) are kept for `sample_retention_hours`, and read back as a
//! chart with the node's update steps as markers and, for each update that went live, its
//! traffic just before against just after — what the update cost, at a glance.
//!
//! Samples carry the node's clock, which may be off; the server places a batch by its own clock
//! at arrival (the newest sample ends now, the others as many milliseconds before it as the node
//! says), so markers from the audit log and samples share one time axis.

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::db::now_ms;
use crate::{Server, ServerError};

/// Samples kept per node in one answer: a day at the default 5 s interval is 17,280.
const MAX_SAMPLES: i64 = 20_000;

/// The update steps shown as markers.
const MARKED: &[&str] = &["live", "rolled-back", "rejected", "refused", "failed"];

/// One sample, as the chart reads it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// End of the interval, milliseconds since the Unix epoch (the server's clock).
    pub at: i64,
    /// Requests per second over the interval.
    pub rps: f64,
    /// Server errors over requests (0 with no requests).
    pub error_rate: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Requests in the interval.
    pub requests: i64,
    /// Server errors in the interval.
    pub errors: i64,
}

/// Traffic over a span: request-weighted, so a quiet interval does not count as much as a busy one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Requests per second.
    pub rps: f64,
    /// Server errors over requests.
    pub error_rate: f64,
    /// The highest interval p99 in the span, milliseconds (a p99 of p99s would understate it).
    pub p99_ms: f64,
    /// Samples it summarises.
    pub samples: usize,
}

/// One update step on the node, from the audit log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Marker {
    /// When the server heard of it.
    pub at: i64,
    /// `rollout <id>`.
    pub subject: String,
    /// Component.
    pub component: String,
    /// Version.
    pub version: String,
    /// `live`, `rolled-back`, `rejected`, `refused` or `failed`.
    pub step: String,
    /// The node's reason, for steps that have one.
    pub reason: Option<String>,
    /// For `live`: the traffic over the `impact_secs` before and after it.
    pub before: Option<Summary>,
    /// See `before`.
    pub after: Option<Summary>,
}

/// A node's chart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Chart {
    /// The node.
    pub node: String,
    /// Start of the span, milliseconds since the Unix epoch.
    pub since: i64,
    /// End of the span.
    pub until: i64,
    /// The span before and after each update that `before`/`after` cover, seconds.
    pub impact_secs: i64,
    /// Samples, oldest first.
    pub samples: Vec<Point>,
    /// Update steps, oldest first.
    pub updates: Vec<Marker>,
}

/// What a chart asks for: a span in milliseconds since the Unix epoch (default the last 30
/// minutes) and how long before and after an update to compare (default 60 s).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartQuery {
    /// Start; default 30 minutes before `until`.
    pub since: Option<i64>,
    /// End; default now.
    pub until: Option<i64>,
    /// Seconds before and after each update to compare, 10 to 3,600.
    pub impact_secs: Option<i64>,
}

impl Server {
    /// Keeps samples a node sent (see the module's note on clocks).
    pub(crate) async fn record_samples(
        &self,
        node: i64,
        samples: &[nonstop_link::Sample],
    ) -> Result<(), ServerError> {
        let Some(newest) = samples.iter().map(|s| s.at).max() else {
            return Ok(());
        };
        let now = now_ms();
        // One statement per batch: a fleet of thousands sends a batch each every few seconds.
        let mut sql = String::from(
            "INSERT INTO node_sample (node_id, at, ms, requests, errors, p99_ms) VALUES ",
        );
        for (i, _) in samples.iter().enumerate() {
            let b = i * 6;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            ));
        }
        sql.push_str(" ON CONFLICT (node_id, at) DO NOTHING");
        let mut q = sqlx::query(&sql);
        for s in samples {
            let at = now - (newest - s.at).clamp(0, 7 * 86_400_000);
            q = q
                .bind(node)
                .bind(at)
                .bind(s.ms.min(i64::MAX as u64) as i64)
                .bind(s.requests.min(i64::MAX as u64) as i64)
                .bind(s.errors.min(s.requests).min(i64::MAX as u64) as i64)
                .bind(if s.p99_ms.is_finite() {
                    s.p99_ms.max(0.0)
                } else {
                    0.0
                });
        }
        q.execute(&self.inner.pool).await?;
        Ok(())
    }

    /// Forgets samples older than the retention.
    pub(crate) async fn prune_samples(&self) -> Result<u64, ServerError> {
        let before = now_ms() - 3_600_000 * self.inner.config.sample_retention_hours.max(1) as i64;
        let done = sqlx::query("DELETE FROM node_sample WHERE at < $1")
            .bind(before)
            .execute(&self.inner.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// A node's traffic over a span, with its update steps.
    pub async fn chart(&self, node: &str, q: &ChartQuery) -> Result<Chart, ServerError> {
        let until = q.until.unwrap_or_else(now_ms);
        let since = q.since.unwrap_or(until - 30 * 60_000);
        if since >= until {
            return Err(ServerError::invalid("since", "must be before until"));
        }
        let impact_secs = q.impact_secs.unwrap_or(60);
        if !(10..=3600).contains(&impact_secs) {
            return Err(ServerError::invalid(
                "impact_secs",
                "must be from 10 to 3600",
            ));
        }
        let pool = &self.inner.pool;
        let id: i64 = sqlx::query("SELECT id FROM node WHERE name = $1")
            .bind(node)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| ServerError::not_found("node", node))?
            .try_get(0)?;
        let impact = impact_secs * 1000;
        // Samples around the span's edges too, so an update near an edge has its before/after.
        let all = points(pool, id, since - impact, until + impact).await?;
        let updates = markers(pool, node, since, until)
            .await?
            .into_iter()
            .map(|mut m| {
                if m.step == "live" {
                    m.before = summary(&all, m.at - impact, m.at);
                    m.after = summary(&all, m.at, m.at + impact);
                }
                m
            })
            .collect();
        let samples = all
            .into_iter()
            .filter(|p| p.at >= since && p.at <= until)
            .collect();
        Ok(Chart {
            node: node.to_owned(),
            since,
            until,
            impact_secs,
            samples,
            updates,
        })
    }
}

async fn points(
    pool: &AnyPool,
    node: i64,
    since: i64,
    until: i64,
) -> Result<Vec<Point>, ServerError> {
    let rows = sqlx::query(
        "SELECT at, ms, requests, errors, p99_ms FROM node_sample \
         WHERE node_id = $1 AND at >= $2 AND at <= $3 ORDER BY at LIMIT $4",
    )
    .bind(node)
    .bind(since)
    .bind(until)
    .bind(MAX_SAMPLES)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let (ms, requests, errors): (i64, i64, i64) =
                (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            Ok(Point {
                at: r.try_get(0)?,
                rps: if ms > 0 {
                    requests as f64 * 1000.0 / ms as f64
                } else {
                    0.0
                },
                error_rate: if requests > 0 {
                    errors as f64 / requests as f64
                } else {
                    0.0
                },
                p99_ms: r.try_get(4)?,
                requests,
                errors,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// The traffic of the samples that end in `(from, to]`, or `None` without any.
fn summary(points: &[Point], from: i64, to: i64) -> Option<Summary> {
    let span: Vec<&Point> = points
        .iter()
        .filter(|p| p.at > from && p.at <= to)
        .collect();
    if span.is_empty() {
        return None;
    }
    let requests: i64 = span.iter().map(|p| p.requests).sum();
    let errors: i64 = span.iter().map(|p| p.errors).sum();
    // Seconds covered: requests over rps gives each sample's interval back.
    let seconds: f64 = span
        .iter()
        .map(|p| {
            if p.rps > 0.0 {
                p.requests as f64 / p.rps
            } else {
                0.0
            }
        })
        .sum();
    Some(Summary {
        rps: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        error_rate: if requests > 0 {
            errors as f64 / requests as f64
        } else {
            0.0
        },
        p99_ms: span.iter().map(|p| p.p99_ms).fold(0.0, f64::max),
        samples: span.len(),
    })
}

async fn markers(
    pool: &AnyPool,
    node: &str,
    since: i64,
    until: i64,
) -> Result<Vec<Marker>, ServerError> {
    let rows = sqlx::query(
        "SELECT at, subject, detail FROM audit \
         WHERE actor = $1 AND action = 'node.step' AND at >= $2 AND at <= $3 ORDER BY seq",
    )
    .bind(format!("node:{node}"))
    .bind(since)
    .bind(until)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let detail: String = r.try_get(2)?;
        let d: serde_json::Value = serde_json::from_str(&detail).unwrap_or_default();
        let step = d["report"]["step"].as_str().unwrap_or_default();
        if !MARKED.contains(&step) {
            continue;
        }
        out.push(Marker {
            at: r.try_get(0)?,
            subject: r.try_get(1)?,
            component: d["component"].as_str().unwrap_or_default().to_owned(),
            version: d["version"].as_str().unwrap_or_default().to_owned(),
            step: step.to_owned(),
            reason: d["report"]["reason"].as_str().map(str::to_owned),
            before: None,
            after: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: i64, requests: i64, errors: i64, p99_ms: f64) -> Point {
        Point {
            at,
            rps: requests as f64 / 5.0,
            error_rate: errors as f64 / requests as f64,
            p99_ms,
            requests,
            errors,
        }
    }

    #[test]
    fn a_summary_weighs_busy_intervals_and_keeps_the_worst_p99() {
        let points = [
            point(5_000, 100, 0, 4.0),
            point(10_000, 900, 9, 20.0),
            point(15_000, 500, 0, 3.0),
        ];
        let s = summary(&points, 0, 10_000).unwrap();
        assert_eq!(s.samples, 2);
        assert!((s.rps - 100.0).abs() < 1e-9, "{s:?}");
        assert!((s.error_rate - 0.009).abs() < 1e-9, "{s:?}");
        assert_eq!(s.p99_ms, 20.0);
        assert_eq!(summary(&points, 15_000, 20_000), None);
    }
}
