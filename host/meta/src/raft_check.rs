//! Shape checks of the Raft RPCs a member receives (`POST /raft/append`,
//! `/raft/snapshot`), run by [`crate::raft`]'s handlers after decoding and
//! before openraft sees the message. openraft trusts its peers: a message no
//! protocol-following leader sends (entries that do not follow
//! `prev_log_id`, a log id beyond the sender's vote, snapshot bytes that are
//! not a state) trips an assertion or a storage error in the Raft core, and
//! the member stops serving. Such a message is answered 400 instead and
//! changes nothing.

use crate::state::MetaState;
use crate::types::{Entry, LogId, SnapshotMeta, Vote};

/// (term, node id) of a leader id: the order openraft compares them in.
fn leader(term: u64, node_id: u64) -> (u64, u64) {
    (term, node_id)
}

fn log_leader(log_id: &LogId) -> (u64, u64) {
    leader(log_id.leader_id.term, log_id.leader_id.node_id)
}

fn vote_leader(vote: &Vote) -> (u64, u64) {
    leader(vote.leader_id.term, vote.leader_id.node_id)
}

fn show(log_id: &LogId) -> String {
    format!("T{}-N{}.{}", log_id.leader_id.term, log_id.leader_id.node_id, log_id.index)
}

/// Largest term and log index a message may carry: 2^63 - 1. Both grow by
/// one per election or entry, so a real cluster never gets near it, and
/// openraft adds to them unchecked (a vote of term `u64::MAX` makes the
/// next election overflow and the core panic).
pub const MAX_TERM_OR_INDEX: u64 = i64::MAX as u64;

/// Largest term a candidate may propose (vote, pre-vote, leader transfer):
/// 2^62. A member that takes it on still has 2^62 elections before its
/// term reaches [`MAX_TERM_OR_INDEX`], where its peers would refuse it.
pub const MAX_CANDIDATE_TERM: u64 = 1 << 62;

fn bounded_vote(what: &str, vote: &Vote, max: u64) -> Result<(), String> {
    if vote.leader_id.term > max {
        return Err(format!("{what} term {} is above {max}", vote.leader_id.term));
    }
    Ok(())
}

fn bounded_log_id(what: &str, log_id: Option<&LogId>) -> Result<(), String> {
    if let Some(id) = log_id
        && (id.leader_id.term > MAX_TERM_OR_INDEX || id.index > MAX_TERM_OR_INDEX)
    {
        return Err(format!("{what} {} has a term or index above {MAX_TERM_OR_INDEX}", show(id)));
    }
    Ok(())
}

/// A vote or pre-vote request: a term within [`MAX_CANDIDATE_TERM`], a
/// last log id within [`MAX_TERM_OR_INDEX`].
pub fn check_vote_request(vote: &Vote, last_log_id: Option<&LogId>) -> Result<(), String> {
    bounded_vote("vote", vote, MAX_CANDIDATE_TERM)?;
    bounded_log_id("last_log_id", last_log_id)
}

/// A leader transfer: the same bounds as a vote request.
pub fn check_transfer_leader(from_leader: &Vote, last_log_id: Option<&LogId>) -> Result<(), String> {
    bounded_vote("from_leader", from_leader, MAX_CANDIDATE_TERM)?;
    bounded_log_id("last_log_id", last_log_id)
}

/// Only a leader sends entries and snapshots, and a leader's vote is
/// committed (granted by a quorum).
fn committed(vote: &Vote) -> Result<(), String> {
    if vote.committed {
        Ok(())
    } else {
        Err(format!(
            "vote T{}-N{} is not committed: only a leader (whose vote a quorum granted) sends entries and snapshots",
            vote.leader_id.term, vote.leader_id.node_id
        ))
    }
}

