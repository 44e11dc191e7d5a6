//! [`SandboxSettings`]: the strategy budgets a role reads from its config
//! file (`[meta.strategy]`, `[proxy.strategy]`) and `shardgate strategy
//! check` from its flags, turned into [`Limits`] and a [`Sandbox`].
//!
//! Where it sits: the roles deserialize it inside their own config (strict,
//! `deny_unknown_fields`), call [`SandboxSettings::validate`] with their key
//! prefix, and build their sandbox with [`SandboxSettings::sandbox`].

use std::path::PathBuf;

use bytesize::ByteSize;

use crate::error::StrategyError;
use crate::sandbox::{Limits, Sandbox};

/// Default bound of the on-disk compiled-component cache.
pub const DEFAULT_COMPILED_CACHE_SIZE: u64 = 1 << 30;
/// Largest `memory` accepted: a 32-bit guest cannot address more.
const MAX_MEMORY: u64 = 4 << 30;

/// Budgets of every call into a strategy, and the compiled-component cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    /// Linear memory per strategy instance ("256MiB").
    pub memory: ByteSize,
    /// Fuel (about one unit per WebAssembly instruction) for `configure`,
    /// which may build a large table.
    pub configure_fuel: u64,
    /// Fuel for instantiation (a language runtime's start-up), `metadata`
    /// and `validate-config`.
    pub control_fuel: u64,
    /// Fuel per key for `route` and `route-batch`.
    pub route_fuel: u64,
    /// Bound of the on-disk cache of compiled components ("1GiB"); "0"
    /// turns it off (every load compiles).
    pub compiled_cache_size: ByteSize,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        let l = Limits::default();
        SandboxSettings {
            memory: ByteSize::b(l.memory_bytes as u64),
            configure_fuel: l.configure_fuel,
            control_fuel: l.control_fuel,
            route_fuel: l.route_fuel,
            compiled_cache_size: ByteSize::b(DEFAULT_COMPILED_CACHE_SIZE),
        }
    }
}

impl SandboxSettings {
    /// Checks every value; the error is (key, message) with the key
    /// relative to this table (`memory`, `route_fuel`, ...).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let mem = self.memory.as_u64();
        if !(1 << 20..=MAX_MEMORY).contains(&mem) {
            return Err(("memory", format!("must be between 1MiB and 4GiB, got {}", self.memory)));
        }
        for (key, fuel) in [("configure_fuel", self.configure_fuel), ("control_fuel", self.control_fuel), ("route_fuel", self.route_fuel)] {
            if fuel < 1000 {
                return Err((key, format!("must be at least 1000 fuel units, got {fuel}")));
            }
        }
        Ok(())
    }

    /// The limits these settings give, with `max_component_bytes`.
    pub fn limits(&self, max_component_bytes: usize) -> Limits {
        Limits {
            max_component_bytes,
            memory_bytes: self.memory.as_u64() as usize,
            configure_fuel: self.configure_fuel,
            control_fuel: self.control_fuel,
            route_fuel: self.route_fuel,
            ..Limits::default()
        }
    }

    /// A sandbox with these limits, keeping compiled components under
    /// `cache_dir` (bounded by `compiled_cache_size`); none without a dir.
    pub fn sandbox(&self, max_component_bytes: usize, cache_dir: Option<PathBuf>) -> Result<Sandbox, StrategyError> {
        let limits = self.limits(max_component_bytes);
        match cache_dir {
            Some(dir) => Sandbox::with_compiled_cache(limits, dir, self.compiled_cache_size.as_u64()),
            None => Sandbox::new(limits),
        }
    }
}

/// The user's cache directory for compiled strategies:
/// `$XDG_CACHE_HOME/shardgate/compiled-strategies`, else
/// `$HOME/.cache/shardgate/compiled-strategies`; `None` when neither is set.
pub fn default_compiled_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("shardgate").join("compiled-strategies"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_sandbox_defaults_and_valid() {
        let s = SandboxSettings::default();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.limits(7), Limits { max_component_bytes: 7, ..Limits::default() });
    }

    #[test]
    fn bad_values_name_their_key() {
        let s = SandboxSettings { route_fuel: 5, ..Default::default() };
        assert_eq!(s.validate().unwrap_err().0, "route_fuel");
        let s = SandboxSettings { memory: ByteSize::kib(4), ..Default::default() };
        assert!(s.validate().unwrap_err().1.contains("1MiB"));
    }

    #[test]
    fn parses_from_toml_strictly() {
        let s: SandboxSettings = toml::from_str("memory = \"64MiB\"\nroute_fuel = 100000000").unwrap();
        assert_eq!(s.memory, ByteSize::mib(64));
        assert_eq!(s.route_fuel, 100_000_000);
        assert!(toml::from_str::<SandboxSettings>("fuel = 1").is_err());
    }
}
