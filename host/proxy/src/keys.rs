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
use shardgate_api::ttl::{PatchQuery, TTL_MS_HEADER, delete_query, patch_query, write_query};
use shardgate_api::{ApiError, Limits};

use crate::context::Shared;
use crate::error::RequestError;
use crate::migration::{Migrated, delete_previous, migrate_one};
use crate::replication::{FoundValue, Write, check_fresh, owner_ids, pick_owners, read_from, read_replicas, write_acked, write_all};
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
    let key = key_of(req.uri(), &shared.limits)?;
    let condition = ReadCondition::from_headers(req.headers())?;
    let headers = forward_headers(req.headers(), &[header::IF_NONE_MATCH]);
    Ok(relay(read_key(shared, epoch, &key, req.method().clone(), &condition, &headers).await?))
}

/// Reads one key (GET or HEAD) the way every front end does: the first
/// healthy owner (the next ones on failure), on a miss the replicas
/// (read-through repair), then the migration window. `headers` go to the
/// owner as they are (`If-None-Match`), `condition` judges a value found
/// elsewhere.
pub(crate) async fn read_key(
    shared: &Shared,
    epoch: &RoutingEpoch,
    key: &[u8],
    method: Method,
    condition: &ReadCondition,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<UpstreamResponse, RequestError> {
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, key, &mut positions)?;
    let owners = pick_owners(shared, epoch, key, &positions)?;
    let path = key_path(key);
    let response = read_from(shared, &owners, method.clone(), &path, headers, Bytes::new()).await?;
    if response.status == StatusCode::NOT_FOUND
        && owners.len() > 1
        && let Some(found) = Box::pin(read_replicas(shared, &owners, &path)).await
    {
        return Ok(found_response(found, condition, &method));
    }
    if response.status == StatusCode::NOT_FOUND && epoch.previous.is_some() {
        let chain = epoch.migration_chain(shared.routing.migration_window());
        if !chain.is_empty() {
            // The rare paths are boxed: inline they would size every read's future.
            match Box::pin(migrate_one(shared, &chain, key, &owner_ids(epoch, &positions), &owners, &path)).await {
                Migrated::Found(found) => return Ok(found_response(found, condition, &method)),
                Migrated::Superseded => return Box::pin(read_from(shared, &owners, method, &path, headers, Bytes::new())).await,
                Migrated::NotFound => {}
            }
        }
    }
    Ok(response)
}

/// The answer for a value found on a replica or an earlier owner, as the
/// node would give it (`304` when `If-None-Match` names its version; no
/// body for HEAD).
fn found_response(found: FoundValue, condition: &ReadCondition, method: &Method) -> UpstreamResponse {
    let etag = shardgate_api::etag::format_etag(found.version);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag);
    if condition.not_modified(found.version) {
        return UpstreamResponse { status: StatusCode::NOT_MODIFIED, headers, body: Bytes::new() };
    }
    headers.insert(header::CONTENT_TYPE, found.content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(found.value.len()));
    let body = if *method == Method::HEAD { Bytes::new() } else { found.value };
    UpstreamResponse { status: StatusCode::OK, headers, body }
}

/// `PUT /v1/keys/{key}`: checked like a node checks it, then written to
/// every owner under `proxy.write_ack`.
pub(crate) async fn put_key(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let (parts, body) = req.into_parts();
    let key = key_of(&parts.uri, &shared.limits)?;
    write_query(parts.uri.query(), &shared.limits)?;
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
    let headers = forward_headers(&parts.headers, &[header::CONTENT_TYPE, header::IF_MATCH, header::IF_NONE_MATCH]);
    let conditional = condition != WriteCondition::Always;
    Ok(relay(write_key(shared, epoch, &key, parts.uri.query(), headers, conditional, value).await?))
}

/// Writes one key (checked already; `query` is the node's PUT query) to
/// every owner under `proxy.write_ack`; a condition is decided by the
/// first owner.
pub(crate) async fn write_key(
    shared: &Shared,
    epoch: &RoutingEpoch,
    key: &[u8],
    query: Option<&str>,
    headers: Vec<(HeaderName, HeaderValue)>,
    conditional: bool,
    value: Bytes,
) -> Result<UpstreamResponse, RequestError> {
    check_fresh(shared, epoch)?;
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, key, &mut positions)?;
    let owners = pick_owners(shared, epoch, key, &positions)?;
    let path = with_query(key, query);
    let write = Write { method: Method::PUT, path: &path, headers, conditional, body: value };
    write_all(shared, &owners, positions.len(), write, |s| s.is_success()).await
}

/// `DELETE /v1/keys/{key}`: deleted on every owner under `proxy.write_ack`
/// (a 404 acknowledges), and on the earlier owners in the migration window.
pub(crate) async fn delete_key(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let uri = req.uri();
    let key = key_of(uri, &shared.limits)?;
    let get = delete_query(uri.query())?;
    let condition = WriteCondition::from_headers(req.headers())?;
    let headers = forward_headers(req.headers(), &[header::IF_MATCH, header::IF_NONE_MATCH]);
    let conditional = condition != WriteCondition::Always;
    Ok(relay(remove_key(shared, epoch, &key, get, headers, conditional).await?))
}

