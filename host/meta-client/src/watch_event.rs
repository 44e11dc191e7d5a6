//! The framing of `GET /v1/watch`: Server-Sent Events, one `event: routing`
//! per routing epoch carrying the whole [`RoutingState`] as JSON on one
//! `data:` line, and `: heartbeat` comments in between. Meta encodes with
//! [`encode_event`]; [`crate::client::MetaClient::watch`] splits the stream
//! with [`find_event_end`] and decodes with [`parse_event`].

use bytes::Bytes;

use crate::model::RoutingState;

/// The comment a member sends every `meta.watch_heartbeat`.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// One SSE event carrying `state`.
pub fn encode_event(state: &RoutingState) -> Bytes {
    // serde_json never writes a raw newline, so the data fits one line.
    let json = serde_json::to_string(state).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    Bytes::from(format!("event: routing\nid: {}\ndata: {json}\n\n", state.epoch))
}

/// Where the first complete event in `buf` ends (the blank line), if any.
pub fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

/// One SSE event: `Some(state)` for `event: routing`, `None` for comments
/// (heartbeats) and other events.
pub fn parse_event(event: &[u8]) -> Result<Option<RoutingState>, String> {
    let text = std::str::from_utf8(event).map_err(|e| format!("watch event is not UTF-8: {e}"))?;
    let mut name = "message";
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
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
}
