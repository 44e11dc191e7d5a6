//! Subcommand implementations: the binary's edge, where library errors get
//! `anyhow` context for the user.

pub mod ctl;
pub mod dev;
pub mod meta;
pub mod node;
pub mod probe;
pub mod proxy;
pub mod serve;
pub mod strategy;
