//! Keys: the single-key handlers of the key API (`GET`, `HEAD`, `PUT` and
//! `DELETE /v1/keys/{key}`), with the node's input checks (the key, `ttl`,
//! the conditions, `Content-Type`, the value size and body read timeout
//! from `shardgate-api`) and the node's answers, and the proxy's own
//! `GET /v1/owners/{key}`.
//!
//! Where it sits in the request flow: [`crate::server`] dispatches a key
//! route here with the routing epoch it loaded once (and adds the epoch
//! header to the answer); a handler routes the key with that epoch
//! ([`crate::routing`]), chooses owners and reads or writes through
//! [`crate::replication`], falls back to [`crate::migration`] on a miss
//! (and deletes there too), and relays the node's answer.

use std::borrow::Cow;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use hyper::body::Incoming;
use serde::Serialize;
use shardgate_api::body::{content_length, read_body};
use shardgate_api::etag::{ReadCondition, WriteCondition};
use shardgate_api::key::{KEY_PATH_PREFIX, decode_key_segment, key_path};
use shardgate_api::ttl::ttl_from_query;
use shardgate_api::{ApiError, Limits};

use crate::context::Shared;
use crate::error::RequestError;
use crate::migration::{Migrated, delete_previous, migrate_one};
use crate::replication::{FoundValue, Write, check_fresh, owner_ids, pick_owners, read_from, read_replicas, write_all};
use crate::routing::RoutingEpoch;
use crate::upstream::UpstreamResponse;

/// `GET /v1/owners/{key}`: which nodes own a key under the serving epoch
/// (preference order, ejected or not). Not a node endpoint: for operators
/// and tests.
pub const OWNERS_PATH_PREFIX: &str = "/v1/owners/";

/// Answer of `GET /v1/owners/{key}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Owners {
    pub epoch: u64,
    pub owners: Vec<String>,
}

/// `GET` and `HEAD /v1/keys/{key}`: the first healthy owner's answer; on a
/// miss, the replicas (read-through repair), then the migration window.
pub(crate) async fn get_key(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let uri = req.uri();
    let key = key_of(uri, &shared.limits)?;
    let condition = ReadCondition::from_headers(req.headers())?;
    let method = req.method().clone();
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, &key, &mut positions)?;
    let owners = pick_owners(shared, epoch, &key, &positions)?;
    let path = key_path(&key);
    let headers = forward_headers(req.headers(), &[header::IF_NONE_MATCH]);
    let response = read_from(shared, &owners, method.clone(), &path, &headers, Bytes::new()).await?;
    if response.status == StatusCode::NOT_FOUND
        && owners.len() > 1
        && let Some(found) = read_replicas(shared, &owners, &path).await
    {
        return Ok(found_response(found, &condition, &method));
    }
    if response.status == StatusCode::NOT_FOUND && epoch.previous.is_some() {
        let chain = epoch.migration_chain(shared.routing.migration_window());
        if !chain.is_empty() {
            match migrate_one(shared, &chain, &key, &owner_ids(epoch, &positions), &owners, &path).await {
                Migrated::Found(found) => return Ok(found_response(found, &condition, &method)),
                Migrated::Superseded => {
                    let again = read_from(shared, &owners, method, &path, &headers, Bytes::new()).await?;
                    return Ok(relay(again));
                }
                Migrated::NotFound => {}
            }
        }
    }
    Ok(relay(response))
}

/// The answer for a value found on a replica or an earlier owner, as the
/// node would give it (`304` when `If-None-Match` names its version; no
/// body for HEAD).
fn found_response(found: FoundValue, condition: &ReadCondition, method: &Method) -> Response {
    let etag = shardgate_api::etag::format_etag(found.version);
    if condition.not_modified(found.version) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let len = found.value.len();
    let mut r = Response::new(if *method == Method::HEAD { Body::empty() } else { Body::from(found.value) });
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, found.content_type);
    h.insert(header::ETAG, etag);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// `PUT /v1/keys/{key}`: checked like a node checks it, then written to
