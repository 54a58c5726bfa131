//! `cargo xtask build-modules [--check]`: builds the rule modules in `modules/` for wasm32, turns
//! each into a WebAssembly component, and writes it to `modules/dist/<name>.wasm`. The built
//! components are committed so `cargo test` needs no wasm toolchain; `--check` rebuilds them and
//! fails if any differs from the committed file (CI runs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser)]
enum Task {
    /// Build the rule modules into modules/dist/.
    BuildModules {
        /// Rebuild and compare with the committed files instead of writing them.
        #[arg(long)]
        check: bool,
    },
}

/// How this machine builds wasm32 guests.
enum Toolchain {
    /// `rustup target add wasm32-unknown-unknown` was run: plain cargo.
    Rustup,
    /// Debian's `rustc-web` and `rust-web-src`: Debian's rustc builds std for wasm32 from source
    /// (see the README). The committed modules are built this way.
    Debian { lld: PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Task::parse() {
        Task::BuildModules { check } => build_modules(check),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_owned()
}

fn toolchain() -> anyhow::Result<Toolchain> {
    if Path::new("/usr/bin/rustc").is_file()
        && Path::new("/usr/lib/rustlib/src/rust/library").is_dir()
    {
        let sysroot = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()?;
        let sysroot = String::from_utf8(sysroot.stdout)?.trim().to_owned();
        let lld = Path::new(&sysroot).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
        if lld.is_file() {
            return Ok(Toolchain::Debian { lld });
        }
    }
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if targets.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-unknown-unknown"))
    {
        return Ok(Toolchain::Rustup);
    }
    bail!(
        "no wasm32 toolchain: run `rustup target add wasm32-unknown-unknown`, or on Debian \
         `apt-get install rustc-web rust-web-src`"
    )
}

fn build_modules(check: bool) -> anyhow::Result<()> {
    let root = root();
    let modules = root.join("modules");
    let target_dir = root.join("target/wasm-guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&modules)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(&target_dir);
    let toolchain = toolchain()?;
    if let Toolchain::Debian { lld } = &toolchain {
        let cargo_home = std::env::var("CARGO_HOME")
            .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
        // Remapped paths keep the output independent of where the clone and the registry live,
        // so a rebuild anywhere gives the committed bytes.
        let flags = format!(
            "-C linker={} --remap-path-prefix={}=/nonstop --remap-path-prefix={cargo_home}=/cargo \
             --remap-path-prefix=/usr/lib/rustlib/src/rust=/rustc-src",
            lld.display(),
            root.display()
        );
        cmd.arg("-Zbuild-std=std,panic_abort")
            .env("RUSTC", "/usr/bin/rustc")
            .env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTFLAGS", flags);
    } else {
        cmd.env_remove("RUSTFLAGS");
    }
    // The host build's settings must not leak into the guest build.
    cmd.env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let compiler = compiler_version(&toolchain)?;
    let info_path = modules.join("dist/BUILD-INFO");
    let recorded = std::fs::read_to_string(&info_path).unwrap_or_default();
    let status = cmd.status().context("running cargo for the modules")?;
    if !status.success() {
        bail!("building the modules failed");
    }

    let dist = modules.join("dist");
    std::fs::create_dir_all(&dist)?;
    let mut differ = Vec::new();
    for name in members(&modules)? {
        let core_path = target_dir
            .join("wasm32-unknown-unknown/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let core = std::fs::read(&core_path)
            .with_context(|| format!("reading {}", core_path.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&core)
            .and_then(|e| e.validate(true).encode())
            .with_context(|| format!("making a component of {name}"))?;
        let out = dist.join(format!("{name}.wasm"));
        if check {
            if std::fs::read(&out).ok().as_deref() != Some(&component[..]) {
                differ.push(out.display().to_string());
            }
        } else {
            std::fs::write(&out, &component)?;
            println!("{} ({} bytes)", out.display(), component.len());
        }
    }
    let info = format!("built by `cargo xtask build-modules` with {compiler}\n");
    if !check {
        std::fs::write(&info_path, &info)?;
    }
    if !differ.is_empty() {
        if recorded != info {
            bail!(
                "the committed modules were {}this machine has {compiler}: a different compiler \
                 gives different bytes. Rebuild with `cargo xtask build-modules` and commit, after \
                 checking the tests pass. Differing:\n  {}",
                recorded
                    .trim_end()
                    .replace("built by `cargo xtask build-modules` with ", "built with ")
                    + "; ",
                differ.join("\n  ")
            );
        }
        bail!(
            "these committed modules differ from a rebuild of their source; run `cargo xtask build-modules` and commit:\n  {}",
            differ.join("\n  ")
        );
    }
    if check {
        println!("modules/dist matches its source");
    }
    Ok(())
}

/// The compiler that builds the guests, as `rustc -V` prints it.
fn compiler_version(toolchain: &Toolchain) -> anyhow::Result<String> {
    let rustc = match toolchain {
        Toolchain::Debian { .. } => "/usr/bin/rustc",
        Toolchain::Rustup => "rustc",
    };
    let out = Command::new(rustc)
        .arg("-V")
        .output()
        .with_context(|| format!("running {rustc} -V"))?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// The module crates: directories of `modules/` holding a Cargo.toml.
fn members(modules: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(modules)? {
        let entry = entry?;
        if entry.path().join("Cargo.toml").is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}
