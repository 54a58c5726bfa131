//! `nonstop keygen`: a publisher key pair on disk, the secret readable by its owner only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nonstop_bundle::SecretKey;

#[derive(clap::Args)]
pub struct Args {
    /// Path prefix of the key files: writes <OUT>.key and <OUT>.pub; refuses to overwrite.
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let key = SecretKey::generate();
    let secret = with_ext(&args.out, "key");
    let public = with_ext(&args.out, "pub");
    if public.exists() {
        anyhow::bail!("{} exists already: not overwriting a key", public.display());
    }
    write_new(&secret, key.to_file_text().as_bytes(), 0o600)?;
    write_new(&public, key.public().to_file_text().as_bytes(), 0o644)?;
    println!("key id   {}", key.key_id());
    println!(
        "secret   {}  (keep it on the update server only)",
        secret.display()
    );
    println!("public   {}  (give it to nodes: --trust)", public.display());
    Ok(())
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (not overwriting an existing key)",
                path.display()
            )
        })?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("writing {}", path.display()))
}
