//! [`CompiledCache`]: compiled components on disk, so a large runtime
//! (CPython is ~18 MB of WebAssembly, 10+ s to compile) is compiled once per
//! machine, not once per load.
//!
//! Where it sits: [`crate::Sandbox::load`] looks a component up here by its
//! sha256 after the import policy accepted it and before compiling it; a
//! miss compiles with `Engine::precompile_component` and stores the result.
//! Meta keeps one under its data directory, the proxy and `shardgate
//! strategy check` under a configurable directory.
//!
//! A file is `MAGIC`, an xxh3-128 checksum of the payload and wasmtime's
//! serialized component. Its name carries the component's sha256 and a
//! fingerprint of the engine (wasmtime's version and compilation settings,
//! `Engine::precompile_compatibility_hash`), so a file from another build or
//! configuration is never looked at; a file whose checksum does not match
//! (torn write, corruption), or that wasmtime refuses, is deleted and the
//! component compiled again. The directory is bounded: after each write the
//! least recently used files go until the total is under the bound. A cache
//! that cannot be written logs one warning and is then silently skipped:
//! loads fall back to compiling, the role keeps running.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of every cache file.
const MAGIC: &[u8; 8] = b"SGCWASM1";
/// Header: magic + 16-byte checksum.
const HEADER: usize = 8 + 16;
/// File name suffix.
const SUFFIX: &str = ".cwasm";

/// Compiled components on disk under one directory, bounded in total size.
pub struct CompiledCache {
    dir: PathBuf,
    max_bytes: u64,
    fingerprint: String,
    warned: AtomicBool,
}

impl std::fmt::Debug for CompiledCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledCache").field("dir", &self.dir).field("max_bytes", &self.max_bytes).finish()
    }
}

/// A stable fingerprint of what makes compiled code compatible with
/// `engine` (16 hex digits).
fn fingerprint(engine: &Engine) -> String {
    /// FNV-1a: stable across builds, unlike `DefaultHasher`'s keys.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

impl CompiledCache {
    /// A cache in `dir` (created on the first write) of at most `max_bytes`.
    pub(crate) fn new(dir: PathBuf, max_bytes: u64, engine: &Engine) -> Self {
        CompiledCache { dir, max_bytes, fingerprint: fingerprint(engine), warned: AtomicBool::new(false) }
    }

    /// The directory this cache lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}{SUFFIX}", self.fingerprint))
    }

    fn warn_once(&self, what: &str, e: &dyn std::fmt::Display) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "compiled-strategy cache: {what}; strategies are compiled on every load");
        } else {
            tracing::debug!(dir = %self.dir.display(), error = %e, "compiled-strategy cache: {what}");
        }
    }

    /// The compiled component for sha256 `hash`, if a valid file holds it.
    pub(crate) fn get(&self, engine: &Engine, hash: &str) -> Option<Component> {
        let path = self.path(hash);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.warn_once("cannot read", &e);
                return None;
            }
        };
        let valid =
            bytes.len() > HEADER && &bytes[..8] == MAGIC && bytes[8..HEADER] == xxhash_rust::xxh3::xxh3_128(&bytes[HEADER..]).to_le_bytes();
        if !valid {
            tracing::info!(file = %path.display(), "compiled-strategy cache: damaged file removed; compiling again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // SAFETY: the bytes are wasmtime's own serialization, written by
        // `put` from `Engine::precompile_component` of an engine with the
        // same compatibility fingerprint, and their checksum matches what was
        // written. wasmtime checks its version and configuration again.
        match unsafe { Component::deserialize(engine, &bytes[HEADER..]) } {
            Ok(c) => {
                // Bump the modification time: eviction goes by least recent use.
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                Some(c)
            }
            Err(e) => {
                tracing::info!(file = %path.display(), error = %e, "compiled-strategy cache: wasmtime refused a file; compiling again");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores wasmtime's serialized form of component `hash`, then trims the
    /// directory to its bound. Never fails: an unwritable cache only logs.
    pub(crate) fn put(&self, hash: &str, serialized: &[u8]) {
        if (serialized.len() + HEADER) as u64 > self.max_bytes {
            return;
        }
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            return self.warn_once("cannot create the directory", &e);
        }
        let tmp = self.dir.join(format!(".{hash}-{}.tmp", std::process::id()));
        let mut file = Vec::with_capacity(HEADER + serialized.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(serialized).to_le_bytes());
        file.extend_from_slice(serialized);
        // Write aside, then rename: a reader never sees half a file.
        if let Err(e) = std::fs::write(&tmp, &file).and_then(|()| std::fs::rename(&tmp, self.path(hash))) {
            let _ = std::fs::remove_file(&tmp);
            return self.warn_once("cannot write", &e);
        }
        self.trim();
    }

    /// Removes the least recently used files until the total is at most
    /// `max_bytes`.
    fn trim(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(SUFFIX))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}
