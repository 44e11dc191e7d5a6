//! Subcommand implementations: the binary's edge, where library errors get
//! `anyhow` context for the user.

pub mod meta;
pub mod ctl;
pub mod dev;
pub mod node;
pub mod proxy;
pub mod strategy;
pub mod serve;
