//! Builds the strategy guests (the `strategies/` workspace) for
//! `wasm32-wasip2` and embeds the components, so that a plain `cargo build`
//! or `cargo test` of the host produces them. Modelled on spin's
//! `tests/test-components/build.rs`: a nested cargo with its own target
//! directory under OUT_DIR and the outer build's flags removed.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (crate directory under strategies/, constant name, built-in name or ""
/// for test-only components).
const GUESTS: &[(&str, &str, &str)] = &[
    ("rendezvous", "RENDEZVOUS", "rendezvous"),
    ("ketama", "KETAMA", "ketama"),
    ("maglev", "MAGLEV", "maglev"),
    ("jump", "JUMP", "jump"),
    ("pinned", "PINNED", "pinned"),
    ("testing/misbehave", "MISBEHAVE", ""),
    ("testing/panicky", "PANICKY", ""),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../..");
    let strategies = root.join("strategies");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = out.join("strategies-target");

    for p in ["wit", "strategies/Cargo.toml", "strategies/Cargo.lock", "strategies/.cargo", "strategies/sdk"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    for (dir, _, _) in GUESTS {
        println!("cargo:rerun-if-changed={}", strategies.join(dir).join("src").display());
        println!("cargo:rerun-if-changed={}", strategies.join(dir).join("Cargo.toml").display());
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&strategies).args(["build", "--release", "--workspace", "--target", "wasm32-wasip2", "--target-dir"]).arg(&target_dir);
    // The outer build's settings are for the host target, not the guests.
    for (key, _) in env::vars() {
        let keep = key == "CARGO_HOME"
            || key == "CARGO_MAKEFLAGS"
            || key.starts_with("CARGO_NET_")
            || key.starts_with("CARGO_HTTP_")
            || key.starts_with("CARGO_REGISTRIES_");
        let drop = (key.starts_with("CARGO_") && !keep)
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "RUSTC"
                    | "RUSTDOC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "TARGET"
                    | "HOST"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC_LINKER"
            );
        if drop {
            cmd.env_remove(&key);
        }
    }
    let output = cmd.output().expect("failed to run cargo for strategies/");
    if !output.status.success() {
        panic!(
            "building the strategy components failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let release = target_dir.join("wasm32-wasip2").join("release");
    let mut code = String::new();
    let mut builtins = String::new();
    for (dir, constant, name) in GUESTS {
        let file = format!("shardgate_strategy_{}.wasm", Path::new(dir).file_name().unwrap().to_str().unwrap());
        let path = release.join(&file);
        assert!(path.exists(), "missing component {}", path.display());
        writeln!(code, "/// The `{dir}` component.\npub const {constant}: &[u8] = include_bytes!({:?});", path.display().to_string())
            .unwrap();
        if !name.is_empty() {
            writeln!(builtins, "    Builtin {{ name: {name:?}, component: {constant} }},").unwrap();
        }
    }
    writeln!(
        code,
        "/// Every built-in strategy, in the order `shardgate dev` uploads them.\npub const BUILTINS: &[Builtin] = &[\n{builtins}];"
    )
    .unwrap();
    std::fs::write(out.join("components.rs"), code).unwrap();
}
