//! The node's one wasmtime engine: pooling allocator, epoch interruption for call deadlines, a
//! memory limit per instance, and compiled code cached beside the payload in the version store so
//! a restart or a rollback never recompiles.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
};

use nonstop_bundle::Digest;

use crate::{RuntimeConfig, RuntimeError};

/// The data of every wasmtime store: only the memory limit. Rule modules import nothing, so the
/// store holds no capability a guest could use.
pub struct Sandbox {
    max_memory_bytes: usize,
    max_table_elements: usize,
    memory_exceeded: bool,
}

impl ResourceLimiter for Sandbox {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.memory_exceeded = true;
            // Failing the call outright (rather than letting memory.grow return -1) names the
            // cause instead of leaving the guest to abort with an anonymous trap.
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes exceeded (asked for {desired})",
                self.max_memory_bytes
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}

impl Sandbox {
    /// Whether this store's instance hit the memory limit.
    pub(crate) fn memory_exceeded(&self) -> bool {
        self.memory_exceeded
    }
}

/// The engine shared by every rule module of a node.
#[derive(Clone)]
pub struct RuleEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: Engine,
    linker: Linker<Sandbox>,
    config: RuntimeConfig,
    cache_tag: String,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl RuleEngine {
    /// Builds the engine and starts its epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        // Four components, each with live, standby and candidate loaded at once.
        let needed = 4 * 3 * config.instances_per_version();
        if config.max_instances < needed {
            return Err(RuntimeError::Engine(format!(
                "max_instances {} is too small: 4 components x 3 versions x (warm_instances {} + 8 concurrent calls) need {needed}",
                config.max_instances, config.warm_instances
            )));
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances);
        pool.total_core_instances(config.max_instances * 2);
        pool.total_memories(config.max_instances * 2);
        pool.total_tables(config.max_instances * 2);
        pool.max_memory_size(config.max_memory_bytes);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(config.fuel_per_call.is_some())
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let cache_tag = format!("{:016x}", hasher.finish());
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            let tick = config.tick();
            std::thread::Builder::new()
                .name("nonstop-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("starting the epoch thread: {e}")))?;
        }
        Ok(RuleEngine {
            inner: Arc::new(EngineInner {
                linker: Linker::new(&engine),
                engine,
                config,
                cache_tag,
                stop_ticker,
            }),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    pub(crate) fn wasmtime(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<Sandbox> {
        &self.inner.linker
    }

    /// A store for one instance, with the memory limit and the call deadline armed.
    pub(crate) fn store(&self) -> Store<Sandbox> {
        let mut store = Store::new(
            &self.inner.engine,
            Sandbox {
                max_memory_bytes: self.inner.config.max_memory_bytes,
                max_table_elements: self.inner.config.max_table_elements,
                memory_exceeded: false,
            },
        );
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        self.arm(&mut store);
        store
    }

    /// Gives `store` a full budget (fuel and deadline) for its next call. Instantiation runs
    /// guest start code too, so a new store is armed before it.
    pub(crate) fn arm(&self, store: &mut Store<Sandbox>) {
        store.set_epoch_deadline(self.inner.config.deadline_ticks());
        if let Some(fuel) = self.inner.config.fuel_per_call {
            // Cannot fail: fuel is enabled exactly when `fuel_per_call` is set.
            let _ = store.set_fuel(fuel);
        }
    }

    /// Compiles component bytes (no cache).
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, RuntimeError> {
        Component::new(&self.inner.engine, bytes)
            .map_err(|e| RuntimeError::Compile(format!("{e:#}")))
    }

    /// The compiled form of the component at `payload`, whose content has `digest`: read from
    /// the cache file beside it when one exists for this engine and this content, else compiled
    /// and cached (a failure to cache is only logged).
    pub fn load(&self, payload: &Path, digest: &Digest) -> Result<Component, RuntimeError> {
        let cache = self.cache_path(payload, digest);
        if cache.is_file() {
            // SAFETY: deserialising runs native code, so the file must be one this node wrote:
            // it is written only by `load` below (temporary name, fsync, rename), into a version
            // directory of the node's own store, which is trusted exactly as the node's binary
            // is (whoever can write there can replace any payload's code). Its name binds it to
            // this payload's digest and this engine's compatibility hash, so a stale or foreign
            // cache is never picked up, and `deserialize_file` checks the engine header again.
            match unsafe { Component::deserialize_file(&self.inner.engine, &cache) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %cache.display(), error = %e, "compiled cache unusable; recompiling")
                }
            }
        }
        let bytes = std::fs::read(payload).map_err(|e| RuntimeError::Io {
            path: payload.to_owned(),
            source: e,
        })?;
        // Compiled code is cached under the digest's name: compile only content that has it.
        let found = Digest::of(&bytes);
        if found != *digest {
            return Err(RuntimeError::DigestMismatch {
                path: payload.to_owned(),
                expected: digest.to_string(),
                found: found.to_string(),
            });
        }
        let component = self.compile(&bytes)?;
        if let Err(e) = write_cache(&cache, &component) {
            tracing::warn!(path = %cache.display(), error = %e, "could not cache compiled code");
        }
        Ok(component)
    }

    /// Where the compiled form of `payload` (content `digest`) is cached for this engine.
    pub fn cache_path(&self, payload: &Path, digest: &Digest) -> PathBuf {
        let mut name = payload.file_name().unwrap_or_default().to_owned();
        name.push(format!(
            ".{}-{}.cwasm",
            &hex_digest(digest)[..16],
            self.inner.cache_tag
        ));
        payload.with_file_name(name)
    }
}

fn hex_digest(digest: &Digest) -> String {
    digest.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the cache file under a temporary name of this writer's own, then renames it: two
/// processes loading the same payload at once (a node and `nonstop rules call`) each rename a
/// whole file, and neither can leave a torn one to be deserialised later.
fn write_cache(path: &Path, component: &Component) -> anyhow::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let bytes = component.serialize()?;
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("cwasm.{}-{n}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(written?)
}
