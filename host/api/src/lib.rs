//! `shardgate-api`: the key API's wire contract, on the ground floor below
//! the roles. A cache node serves this API and a proxy serves the same API
//! in front of many nodes; both parse, limit and answer with these modules,
//! so a client cannot tell them apart (only the config key an error names
//! differs: `node.max_key_size` or `proxy.max_key_size`).
//!
//! Request flow of both roles: URL -> [`key`] (one percent-encoded segment)
//! -> [`etag`] (versions, `If-Match` / `If-None-Match`) -> [`ttl`]
//! (`?ttl=`) -> [`body`] (bounded, timed body read) under the role's
//! [`Limits`] -> handler; batches use the [`batch`] wire format; every
//! refusal is an [`ApiError`]. Service addresses (`http://host:port`) are
//! checked by [`addr`].

pub mod addr;
pub mod batch;
pub mod body;
pub mod condition;
pub mod error;
pub mod etag;
pub mod key;
pub mod limits;
pub mod ttl;

pub use error::ApiError;
pub use limits::{InvalidLimit, Limits};
