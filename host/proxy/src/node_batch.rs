//! One batch request to one node: the per-node leg of every batch fan-out.
//! [`group`] splits a batch's entries by the node chosen for each;
//! [`get_batch_from`] and [`put_batch_to`] send one node its share in the
//! node's own batch format (`shardgate_api::batch`, never re-implemented
//! here) and check that the answer matches the request entry for entry.
//!
//! Where it sits in the request flow: below [`crate::batches`] (batch get
//! and put) and [`crate::migration`] (the batch misses looked up on earlier
//! owners and copied to the new ones); every call leaves through the
//! forwarder ([`crate::upstream`]).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use shardgate_api::ApiError;
use shardgate_api::batch::{self, GetResult, PutItem, PutResult};

use crate::context::Shared;
use crate::error::RequestError;
use crate::nodes::NodeHandle;
use crate::upstream::UpstreamResponse;

fn batch_headers() -> Vec<(HeaderName, HeaderValue)> {
    vec![(header::CONTENT_TYPE, HeaderValue::from_static(batch::CONTENT_TYPE))]
}

/// Groups entry indexes by the node chosen for each.
pub(crate) fn group(indexes: &[usize], choose: impl Fn(usize) -> Arc<NodeHandle>) -> Vec<(Arc<NodeHandle>, Vec<usize>)> {
    let mut groups: Vec<(Arc<NodeHandle>, Vec<usize>)> = Vec::new();
    let mut by_id: HashMap<*const NodeHandle, usize> = HashMap::new();
    for &i in indexes {
        let node = choose(i);
        let slot = *by_id.entry(Arc::as_ptr(&node)).or_insert_with(|| {
            groups.push((node.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(i);
    }
    groups
}

/// One batch get to one node.
pub(crate) async fn get_batch_from(shared: &Shared, node: &NodeHandle, keys: &[&[u8]]) -> Result<Vec<GetResult>, RequestError> {
    let body = batch::encode_get_request(keys).map_err(ApiError::from)?;
    let r = shared.upstream.send(node, Method::POST, "/v1/batch/get", &batch_headers(), body).await?;
    let body = batch_answer(node, r)?;
    let results = batch::decode_get_response(body, &shared.limits).map_err(|e| bad_batch(node, e.to_string()))?;
    one_result_each(node, results, keys.len(), "keys")
}

/// A node's batch answer that is not `200 OK` is unreadable for the proxy.
fn bad_batch(node: &NodeHandle, reason: String) -> RequestError {
    RequestError::BadUpstreamBatch { node: node.id.clone(), reason }
}

/// The body of a node's `200 OK` batch answer.
fn batch_answer(node: &NodeHandle, r: UpstreamResponse) -> Result<Bytes, RequestError> {
    if r.status != StatusCode::OK {
        let text: String = String::from_utf8_lossy(&r.body).chars().take(200).collect();
        return Err(bad_batch(node, format!("HTTP {}: {text}", r.status.as_u16())));
    }
    Ok(r.body)
}

/// `results`, when the node answered one per entry sent.
fn one_result_each<T>(node: &NodeHandle, results: Vec<T>, sent: usize, what: &str) -> Result<Vec<T>, RequestError> {
    if results.len() != sent {
        return Err(bad_batch(node, format!("{} results for {sent} {what}", results.len())));
    }
    Ok(results)
}

/// One batch put to one node.
pub(crate) async fn put_batch_to(shared: &Shared, node: &NodeHandle, items: &[PutItem]) -> Result<Vec<PutResult>, RequestError> {
    let body = batch::encode_put_request(items).map_err(ApiError::from)?;
    let r = shared.upstream.send(node, Method::POST, "/v1/batch/put", &batch_headers(), body).await?;
    let body = batch_answer(node, r)?;
    let results = batch::decode_put_response(body, &shared.limits).map_err(|e| bad_batch(node, e.to_string()))?;
    one_result_each(node, results, items.len(), "items")
}
