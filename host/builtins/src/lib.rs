//! The built-in partitioning strategies, as WebAssembly components.
//!
//! `build.rs` compiles the `strategies/` workspace for `wasm32-wasip2` and
//! embeds the results here; `shardgate dev` uploads them to meta, the tests
//! and the benchmark load them into the strategy host. The `misbehave`
//! component exists for tests: it traps, loops or answers out of range on
//! demand; `panicky` too: its `configure` always panics.

/// A built-in strategy component.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub component: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The built-in strategy called `name`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_is_a_component() {
        assert_eq!(super::BUILTINS.len(), 5);
        for b in super::BUILTINS {
            // Component binary: magic, then version 0x0d and layer 1.
            assert_eq!(&b.component[..8], b"\0asm\x0d\0\x01\0", "{}", b.name);
        }
        assert!(super::builtin("ketama").is_some());
        assert!(super::builtin("nope").is_none());
    }
}
