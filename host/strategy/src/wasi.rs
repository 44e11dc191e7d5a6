//! Deterministic stand-ins for the WASI 0.2 functions language runtimes
//! call while they start (CPython, QuickJS, wasi-libc, Rust's std), so a
//! strategy built with them instantiates without being able to observe
//! anything outside (config, nodes, replicas, key).
//!
//! Where it sits: [`crate::sandbox::Sandbox::load`] defines these in the
//! linker of every component, before the import policy's inert stubs (which
//! trap when called) fill in the rest. Every answer is constant:
//!
//! - `wasi:cli/environment`: no variables, no arguments, no working directory;
//! - `wasi:random/*`: the same fixed bytes every call (a runtime seeding its
//!   hash tables gets a constant seed; a strategy must never route with it);
//! - `wasi:clocks/*`: the Unix epoch, and a monotonic clock stopped at 0;
//! - `wasi:io/poll`: every pollable is ready at once;
//! - `wasi:cli/stdout` and `wasi:cli/stderr`: streams that accept writes into
//!   a bounded per-instance buffer (the first [`MAX_GUEST_OUTPUT`] bytes), shown
//!   in the error when a call traps: a Rust panic message, a Python traceback.
//!
//! Written against `Linker::func_wrap`/`func_new` rather than linking
//! `wasmtime-wasi`: that crate would bring a real clock, real randomness and
//! its async machinery (tokio, cap-std) into the host only to be switched off.

use wasmtime::component::{Linker, Resource, ResourceType, Val};

use crate::sandbox::StoreState;

/// Most bytes of a guest's stdout/stderr kept per instance.
pub(crate) const MAX_GUEST_OUTPUT: usize = 4096;

/// What `wasi:random` answers: this byte, repeated.
const RANDOM_BYTE: u8 = 0x5a;
/// What `wasi:random`'s `u64` functions answer.
const RANDOM_U64: u64 = u64::from_le_bytes([RANDOM_BYTE; 8]);
/// Most bytes one `get-random-bytes` call may ask for (a larger request
/// traps instead of allocating what the guest asked).
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Interfaces answered here (version 0.2.x), besides the inert stubs.
pub(crate) const DETERMINISTIC_INTERFACES: &[&str] =
    &["wasi:random/random", "wasi:random/insecure", "wasi:random/insecure-seed", "wasi:clocks/wall-clock", "wasi:clocks/monotonic-clock"];

/// The host side of an output stream (stdout or stderr): writes land in the
/// store's bounded output buffer.
pub(crate) struct GuestStream;

/// The `datetime` record of `wasi:clocks/wall-clock`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower, Clone, Copy)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

fn fixed_bytes(len: u64) -> wasmtime::Result<Vec<u8>> {
    if len > MAX_RANDOM_BYTES {
        wasmtime::bail!("asked wasi:random for {len} bytes; at most {MAX_RANDOM_BYTES} are answered");
    }
    Ok(vec![RANDOM_BYTE; len as usize])
}

/// Keeps what a guest writes to stdout/stderr, up to [`MAX_GUEST_OUTPUT`].
fn keep_output(state: &mut StoreState, bytes: &[Val]) {
    let room = MAX_GUEST_OUTPUT.saturating_sub(state.output.len());
    state.output.extend(bytes.iter().take(room).map(|v| if let Val::U8(b) = v { *b } else { b'?' }));
}

/// Ends the borrows a dynamic host function received: wasmtime refuses to
/// return to the guest while one is still held.
fn release_borrows(store: &mut wasmtime::StoreContextMut<'_, StoreState>, params: &[Val]) -> wasmtime::Result<()> {
    for p in params {
        if let Val::Resource(r) = p {
            r.resource_drop(&mut *store)?;
        }
    }
    Ok(())
}

