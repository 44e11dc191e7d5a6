//! The framing of `GET /v1/watch`: Server-Sent Events, one `event: routing`
//! per routing epoch carrying the whole [`RoutingState`] as JSON on one
//! `data:` line, and `: heartbeat` comments in between. Meta encodes with
//! [`encode_event`]; [`crate::client::MetaClient::watch`] splits the stream
//! with [`find_event_end`] and decodes with [`parse_event`].
//!
//! `GET /v1/raft/watch` uses the same framing with `event: raft` carrying a
//! [`RaftEvent`] ([`encode_raft_event`], [`parse_raft_event`]). A member that
//! ends a stream on purpose (it lost its leader) sends `event: closing`
//! with an [`ErrorBody`] first ([`encode_closing`], [`parse_closing`]).

use bytes::Bytes;

use crate::model::{ErrorBody, RaftEvent, RoutingState};

/// The comment a member sends every `meta.watch_heartbeat`.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// One SSE event carrying `state`.
pub fn encode_event(state: &RoutingState) -> Bytes {
    // serde_json never writes a raw newline, so the data fits one line.
    let json = serde_json::to_string(state).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    Bytes::from(format!("event: routing\nid: {}\ndata: {json}\n\n", state.epoch))
}

/// One `GET /v1/raft/watch` event: `event: raft`, the [`RaftEvent`] as JSON.
pub fn encode_raft_event(event: &RaftEvent) -> Bytes {
    let json = serde_json::to_string(event).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    Bytes::from(format!("event: raft\nid: {}\ndata: {json}\n\n", event.seq))
}

/// The last event of a watch stream a member ends on purpose: `event:
/// closing` with an [`ErrorBody`] saying why (e.g. kind `no_leader`). The
/// client moves on to the next member.
pub fn encode_closing(reason: &ErrorBody) -> Bytes {
    let json = serde_json::to_string(reason).unwrap_or_default();
    Bytes::from(format!("event: closing\ndata: {json}\n\n"))
}

/// An SSE event split into its name (`message` when absent) and its data.
fn split_event(event: &[u8]) -> Result<(String, String), String> {
    let text = std::str::from_utf8(event).map_err(|e| format!("watch event is not UTF-8: {e}"))?;
    let mut name = "message".to_string();
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    Ok((name, data))
}

/// `Some(reason)` when `event` is a member's `event: closing`.
pub fn parse_closing(event: &[u8]) -> Option<ErrorBody> {
    match split_event(event) {
        Ok((name, data)) if name == "closing" => {
            Some(serde_json::from_str(&data).unwrap_or(ErrorBody { error: data, kind: "closing".into(), leader: None }))
        }
        _ => None,
    }
}

/// One `GET /v1/raft/watch` event: `Some` for `event: raft`, `None` for
/// heartbeats and other events.
pub fn parse_raft_event(event: &[u8]) -> Result<Option<RaftEvent>, String> {
    let (name, data) = split_event(event)?;
    if name != "raft" || data.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&data).map(Some).map_err(|e| format!("bad raft event: {e}"))
}

/// Where the first complete event in `buf` ends (the blank line), if any.
pub fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

/// One SSE event: `Some(state)` for `event: routing`, `None` for comments
/// (heartbeats) and other events.
pub fn parse_event(event: &[u8]) -> Result<Option<RoutingState>, String> {
    let (name, data) = split_event(event)?;
    if name != "routing" || data.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&data).map(Some).map_err(|e| format!("bad routing event: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_parse_and_heartbeats_are_skipped() {
        let state = RoutingState { epoch: 7, nodes: vec![], strategy: None, config: "a = 1\n".into(), replicas: 1, leader: None };
        let ev = encode_event(&state);
        assert_eq!(find_event_end(&ev), Some(ev.len() - 2));
        assert_eq!(parse_event(&ev).unwrap(), Some(state));
        assert_eq!(parse_event(HEARTBEAT).unwrap(), None);
        assert!(parse_event(b"event: routing\ndata: {nope\n\n").is_err());
    }

    #[test]
    fn closing_and_raft_events_round_trip() {
        let reason = ErrorBody { error: "no leader heard from for 1.2s".into(), kind: "no_leader".into(), leader: None };
        let ev = encode_closing(&reason);
        assert_eq!(parse_closing(&ev), Some(reason));
        assert_eq!(parse_event(&ev).unwrap(), None, "a routing reader skips it");
        assert_eq!(parse_closing(HEARTBEAT), None);
        let raft = RaftEvent {
            seq: 3,
            changes: vec!["leader".into(), "term".into()],
            member: 2,
            state: "follower".into(),
            leader: Some(1),
            leader_addr: Some("http://127.0.0.1:7101".into()),
            term: 4,
            members: vec![],
            membership_change_pending: false,
        };
        let ev = encode_raft_event(&raft);
        assert_eq!(find_event_end(&ev), Some(ev.len() - 2));
        assert_eq!(parse_raft_event(&ev).unwrap(), Some(raft));
        assert_eq!(parse_raft_event(HEARTBEAT).unwrap(), None);
    }
}