/// An AppendEntries a leader could have sent: a committed vote, the entries follow
/// `prev_log_id` one index at a time with non-decreasing leader ids, and no
/// log id (previous, entry or commit) is beyond the sender's vote.
pub fn check_append(vote: &Vote, prev_log_id: Option<&LogId>, entries: &[Entry], leader_commit: Option<&LogId>) -> Result<(), String> {
    committed(vote)?;
    bounded_vote("vote", vote, MAX_TERM_OR_INDEX)?;
    bounded_log_id("prev_log_id", prev_log_id)?;
    bounded_log_id("leader_commit", leader_commit)?;
    for (i, entry) in entries.iter().enumerate() {
        bounded_log_id(&format!("entries[{i}]"), Some(&entry.log_id))?;
    }
    let sender = vote_leader(vote);
    let beyond = |what: &str, id: &LogId| {
        format!(
            "{what} {} is beyond the sender's vote T{}-N{}: a leader never sends log ids of a later leader",
            show(id),
            vote.leader_id.term,
            vote.leader_id.node_id
        )
    };
    for (what, id) in [("prev_log_id", prev_log_id), ("leader_commit", leader_commit)] {
        if let Some(id) = id
            && log_leader(id) > sender
        {
            return Err(beyond(what, id));
        }
    }
    let mut previous = prev_log_id;
    for (i, entry) in entries.iter().enumerate() {
        let id = &entry.log_id;
        let expected = previous.map_or(0, |p| p.index.saturating_add(1));
        if previous.is_some_and(|p| p.index == u64::MAX) || id.index != expected {
            return Err(format!(
                "entries[{i}] has index {}; after {} the next index is {expected}",
                id.index,
                previous.map_or("no log".into(), show)
            ));
        }
        if let Some(p) = previous
            && log_leader(id) < log_leader(p)
        {
            return Err(format!("entries[{i}] {} has an earlier leader than {} before it", show(id), show(p)));
        }
        if log_leader(id) > sender {
            return Err(beyond(&format!("entries[{i}]"), id));
        }
        previous = Some(id);
    }
    Ok(())
}

/// What only the receiver can check of an AppendEntries: a leader holds
/// every committed entry (Leader Completeness), so an entry or
/// `prev_log_id` at an index this member has committed carries a log id no
/// later than its committed one (openraft asserts this, and a debug build
/// panics on a message that breaks it). `committed` is this member's
/// committed log id as its metrics last reported it (never ahead of the
/// core's).
pub fn check_append_against_committed(committed: Option<&LogId>, prev_log_id: Option<&LogId>, entries: &[Entry]) -> Result<(), String> {
    let Some(committed) = committed else { return Ok(()) };
    for (what, id) in std::iter::once(("prev_log_id".to_string(), prev_log_id))
        .chain(entries.iter().enumerate().map(|(i, e)| (format!("entries[{i}]"), Some(&e.log_id))))
    {
        if let Some(id) = id
            && id.index <= committed.index
            && (log_leader(id), id.index) > (log_leader(committed), committed.index)
        {
            return Err(format!(
                "{what} {} is at or below this member's committed {} with a later leader: a leader holds every committed entry",
                show(id),
                show(committed)
            ));
        }
    }
    Ok(())
}

