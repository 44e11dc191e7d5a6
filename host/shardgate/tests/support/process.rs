//! Process-level helpers shared by the tests that run the `shardgate`
//! binary itself (`dev.rs`, `probe.rs`, `deploy.rs`, `meta_recover.rs`,
//! the `strategy_*.rs` tests): the binary, the repository root, output as
//! text, a child killed when the test ends however it ends, a free port,
//! and cargo for a scaffolded strategy crate. Each test crate uses a part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The `shardgate` binary of this build.
pub fn shardgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardgate"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Process output as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A child process killed and reaped when dropped: on success, on a failed
/// assertion, on a panic.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1 for a child process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `cargo` for a scaffolded strategy crate in `dir`: its own target
/// directory (kept between runs so its dependencies build once), none of
/// the outer build's `CARGO_*` variables or `RUSTFLAGS`.
pub fn cargo(dir: &Path, target: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir).env("CARGO_TARGET_DIR", target);
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "RUSTFLAGS" {
            cmd.env_remove(key);
        }
    }
    cmd
}
