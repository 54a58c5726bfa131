//! Releases: signed bundles a publisher uploads. Each is verified against the server's trusted
//! publisher keys before it is accepted, stored once by the digest of its bytes, and never
//! altered; its version must move its component forward.

use nonstop_bundle::{Digest, Verifier};
use serde::Serialize;
use sqlx::Row;

use crate::db::now_ms;
use crate::{Server, ServerError};

/// A published release.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    /// Its id.
    pub id: i64,
    /// The component.
    pub component: String,
    /// The version.
    pub version: String,
    /// `sha256:<hex>` of the whole bundle file.
    pub bundle_digest: String,
    /// `sha256:<hex>` of its payload.
    pub payload_digest: String,
    /// Key id of the publisher key that signed it.
    pub signer: String,
    /// Bundle size in bytes.
    pub size: i64,
    /// The signed manifest, including the checks it carries.
    pub manifest: serde_json::Value,
    /// Who published it.
    pub published_by: String,
    /// When, milliseconds since the Unix epoch.
    pub published_at: i64,
}

const COLUMNS: &str = "id, component, version, bundle_digest, payload_digest, signer, size, manifest, published_by, published_at";

fn release(row: &sqlx::any::AnyRow) -> Result<Release, sqlx::Error> {
    let manifest: String = row.try_get(7)?;
    Ok(Release {
        id: row.try_get(0)?,
        component: row.try_get(1)?,
        version: row.try_get(2)?,
        bundle_digest: row.try_get(3)?,
        payload_digest: row.try_get(4)?,
        signer: row.try_get(5)?,
        size: row.try_get(6)?,
        manifest: serde_json::from_str(&manifest).unwrap_or_default(),
        published_by: row.try_get(8)?,
        published_at: row.try_get(9)?,
    })
}

impl Server {
    /// Verifies and stores a bundle as a release. Refused, with the reason: a bundle not signed
    /// by a trusted publisher key, a tampered one, one over the limits, or a version that does
    /// not move its component past every version published before.
    pub async fn publish(&self, actor: &str, bytes: &[u8]) -> Result<Release, ServerError> {
        let limits = self.inner.config.bundle_limits.clone();
        // The component is read from the bundle to find its newest release; nothing in it is
        // trusted until `open` below has checked the signature.
        let named = nonstop_bundle::inspect(bytes, &limits)?
            .manifest
            .map_err(|e| ServerError::invalid("bundle", e))?;
        // Signature and digests first, whatever the version: a tampered or unsigned bundle is
        // refused for what it is, and learns nothing of what is published.
        let verifier = Verifier::new(self.inner.trust.release_keys(), limits);
        verifier.open(bytes, None)?;
        let mut w = self.write().await?;
        let versions: Vec<String> =
            sqlx::query_scalar("SELECT version FROM release WHERE component = $1")
                .bind(named.component.as_str())
                .fetch_all(&mut *w.tx)
                .await?;
        let newest = versions
            .iter()
            .filter_map(|v| semver::Version::parse(v).ok())
            .max_by(|a, b| a.cmp_precedence(b));
        let digest = Digest::of(bytes).to_string();
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM release WHERE bundle_digest = $1 OR (component = $2 AND version = $3)",
        )
        .bind(&digest)
        .bind(named.component.as_str())
        .bind(named.version.to_string())
        .fetch_optional(&mut *w.tx)
        .await?;
        if let Some(id) = taken {
            return Err(ServerError::Conflict(format!(
                "{}@{} is published already (release {id}); a release never changes",
                named.component, named.version
            )));
        }
        let bundle = verifier.open(bytes, newest.as_ref())?;
        let m = bundle.manifest();
        let manifest = serde_json::to_string(m).map_err(|e| ServerError::Io(e.to_string()))?;
        sqlx::query("INSERT INTO bundle_blob (digest, bytes) VALUES ($1, $2)")
            .bind(&digest)
            .bind(bytes.to_vec())
            .execute(&mut *w.tx)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO release (component, version, bundle_digest, payload_digest, signer, size, manifest, published_by, published_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(m.component.as_str())
        .bind(m.version.to_string())
        .bind(&digest)
        .bind(m.payload.digest.to_string())
        .bind(bundle.signer().to_string())
        .bind(bytes.len() as i64)
        .bind(&manifest)
        .bind(actor)
        .bind(now_ms())
        .fetch_one(&mut *w.tx)
        .await?;
        w.audit(
            actor,
            "release.published",
            &format!("release {}@{}", m.component, m.version),
            &serde_json::json!({
                "release": id, "bundle_digest": digest, "payload_digest": m.payload.digest.to_string(),
                "signer": bundle.signer().to_string(), "size": bytes.len(),
                "signers": bundle.signers().iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        )
        .await?;
        w.commit().await?;
        tracing::info!(component = %m.component, version = %m.version, %digest, "release published");
        // Nodes hear at once that this is now current.
        self.refresh_statement().await;
        self.release(id).await
    }

    /// One release.
    pub async fn release(&self, id: i64) -> Result<Release, ServerError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM release WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await?
            .ok_or_else(|| ServerError::not_found("release", id))?;
        Ok(release(&row)?)
    }

    /// A release named `component@version`, or by its id.
    pub async fn find_release(&self, name: &str) -> Result<Release, ServerError> {
        if let Ok(id) = name.parse::<i64>() {
            return self.release(id).await;
        }
        let (component, version) = name.split_once('@').ok_or_else(|| {
            ServerError::invalid(
                "release",
                format!("{name:?} is neither an id nor component@version"),
            )
        })?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM release WHERE component = $1 AND version = $2"
        ))
        .bind(component)
        .bind(version)
        .fetch_optional(&self.inner.pool)
        .await?
        .ok_or_else(|| ServerError::not_found("release", name))?;
        Ok(release(&row)?)
    }

    /// Every release, newest first.
    pub async fn releases(&self) -> Result<Vec<Release>, ServerError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM release ORDER BY id DESC"))
            .fetch_all(&self.inner.pool)
            .await?;
        Ok(rows.iter().map(release).collect::<Result<_, _>>()?)
    }

    /// A bundle's bytes by its digest (kept in memory once read: releases never change).
    pub async fn bundle_bytes(&self, digest: &str) -> Result<axum::body::Bytes, ServerError> {
        if let Some(b) = self.inner.bundles.lock().expect("bundle cache").get(digest) {
            return Ok(b.clone());
        }
        let bytes: Vec<u8> = sqlx::query_scalar("SELECT bytes FROM bundle_blob WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.inner.pool)
            .await?
            .ok_or_else(|| ServerError::not_found("bundle", digest))?;
        let bytes = axum::body::Bytes::from(bytes);
        let mut cache = self.inner.bundles.lock().expect("bundle cache");
        // A handful of releases are rolled out at a time; keep the cache small.
        if cache.len() >= 16 {
            cache.clear();
        }
        cache.insert(digest.to_owned(), bytes.clone());
        Ok(bytes)
    }
}