/// every owner under `proxy.write_ack`.
pub(crate) async fn put_key(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let (parts, body) = req.into_parts();
    let key = key_of(&parts.uri, &shared.limits)?;
    ttl_from_query(parts.uri.query(), &shared.limits)?;
    let condition = WriteCondition::from_headers(&parts.headers)?;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE)
        && ct.len() > shardgate_api::limits::MAX_CONTENT_TYPE_LEN
    {
        return Err(ApiError::InvalidHeader {
            name: "Content-Type",
            reason: format!("is {} bytes; the limit is {} bytes", ct.len(), shardgate_api::limits::MAX_CONTENT_TYPE_LEN),
        }
        .into());
    }
    let limit = shared.limits.max_value_size;
    if let Some(size) = content_length(&parts.headers)?
        && size > limit as u64
    {
        return Err(ApiError::ValueTooLarge { size, limit, limit_name: shared.limits.name("max_value_size") }.into());
    }
    let value = read_body(body, limit, &shared.limits, "max_value_size", shared.config.body_read_timeout).await?;
    check_fresh(shared, epoch)?;
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, &key, &mut positions)?;
    let owners = pick_owners(shared, epoch, &key, &positions)?;
    let path = match parts.uri.query() {
        Some(q) if !q.is_empty() => format!("{}?{q}", key_path(&key)),
        _ => key_path(&key),
    };
    let headers = forward_headers(&parts.headers, &[header::CONTENT_TYPE, header::IF_MATCH, header::IF_NONE_MATCH]);
    let conditional = condition != WriteCondition::Always;
    let write = Write { method: Method::PUT, path: &path, headers, conditional, body: value };
    let r = write_all(shared, &owners, positions.len(), write, |s| s.is_success()).await?;
    Ok(relay(r))
}

/// `DELETE /v1/keys/{key}`: deleted on every owner under `proxy.write_ack`
/// (a 404 acknowledges), and on the earlier owners in the migration window.
pub(crate) async fn delete_key(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let uri = req.uri();
    let key = key_of(uri, &shared.limits)?;
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::UnknownQueryParameter {
            name: uri.query().unwrap_or_default().chars().take(64).collect(),
            accepted: "nothing",
        }
        .into());
    }
    let condition = WriteCondition::from_headers(req.headers())?;
    check_fresh(shared, epoch)?;
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, &key, &mut positions)?;
    let owners = pick_owners(shared, epoch, &key, &positions)?;
    let path = key_path(&key);
    let headers = forward_headers(req.headers(), &[header::IF_MATCH, header::IF_NONE_MATCH]);
    let conditional = condition != WriteCondition::Always;
    // 404 is an acknowledgement too: the key is gone from that owner.
    let gone = |s: StatusCode| s.is_success() || s == StatusCode::NOT_FOUND;
    let write = Write { method: Method::DELETE, path: &path, headers, conditional, body: Bytes::new() };
    let r = write_all(shared, &owners, positions.len(), write, gone).await?;
    let mut deleted = r.status.is_success();
    // In the migration window the value may still sit on the key's previous
    // owners: delete it there too, or a later read would bring it back.
    if r.status.is_success() || r.status == StatusCode::NOT_FOUND {
        let chain = epoch.migration_chain(shared.routing.migration_window());
        if !chain.is_empty() {
            deleted |= delete_previous(shared, &chain, &key, &owner_ids(epoch, &positions), &path).await;
        }
    }
    if deleted && r.status == StatusCode::NOT_FOUND {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(relay(r))
}

/// `GET /v1/owners/{key}`.
pub(crate) fn owners(shared: &Shared, epoch: &RoutingEpoch, uri: &Uri) -> Result<Response, RequestError> {
    let segment = uri.path().strip_prefix(OWNERS_PATH_PREFIX).unwrap_or("");
    let key = decode_key_segment(segment, &shared.limits)?;
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, &key, &mut positions)?;
    let owners = owner_ids(epoch, &positions).into_iter().map(String::from).collect();
    Ok(axum::Json(Owners { epoch: epoch.epoch, owners }).into_response())
}

fn key_of<'a>(uri: &'a Uri, limits: &Limits) -> Result<Cow<'a, [u8]>, RequestError> {
    let segment = uri.path().strip_prefix(KEY_PATH_PREFIX).unwrap_or("");
    Ok(decode_key_segment(segment, limits)?)
}

fn forward_headers(headers: &HeaderMap, names: &[HeaderName]) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for name in names {
        for v in headers.get_all(name) {
            out.push((name.clone(), v.clone()));
        }
    }
    out
}

/// The client-facing response for a node's answer (its headers moved over;
/// [`UpstreamResponse`] holds no hop-by-hop ones).
fn relay(r: UpstreamResponse) -> Response {
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = r.status;
    *response.headers_mut() = r.headers;
    response
}