/// Defines the deterministic functions for every import of `imports` (the
/// component's import names, versions included) that this module answers.
pub(crate) fn define(linker: &mut Linker<StoreState>, imports: &[String]) -> wasmtime::Result<()> {
    for name in imports {
        let interface = name.split_once('@').map_or(name.as_str(), |(i, _)| i);
        let mut inst = match interface {
            "wasi:cli/environment"
            | "wasi:cli/stdout"
            | "wasi:cli/stderr"
            | "wasi:io/streams"
            | "wasi:io/poll"
            | "wasi:random/random"
            | "wasi:random/insecure"
            | "wasi:random/insecure-seed"
            | "wasi:clocks/wall-clock"
            | "wasi:clocks/monotonic-clock" => linker.instance(name)?,
            _ => continue,
        };
        match interface {
            "wasi:cli/environment" => {
                inst.func_wrap("get-environment", |_, (): ()| Ok((Vec::<(String, String)>::new(),)))?;
                inst.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
                inst.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
            }
            "wasi:cli/stdout" | "wasi:cli/stderr" => {
                // The instance re-exports `wasi:io/streams`' resource type: the
                // same host type on both sides.
                inst.resource("output-stream", ResourceType::host::<GuestStream>(), |_, _| Ok(()))?;
                let getter = if interface == "wasi:cli/stdout" { "get-stdout" } else { "get-stderr" };
                inst.func_wrap(getter, |_, (): ()| Ok((Resource::<GuestStream>::new_own(1),)))?;
            }
            "wasi:io/streams" => {
                inst.resource("output-stream", ResourceType::host::<GuestStream>(), |_, _| Ok(()))?;
                for method in ["write", "blocking-write-and-flush"] {
                    inst.func_new(&format!("[method]output-stream.{method}"), |mut store, _, params, results| {
                        if let Some(Val::List(bytes)) = params.get(1) {
                            keep_output(store.data_mut(), bytes);
                        }
                        release_borrows(&mut store, params)?;
                        results[0] = Val::Result(Ok(None));
                        Ok(())
                    })?;
                }
                for method in ["flush", "blocking-flush"] {
                    inst.func_new(&format!("[method]output-stream.{method}"), |mut store, _, params, results| {
                        release_borrows(&mut store, params)?;
                        results[0] = Val::Result(Ok(None));
                        Ok(())
                    })?;
                }
                // wasi-libc waits for room before writing: a pollable that is
                // always ready (the `()` type the inert stubs give pollables).
                inst.func_wrap("[method]output-stream.subscribe", |_, (_s,): (Resource<GuestStream>,)| Ok((Resource::<()>::new_own(0),)))?;
                inst.func_new("[method]output-stream.check-write", |mut store, _, params, results| {
                    release_borrows(&mut store, params)?;
                    results[0] = Val::Result(Ok(Some(Box::new(Val::U64(MAX_GUEST_OUTPUT as u64)))));
                    Ok(())
                })?;
            }
            "wasi:io/poll" => {
                inst.func_wrap("[method]pollable.block", |_, (_p,): (Resource<()>,)| Ok(()))?;
                inst.func_wrap("[method]pollable.ready", |_, (_p,): (Resource<()>,)| Ok((true,)))?;
                // Every pollable is ready: answer all their indexes.
                inst.func_new("poll", |mut store, _, params, results| {
                    let n = match params.first() {
                        Some(Val::List(list)) => {
                            release_borrows(&mut store, list)?;
                            list.len() as u32
                        }
                        _ => 0,
                    };
                    results[0] = Val::List((0..n).map(Val::U32).collect());
                    Ok(())
                })?;
            }
            "wasi:random/random" => {
                inst.func_wrap("get-random-bytes", |_, (len,): (u64,)| Ok((fixed_bytes(len)?,)))?;
                inst.func_wrap("get-random-u64", |_, (): ()| Ok((RANDOM_U64,)))?;
            }
            "wasi:random/insecure" => {
                inst.func_wrap("get-insecure-random-bytes", |_, (len,): (u64,)| Ok((fixed_bytes(len)?,)))?;
                inst.func_wrap("get-insecure-random-u64", |_, (): ()| Ok((RANDOM_U64,)))?;
            }
            "wasi:random/insecure-seed" => inst.func_wrap("insecure-seed", |_, (): ()| Ok(((RANDOM_U64, RANDOM_U64),)))?,
            "wasi:clocks/wall-clock" => {
                inst.func_wrap("now", |_, (): ()| Ok((Datetime { seconds: 0, nanoseconds: 0 },)))?;
                inst.func_wrap("resolution", |_, (): ()| Ok((Datetime { seconds: 1, nanoseconds: 0 },)))?;
            }
            "wasi:clocks/monotonic-clock" => {
                inst.func_wrap("now", |_, (): ()| Ok((0u64,)))?;
                inst.func_wrap("resolution", |_, (): ()| Ok((1_000_000_000u64,)))?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::Component;
    use wasmtime::{Engine, Store};

    /// Calls the host function `func: func() -> u64` of `interface` from
    /// inside a component (lowered into a core module, lifted back out).
    fn call_u64(interface: &str, func: &str) -> u64 {
        let wat = format!(
            r#"(component
                (import "{interface}" (instance $i (export "{func}" (func (result u64)))))
                (alias export $i "{func}" (func $f))
                (core func $lowered (canon lower (func $f)))
                (core module $m
                    (import "host" "f" (func $h (result i64)))
                    (func (export "g") (result i64) call $h))
                (core instance $mi (instantiate $m (with "host" (instance (export "f" (func $lowered))))))
                (func (export "f") (result u64) (canon lift (core func $mi "g")))
            )"#
        );
        let engine = Engine::default();
        let component = Component::new(&engine, wat::parse_str(&wat).unwrap()).unwrap();
        let mut linker = Linker::new(&engine);
        define(&mut linker, &[interface.to_string()]).unwrap();
        let mut store = Store::new(&engine, StoreState::new(1 << 20));
        let instance = linker.instantiate(&mut store, &component).unwrap();
        let f = instance.get_typed_func::<(), (u64,)>(&mut store, "f").unwrap();
        f.call(&mut store, ()).unwrap().0
    }

    #[test]
    fn random_and_clocks_answer_constants() {
        for _ in 0..2 {
            assert_eq!(call_u64("wasi:random/random@0.2.0", "get-random-u64"), RANDOM_U64);
            assert_eq!(call_u64("wasi:random/insecure@0.2.6", "get-insecure-random-u64"), RANDOM_U64);
            assert_eq!(call_u64("wasi:clocks/monotonic-clock@0.2.6", "now"), 0);
            assert_eq!(call_u64("wasi:clocks/monotonic-clock@0.2.0", "resolution"), 1_000_000_000);
        }
    }
}