/// Deletes one key on every owner under `proxy.write_ack` (a 404
/// acknowledges) and on its earlier owners in the migration window;
/// `get`: the answer carries the deleted value (a value still on an
/// earlier owner is moved to the new ones first, so it is not lost).
pub(crate) async fn remove_key(
    shared: &Shared,
    epoch: &RoutingEpoch,
    key: &[u8],
    get: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
    conditional: bool,
) -> Result<UpstreamResponse, RequestError> {
    check_fresh(shared, epoch)?;
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, key, &mut positions)?;
    let owners = pick_owners(shared, epoch, key, &positions)?;
    let chain = epoch.migration_chain(shared.routing.migration_window());
    if get && !chain.is_empty() {
        read_key(shared, epoch, key, Method::HEAD, &ReadCondition::Always, &[]).await?;
    }
    let path = with_query(key, if get { Some("get=true") } else { None });
    // 404 is an acknowledgement too: the key is gone from that owner.
    let gone = |s: StatusCode| s.is_success() || s == StatusCode::NOT_FOUND;
    let write = Write { method: Method::DELETE, path: &path, headers, conditional, body: Bytes::new() };
    let r = write_all(shared, &owners, positions.len(), write, gone).await?;
    let mut deleted = r.status.is_success();
    // In the migration window the value may still sit on the key's previous
    // owners: delete it there too, or a later read would bring it back.
    if (r.status.is_success() || r.status == StatusCode::NOT_FOUND) && !chain.is_empty() {
        deleted |= delete_previous(shared, &chain, key, &owner_ids(epoch, &positions), &key_path(key)).await;
    }
    if deleted && r.status == StatusCode::NOT_FOUND {
        return Ok(UpstreamResponse { status: StatusCode::NO_CONTENT, headers: HeaderMap::new(), body: Bytes::new() });
    }
    Ok(r)
}

/// `PATCH /v1/keys/{key}`: a new TTL (on every owner) or an atomic
/// increment (on the first owner, its result copied to the others).
pub(crate) async fn patch_key(shared: &Shared, epoch: &RoutingEpoch, req: Request<Incoming>) -> Result<Response, RequestError> {
    let uri = req.uri();
    let key = key_of(uri, &shared.limits)?;
    let query = patch_query(uri.query(), &shared.limits)?;
    Ok(relay(update_key(shared, epoch, &key, query).await?))
}

/// Updates one key in place. A new TTL goes to every owner under
/// `proxy.write_ack` (an owner without the value acknowledges with 404;
/// the answer is 404 only when no owner had it). An
/// increment is decided by the first owner alone (atomic there: it reads
/// and writes under the key's lock), then its result is written to the
/// other owners with the same remaining TTL; every owner's write counts
/// toward `proxy.write_ack`. In the migration window the key is read
/// first, which moves a value still on an earlier owner to the new ones.
pub(crate) async fn update_key(
    shared: &Shared,
    epoch: &RoutingEpoch,
    key: &[u8],
    query: PatchQuery,
) -> Result<UpstreamResponse, RequestError> {
    check_fresh(shared, epoch)?;
    let mut positions = Vec::with_capacity(4);
    shared.routing.route(epoch, key, &mut positions)?;
    let owners = pick_owners(shared, epoch, key, &positions)?;
    if !epoch.migration_chain(shared.routing.migration_window()).is_empty() {
        read_key(shared, epoch, key, Method::HEAD, &ReadCondition::Always, &[]).await?;
    }
    match query {
        PatchQuery::Expire { ttl, get } => {
            let q = format!("ttl_ms={}{}", ttl.as_millis().max(1), if get { "&get=true" } else { "" });
            let path = with_query(key, Some(&q));
            let write = Write { method: Method::PATCH, path: &path, headers: Vec::new(), conditional: false, body: Bytes::new() };
            // A 404 acknowledges (that owner answered: it holds no value
            // to change), as for DELETE; the answer is an owner's success
            // when one had the value, else the 404.
            write_all(shared, &owners, positions.len(), write, |s| s.is_success() || s == StatusCode::NOT_FOUND).await
        }
        PatchQuery::Incr(by) => {
            let path = with_query(key, Some(&format!("incr={by}")));
            let r = shared.upstream.send(&owners[0], Method::PATCH, &path, &[], Bytes::new()).await?;
            if !r.status.is_success() {
                return Ok(r);
            }
            let ttl_ms = r.headers.get(TTL_MS_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let mut acked = 1;
            if owners.len() > 1 {
                let copy = with_query(key, Some(&format!("ttl_ms={}", ttl_ms.max(1))));
                let ct: Vec<(HeaderName, HeaderValue)> =
                    r.headers.get(header::CONTENT_TYPE).map(|v| (header::CONTENT_TYPE, v.clone())).into_iter().collect();
                let sends = owners[1..].iter().map(|n| shared.upstream.send(n, Method::PUT, &copy, &ct, r.body.clone()));
                acked += futures::future::join_all(sends).await.iter().filter(|a| a.as_ref().is_ok_and(|a| a.status.is_success())).count();
            }
            match write_acked(shared.config.write_ack, positions.len(), acked) {
                Ok(()) => Ok(r),
                Err(shortfall) => Err(shortfall.into_error(": the increment's result did not reach enough replicas".into())),
            }
        }
    }
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

/// The node path of `key` with `query` (when not empty).
fn with_query(key: &[u8], query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{}?{q}", key_path(key)),
        _ => key_path(key),
    }
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
