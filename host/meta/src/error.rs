//! Errors of the meta role: [`MetaError`] ends `run` (start-up and serving
//! failures), [`ApiError`] is one refused HTTP request and maps to a status
//! code and an [`ErrorBody`].

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::config::ConfigError;
use crate::model::ErrorBody;
use crate::state::Rejection;
use crate::store::StoreError;

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start raft: {0}")]
    Raft(String),
    #[error("cannot start the strategy sandbox: {0}")]
    Sandbox(String),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// `meta.tls.cert` / `meta.tls.key` cannot be used (the message names
    /// the key and the file).
    #[error(transparent)]
    Tls(#[from] shardgate_tls::TlsError),
    /// `meta.tls.ca` cannot be used.
    #[error("meta.tls.ca: {0}")]
    TlsCa(shardgate_tls::TlsError),
}

/// A refused request. Nothing was committed unless the variant says the
/// outcome is unknown (`WriteTimeout`).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("strategy refused: {0}")]
    Admission(String),
    #[error("component is {size} bytes; the limit is {limit} bytes (meta.max_component_size)")]
    TooLarge { size: u64, limit: u64 },
    #[error("no quorum: {reason}")]
    NoQuorum { reason: String, leader: Option<String> },
    #[error("no leader is known; the cluster may be electing one or lack quorum")]
    NoLeader,
    /// No leader heard from recently, with the reason (a watch needs one).
    #[error("{0}")]
    NoLeaderFor(String),
    #[error("this member is not the leader")]
    NotLeader { leader: Option<String> },
    #[error("write not committed within {0:?}; its outcome is unknown")]
    WriteTimeout(std::time::Duration),
    /// The connection to the leader could not be made: it never saw the
    /// request.
    #[error("cannot reach the leader at {addr}: {reason}")]
    LeaderUnreachable { addr: String, reason: String },
    /// The connection to the leader broke after a forwarded write was sent:
    /// it may have been committed (kind `write_timeout`, outcome unknown).
    #[error("lost the connection to the leader at {addr} after forwarding the write ({reason}); its outcome is unknown")]
    ForwardLost { addr: String, reason: String },
    #[error("{0}")]
    Membership(String),
    /// A would-be learner's address does not answer as that meta member.
    #[error("{0}")]
    LearnerCheck(String),
    /// A promotion of a learner that has not caught up with the leader.
    #[error("{0}")]
    NotCaughtUp(String),
    /// A membership change that did not complete within
    /// `meta.membership_timeout` (it may still be pending).
    #[error("{0}")]
    MembershipTimeout(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// `meta.admin_token` is set and the request carries no bearer token.
    #[error("missing bearer token: this request needs `Authorization: Bearer <token>` with meta.admin_token")]
    Unauthorized,
    /// A bearer token other than `meta.admin_token`.
    #[error("bearer token does not match meta.admin_token")]
    Forbidden,
    /// A costly request (preview, upload, admission) over its concurrency
    /// limit: 503 with `Retry-After: 1`; nothing was done.
    #[error("{what}: {limit} already running on this member, the limit {limit_name}; retry shortly")]
    Busy { what: &'static str, limit_name: &'static str, limit: u32 },
    /// The request body did not arrive within `meta.body_read_timeout`: 408.
    #[error("request body not received within meta.body_read_timeout ({})", humantime_serde::re::humantime::format_duration(*.0))]
    BodyTimeout(std::time::Duration),
    /// A report from a new proxy while [`crate::proxies::MAX_PROXIES`]
    /// live ones are kept: 503.
    #[error("this member already keeps {limit} proxies (MAX_PROXIES); a new one is kept once a silent one expires")]
    TooManyProxies { limit: usize },
    /// A request body over the limit of its endpoint (`limit_name`): 413.
    #[error("request body is over the limit of {limit} bytes ({limit_name})")]
    BodyTooLarge { limit: u64, limit_name: &'static str },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Rejected(r) => match r {
                Rejection::UnknownNode(_) | Rejection::UnknownStrategy(_) | Rejection::UnknownEpoch(_) => StatusCode::NOT_FOUND,
                Rejection::DuplicateNode(_) | Rejection::DuplicateAddr { .. } => StatusCode::CONFLICT,
                Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
            },
            ApiError::Admission(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoQuorum { .. }
            | ApiError::NoLeader
            | ApiError::NoLeaderFor(_)
            | ApiError::NotLeader { .. }
            | ApiError::WriteTimeout(_)
            | ApiError::ForwardLost { .. }
            | ApiError::LeaderUnreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Membership(_) | ApiError::NotCaughtUp(_) => StatusCode::CONFLICT,
            ApiError::LearnerCheck(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MembershipTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Busy { .. } | ApiError::TooManyProxies { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Rejected(r) => match r {
                Rejection::UnknownNode(_) => "unknown_node",
                Rejection::DuplicateNode(_) => "duplicate_node",
                Rejection::DuplicateAddr { .. } => "duplicate_addr",
                Rejection::UnknownStrategy(_) => "unknown_strategy",
                Rejection::UnknownEpoch(_) => "unknown_epoch",
                Rejection::Invalid(_) => "invalid",
            },
            ApiError::Admission(_) => "admission",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::NoQuorum { .. } => "no_quorum",
            ApiError::NoLeader | ApiError::NoLeaderFor(_) => "no_leader",
            ApiError::NotLeader { .. } => "not_leader",
            ApiError::WriteTimeout(_) | ApiError::ForwardLost { .. } => "write_timeout",
            ApiError::LeaderUnreachable { .. } => "leader_unreachable",
            ApiError::Membership(_) => "membership",
            ApiError::LearnerCheck(_) => "learner_check",
            ApiError::NotCaughtUp(_) => "not_caught_up",
            ApiError::MembershipTimeout(_) => "membership_timeout",
            ApiError::Internal(_) => "internal",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::Busy { .. } => "busy",
            ApiError::TooManyProxies { .. } => "too_many_proxies",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::BodyTooLarge { .. } => "too_large",
        }
    }

    fn leader(&self) -> Option<String> {
        match self {
            ApiError::NoQuorum { leader, .. } | ApiError::NotLeader { leader } => leader.clone(),
            ApiError::LeaderUnreachable { addr, .. } | ApiError::ForwardLost { addr, .. } => Some(addr.clone()),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.to_string(), kind: self.kind().into(), leader: self.leader() };
        let unauthorized = matches!(self, ApiError::Unauthorized);
        let busy = matches!(self, ApiError::Busy { .. });
        let mut response = (self.status(), Json(body)).into_response();
        if busy {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        if unauthorized {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer realm=\"shardgate-meta\""));
        }
        response
    }
}
