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

use crate::{RuntimeConfig, RuntimeError};

/// The data of every wasmtime store: only the memory limit. Rule modules import nothing, so the
/// store holds no capability a guest could use.
pub struct Sandbox {
    max_memory_bytes: usize,
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
        Ok(desired <= 100_000)
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
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances);
        pool.total_core_instances(config.max_instances * 2);
        pool.total_memories(config.max_instances * 2);
        pool.total_tables(config.max_instances * 2);
        pool.max_memory_size(config.max_memory_bytes);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
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
                memory_exceeded: false,
            },
        );
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        store
    }

    /// Arms the deadline for the next call on `store`.
    pub(crate) fn arm_deadline(&self, store: &mut Store<Sandbox>) {
        store.set_epoch_deadline(self.inner.config.deadline_ticks());
    }

    /// Compiles component bytes (no cache).
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, RuntimeError> {
        Component::new(&self.inner.engine, bytes)
            .map_err(|e| RuntimeError::Compile(format!("{e:#}")))
    }

    /// The compiled form of the component at `payload`: read from the cache file beside it when
    /// one exists for this engine, else compiled and cached (a failure to cache is only logged).
    pub fn load(&self, payload: &Path) -> Result<Component, RuntimeError> {
        let cache = self.cache_path(payload);
        if cache.is_file() {
            // SAFETY: the cache file is written only by `load` below, into a version directory of
            // the node's own store, beside the payload whose digest the store verified; it was
            // produced by an engine with the same compatibility hash (in its name), and
            // `deserialize_file` checks that header again.
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
        let component = self.compile(&bytes)?;
        if let Err(e) = write_cache(&cache, &component) {
            tracing::warn!(path = %cache.display(), error = %e, "could not cache compiled code");
        }
        Ok(component)
    }

    /// Where the compiled form of `payload` is cached for this engine.
    pub fn cache_path(&self, payload: &Path) -> PathBuf {
        let mut name = payload.file_name().unwrap_or_default().to_owned();
        name.push(format!(".{}.cwasm", self.inner.cache_tag));
        payload.with_file_name(name)
    }
}

fn write_cache(path: &Path, component: &Component) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    let tmp = path.with_extension("cwasm.tmp");
    std::fs::write(&tmp, &bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
