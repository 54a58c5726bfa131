//! `sqlx::migrate!` embeds `migrations/` when this crate compiles, and on stable Rust cargo does
//! not know it read them: without this, a migration added or edited left the crate as it was
//! built, and its tests ran the schema before it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
