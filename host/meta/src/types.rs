//! openraft's type configuration for the metadata cluster and the aliases
//! every Raft-facing module uses: the bottom of meta's Raft stack, below
//! [`crate::store`] (log and state machine) and [`crate::raft`] (transport).

use std::io::Cursor;

use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};

use crate::state::{Command, Outcome};

openraft::declare_raft_types!(
    /// openraft types of the metadata cluster: entries carry a [`Command`],
    /// apply answers an [`Outcome`], members are `BasicNode { addr }` with
    /// their API address.
    pub TypeConfig:
        D = Command,
        R = Outcome,
);

pub type NodeId = u64;
pub type Member = openraft::impls::BasicNode;
pub type SnapshotData = Cursor<Vec<u8>>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = VoteOf<TypeConfig>;
pub type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
pub type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
pub type StorageError = openraft::StorageError<TypeConfig>;
