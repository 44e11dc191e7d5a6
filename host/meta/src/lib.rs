//! Shardgate's metadata cluster (`shardgate meta`).
pub mod model;
pub mod raft;
pub mod state;
pub mod store;
