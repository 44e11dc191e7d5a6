//! `shardgate meta recover`: make a stopped member the only voter of its
//! cluster again, keeping its data, when the cluster cannot reach a quorum
//! any more (members lost for good, or a membership change stuck in a joint
//! configuration that needs a member that will not come back).
//!
//! Where it sits: offline, on a member's data directory (`meta.redb`, see
//! [`crate::store`]), with the member stopped; the next `shardgate meta`
//! start elects it alone. Like etcd's `--force-new-cluster`: the other
//! survivors are then wiped and join again (`meta.join`), and catch up from
//! it. Run it on the survivor with the highest applied index (`GET
//! /v1/raft/status` before stopping, or the `last_log_index` this reports).
//!
//! How: the member's effective membership is the last membership entry of
//! its log (committed or not). Recovery appends one more membership entry,
//! voters `{id}`, under a new term above any the member has seen, and saves
//! a vote for that term, in one fsynced transaction. Entries before it are
//! kept: the new leader commits them with its first entry, as Raft commits
//! a new leader's predecessors. Writes that were acknowledged by a majority
//! that did not include this member are lost; that is why the most
//! up-to-date survivor is the one to recover.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, Membership};
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::raft::NodeId;
use crate::store::{DB_FILE, KEY_SNAPSHOT_META, KEY_VOTE, KV, LOG};
use crate::types::{Entry, LogId, SnapshotMeta, Vote};

/// Recovery could not run; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("no meta data in {0} (no {DB_FILE}): give the data directory of a member that was part of the cluster")]
    NoData(String),
    #[error("cannot open {path}: {reason} (is the member still running? stop it first)")]
    Open { path: String, reason: String },
    #[error("cannot read or write {path}: {reason}")]
    Storage { path: String, reason: String },
    #[error("member {id} is not in the membership stored in {path} (members: {members}); give this member's own id (meta.id)")]
    NotAMember { id: NodeId, path: String, members: String },
    #[error("{path} holds no membership: this member never joined a cluster, there is nothing to recover")]
    NoMembership { path: String },
}

/// What [`recover`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub id: NodeId,
    /// This member's API address, from the stored membership.
    pub addr: String,
    /// The voter sets before (two while a change was pending).
    pub voters_before: Vec<BTreeSet<NodeId>>,
    /// Members (voters and learners) no longer in the membership.
    pub removed: BTreeSet<NodeId>,
    /// The last log index before recovery.
    pub last_log_index: u64,
    /// The term of the appended membership entry.
    pub term: u64,
    /// `false` when the member already was the only voter with no change
    /// pending: nothing was written.
    pub changed: bool,
}

/// Make member `id` (stopped; its data in `data_dir`) the only voter.
pub fn recover(data_dir: &Path, id: NodeId) -> Result<Recovery, RecoverError> {
    let path = data_dir.join(DB_FILE);
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(RecoverError::NoData(data_dir.display().to_string()));
    }
    let db = Database::open(&path).map_err(|e| RecoverError::Open { path: shown.clone(), reason: e.to_string() })?;
    let storage = |e: &dyn std::fmt::Display| RecoverError::Storage { path: shown.clone(), reason: e.to_string() };

    // The last log entry, the last membership in the log, and the vote.
    let (last_log_id, log_membership, vote, snapshot_meta) = {
        let txn = db.begin_read().map_err(|e| storage(&e))?;
        let log = txn.open_table(LOG).map_err(|e| storage(&e))?;
        let decode = |bytes: &[u8]| serde_json::from_slice::<Entry>(bytes).map_err(|e| storage(&e));
        let last_log_id = match log.last().map_err(|e| storage(&e))? {
            Some((_, v)) => Some(decode(v.value())?.log_id),
            None => None,
        };
        let mut log_membership = None;
        for item in log.iter().map_err(|e| storage(&e))?.rev() {
            let (_, v) = item.map_err(|e| storage(&e))?;
            if let EntryPayload::Membership(m) = decode(v.value())?.payload {
                log_membership = Some(m);
                break;
            }
        }
        let kv = txn.open_table(KV).map_err(|e| storage(&e))?;
        let get =
            |key: &str| -> Result<Option<Vec<u8>>, RecoverError> { Ok(kv.get(key).map_err(|e| storage(&e))?.map(|v| v.value().to_vec())) };
        let vote: Option<Vote> = get(KEY_VOTE)?.map(|b| serde_json::from_slice(&b)).transpose().map_err(|e| storage(&e))?;
        let snapshot_meta: Option<SnapshotMeta> =
            get(KEY_SNAPSHOT_META)?.map(|b| serde_json::from_slice(&b)).transpose().map_err(|e| storage(&e))?;
        (last_log_id, log_membership, vote, snapshot_meta)
    };
    let membership = match log_membership {
        Some(m) => m,
        None => match &snapshot_meta {
            Some(meta) if meta.last_membership.log_id().is_some() => meta.last_membership.membership().clone(),
            _ => return Err(RecoverError::NoMembership { path: shown }),
        },
    };
    let Some(me) = membership.get_node(&id).cloned() else {
        let members: Vec<String> = membership.nodes().map(|(n, m)| format!("{n} ({})", m.addr)).collect();
        return Err(RecoverError::NotAMember { id, path: shown, members: members.join(", ") });
    };
    let voters_before = membership.get_joint_config().clone();
    let removed: BTreeSet<NodeId> = membership.nodes().map(|(n, _)| *n).filter(|n| *n != id).collect();
    let last_index = last_log_id
        .as_ref()
        .map(|l| l.index())
        .or_else(|| snapshot_meta.as_ref().and_then(|m| m.last_log_id.as_ref().map(|l| l.index())))
        .unwrap_or(0);
    let already_alone = voters_before.len() == 1 && voters_before[0] == BTreeSet::from([id]) && removed.is_empty();
    let seen_term = [vote.as_ref().map(|v| v.leader_id.term), last_log_id.as_ref().map(|l| l.leader_id.term)].into_iter().flatten().max();
    let term = seen_term.unwrap_or(0) + 1;
    let mut recovery = Recovery { id, addr: me.addr.clone(), voters_before, removed, last_log_index: last_index, term, changed: false };
    if already_alone {
        recovery.term = seen_term.unwrap_or(0);
        return Ok(recovery);
    }

    let leader = openraft::impls::leader_id_adv::LeaderId::<u64, NodeId>::new_committed(term, id);
    let entry = Entry {
        log_id: LogId::new(leader, last_index + 1),
        payload: EntryPayload::Membership(
            Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, me)])).map_err(|e| storage(&e))?,
        ),
    };
    let entry_bytes = serde_json::to_vec(&entry).map_err(|e| storage(&e))?;
    let vote_bytes = serde_json::to_vec(&Vote::new(term, id)).map_err(|e| storage(&e))?;
    let txn = db.begin_write().map_err(|e| storage(&e))?;
    {
        let mut log = txn.open_table(LOG).map_err(|e| storage(&e))?;
        log.insert(last_index + 1, entry_bytes.as_slice()).map_err(|e| storage(&e))?;
        let mut kv = txn.open_table(KV).map_err(|e| storage(&e))?;
        kv.insert(KEY_VOTE, vote_bytes.as_slice()).map_err(|e| storage(&e))?;
    }
    // Durability::Immediate (redb's default): fsynced when commit returns.
    txn.commit().map_err(|e| storage(&e))?;
    recovery.changed = true;
    Ok(recovery)
}