/// A snapshot a leader could have sent: a committed vote, its last log id and membership are
/// not beyond the sender's vote, the membership is not beyond the last log
/// id, and the bytes are a state this member can install.
pub fn check_snapshot(vote: &Vote, meta: &SnapshotMeta, data: &[u8]) -> Result<(), String> {
    committed(vote)?;
    bounded_vote("vote", vote, MAX_TERM_OR_INDEX)?;
    bounded_log_id("last_log_id", meta.last_log_id.as_ref())?;
    bounded_log_id("membership log id", meta.last_membership.log_id().as_ref())?;
    let sender = vote_leader(vote);
    if let Some(last) = &meta.last_log_id
        && log_leader(last) > sender
    {
        return Err(format!(
            "snapshot last_log_id {} is beyond the sender's vote T{}-N{}",
            show(last),
            vote.leader_id.term,
            vote.leader_id.node_id
        ));
    }
    if let Some(membership) = meta.last_membership.log_id()
        && Some(membership) > meta.last_log_id.as_ref()
    {
        return Err(format!("snapshot membership log id {} is beyond its last_log_id", show(membership)));
    }
    serde_json::from_slice::<MetaState>(data).map_err(|e| format!("snapshot bytes are not a meta state: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry as _;
    use openraft::impls::leader_id_adv::LeaderId;

    use super::*;

    fn vote(term: u64, node: u64, committed: bool) -> Vote {
        let v = Vote::new(term, node);
        if committed { Vote { committed: true, ..v } } else { v }
    }

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId { leader_id: LeaderId { term, node_id: node }, index }
    }

    fn blank(term: u64, node: u64, index: u64) -> Entry {
        Entry::new_blank(log_id(term, node, index))
    }

    #[test]
    fn appends_a_leader_could_send_pass_and_others_are_named() {
        let v = vote(3, 1, true);
        assert_eq!(check_append(&v, None, &[blank(3, 1, 0), blank(3, 1, 1)], None), Ok(()));
        assert_eq!(check_append(&v, Some(&log_id(2, 2, 4)), &[blank(2, 2, 5), blank(3, 1, 6)], Some(&log_id(2, 2, 4))), Ok(()));
        let err = |r: Result<(), String>| r.unwrap_err();
        assert!(err(check_append(&vote(3, 1, false), None, &[], None)).contains("not committed"));
        assert!(err(check_append(&v, None, &[blank(3, 1, 7)], None)).contains("entries[0] has index 7; after no log the next index is 0"));
        assert!(err(check_append(&v, Some(&log_id(3, 1, 1)), &[blank(3, 1, 2), blank(3, 1, 4)], None)).contains("entries[1] has index 4"));
        assert!(err(check_append(&v, Some(&log_id(3, 1, 1)), &[blank(2, 1, 2)], None)).contains("earlier leader"));
        assert!(err(check_append(&v, None, &[blank(4, 1, 0)], None)).contains("beyond the sender's vote"));
        assert!(err(check_append(&v, Some(&log_id(3, 2, 0)), &[], None)).contains("prev_log_id"));
        assert!(err(check_append(&v, None, &[], Some(&log_id(9, 1, 0)))).contains("leader_commit"));
        assert!(err(check_append(&vote(u64::MAX, 1, true), None, &[], None)).contains("above"));
        assert!(err(check_append(&v, Some(&log_id(1, 1, u64::MAX)), &[], None)).contains("above"));
    }

    #[test]
    fn appends_that_rewrite_committed_entries_are_refused() {
        let committed = log_id(2, 1, 13);
        let ok = |prev: Option<LogId>, entries: &[Entry]| check_append_against_committed(Some(&committed), prev.as_ref(), entries);
        // The committed entries themselves, earlier leaders below, and
        // anything past the committed index pass.
        assert_eq!(ok(Some(log_id(2, 1, 12)), &[blank(2, 1, 13), blank(9, 1, 14)]), Ok(()));
        assert_eq!(ok(None, &[blank(1, 1, 0), blank(2, 1, 1)]), Ok(()));
        assert_eq!(check_append_against_committed(None, None, &[blank(9, 9, 0)]), Ok(()));
        let e = ok(None, &[blank(751, 7, 0)]).unwrap_err();
        assert!(e.contains("entries[0] T751-N7.0") && e.contains("committed T2-N1.13"), "{e}");
        assert!(ok(Some(log_id(3, 1, 5)), &[]).unwrap_err().contains("prev_log_id"));
    }

    #[test]
    fn candidates_propose_bounded_terms() {
        assert_eq!(check_vote_request(&vote(MAX_CANDIDATE_TERM, 1, false), Some(&log_id(1, 1, 5))), Ok(()));
        assert!(check_vote_request(&vote(MAX_CANDIDATE_TERM + 1, 1, false), None).unwrap_err().contains("above"));
        assert!(check_vote_request(&vote(1, 1, false), Some(&log_id(1, 1, u64::MAX))).is_err());
        assert!(check_transfer_leader(&vote(u64::MAX, 1, true), None).is_err());
        assert_eq!(check_transfer_leader(&vote(5, 1, true), None), Ok(()));
    }

    #[test]
    fn snapshots_must_hold_a_state_within_the_senders_vote() {
        let state = serde_json::to_vec(&MetaState::default()).unwrap();
        let meta = |last: Option<LogId>| SnapshotMeta { last_log_id: last, ..SnapshotMeta::default() };
        let v = vote(3, 1, true);
        assert_eq!(check_snapshot(&v, &meta(Some(log_id(3, 1, 9))), &state), Ok(()));
        assert!(check_snapshot(&vote(3, 1, false), &meta(None), &state).unwrap_err().contains("not committed"));
        assert!(check_snapshot(&v, &meta(Some(log_id(4, 1, 9))), &state).unwrap_err().contains("beyond the sender's vote"));
        assert!(check_snapshot(&v, &meta(None), b"").unwrap_err().contains("not a meta state"));
    }
}
