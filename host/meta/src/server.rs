//! Starting and stopping one meta member: open the stores, start Raft, serve
//! Raft RPCs and the JSON API on one listener through the accept loop every
//! role shares ([`shardgate_role::serve`]: `meta.max_connections`,
//! `meta.header_read_timeout`, TLS with `meta.tls`; bodies are then read
//! within `meta.body_read_timeout` by [`api::bounded_body`]), bootstrap a new
//! cluster or join an existing one, and shut down cleanly.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::service::TowerToHyperService;
use shardgate_role::serve::ServeConfig;
/// Directory under `meta.data_dir` holding compiled strategy components.
pub const COMPILED_DIR: &str = "compiled-strategies";
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admission::{AdmissionGate, GateLimits};
use crate::api::{self, MemberContext};
use crate::auth::{AdminAuth, AdminToken, require_admin};
use crate::client::{ClientError, MetaClient};
use crate::config::MetaConfig;
use crate::error::MetaError;
use crate::metrics::MetaMetrics;
use crate::raft::{self, Member, NetworkFactory, Raft};
use crate::store;

/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Run one meta member on `listener` until `shutdown` completes.
///
/// The listener is already bound (tests bind `127.0.0.1:0`); `config.listen`
/// is only used by the `shardgate meta` command to bind it.
pub async fn run(listener: TcpListener, config: MetaConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), MetaError> {
    config.validate()?;
    let local = listener.local_addr()?;
    let addr = match &config.advertise {
        Some(a) => a.clone(),
        None if local.ip().is_unspecified() => {
            return Err(MetaError::Config(crate::config::ConfigError {
                key: "meta.advertise".into(),
                message: format!("required when listening on {local} (an unspecified address)"),
            }));
        }
        None => format!("{}://{local}", if config.tls.is_some() { "https" } else { "http" }),
    };
    // Load the certificate, key and CA before anything else starts.
    let tls = match &config.tls {
        Some(tls) => Some(shardgate_tls::acceptor(&tls.cert, &tls.key, "meta.tls")?),
        None => None,
    };
    let ca = config.tls.as_ref().and_then(|t| t.ca.as_deref());
    // Peers (Raft RPCs, forwarded writes) are reached at their advertised
    // addresses; with `meta.tls` they are `https://` and their certificates
    // are checked against `meta.tls.ca`.
    let http = shardgate_tls::http_client(ca)
        .map_err(MetaError::TlsCa)?
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| MetaError::Raft(format!("http client: {e}")))?;
    let join_client = match &config.join {
        Some(via) => {
            let mut client = MetaClient::new(vec![via.clone()]);
            if let Some(ca) = ca {
                client = client.with_tls_ca(ca).map_err(|e| match e {
                    ClientError::Tls(e) => MetaError::TlsCa(e),
                    other => MetaError::Raft(format!("join client: {other}")),
                })?;
            }
            if let Some(token) = &config.admin_token {
                client = client.with_token(token);
            }
            Some(client)
        }
        None => None,
    };
    let raft_config = Arc::new(config.raft_config()?);
    let admin_token = config.admin_token.as_deref().map(AdminToken::new);
    let (log_store, sm) = store::open(&config.data_dir)?;
    let raft = Raft::new(config.id, raft_config, NetworkFactory::new(http.clone(), admin_token.clone()), log_store, sm.clone())
        .await
        .map_err(|e| MetaError::Raft(e.to_string()))?;
    let raft = Arc::new(raft);
    // Compiled components are kept beside the Raft data: a restart (or a
    // new leader) loads a large strategy without compiling it again.
    let sandbox = config
        .strategy
        .sandbox(config.max_component_size.as_u64() as usize, Some(config.data_dir.join(COMPILED_DIR)))
        .map_err(|e| MetaError::Sandbox(e.to_string()))?;
    let (stop_tx, stopping) = watch::channel(false);
    let ctx = Arc::new(MemberContext {
        id: config.id,
        addr: addr.clone(),
        raft: raft.clone(),
        sm,
        gate: AdmissionGate::new(
            sandbox,
            config.admission_sample_keys,
            GateLimits {
                previews: config.max_concurrent_previews,
                admissions: config.max_concurrent_admissions,
                admission_wait: config.write_timeout,
            },
        ),
        config: config.clone(),
        http,
        metrics: MetaMetrics::default(),
        proxies: Default::default(),
        stopping: stopping.clone(),
    });
    let routes = api::router(ctx.clone())
        .merge(crate::watch::watch_routes(ctx.clone()))
        .merge(crate::membership::membership_routes(ctx.clone()))
        .merge(crate::raft_watch::raft_watch_routes(ctx.clone()))
        .merge(crate::proxies::proxy_routes(ctx.clone()))
        .merge(crate::console::console_routes())
        .merge(raft::raft_routes(raft.clone()))
        // Layers run bottom-up: the token check, then the body read (so a
        // refused client's body is never read).
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), api::bounded_body))
        .layer(axum::middleware::from_fn_with_state(
            AdminAuth { token: admin_token.clone(), refused: ctx.metrics.auth_refused.clone() },
            require_admin,
        ))
        .layer(axum::middleware::from_fn(refuse_transfer_codings));
    // Errors as JSON around the whole router, not through `Router::layer`:
    // that runs inside each path's method router, before axum adds `Allow`
    // to a 405, which would then name no method.
    let app = Router::new().fallback_service(routes).layer(axum::middleware::map_response(api::json_errors));
    info!(
        id = config.id,
        %addr,
        listen = %local,
        data_dir = %config.data_dir.display(),
        admin_token = admin_token.is_some(),
        tls = tls.is_some(),
        "meta member starting"
    );

    tokio::spawn(form_cluster(ctx.clone(), join_client));

    let raft_for_stop = raft.clone();
    let stopping = async move {
        shutdown.await;
        info!("meta member stopping");
        let _ = stop_tx.send(true);
        if let Err(e) = raft_for_stop.shutdown().await {
            warn!(error = %e, "raft shutdown");
        }
    };
    let serve_config = ServeConfig {
        role: "meta",
        max_connections: config.max_connections,
        max_connections_key: "meta.max_connections",
        retry_after_secs: Some(1),
        header_read_timeout: config.header_read_timeout,
        tls,
        drain_timeout: DRAIN_TIMEOUT,
        on_workers: false,
    };
    let service = TowerToHyperService::new(app);
    let http = hyper::server::conn::http1::Builder::new();
    let connections = Arc::new(ctx.metrics.connections());
    shardgate_role::serve::serve(listener, serve_config, http, |_| service.clone(), connections, stopping).await;
    info!(id = config.id, "meta member stopped");
    Ok(())
}

/// Bootstrap a new cluster (initial `members`, lowest id initializes) or
/// join one (`join`, through `join_client`): only on a member that is not
/// part of a cluster yet.
async fn form_cluster(ctx: Arc<MemberContext>, join_client: Option<MetaClient>) {
    let initialized = match ctx.raft.is_initialized().await {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "cannot read raft state");
            return;
        }
    };
    if initialized {
        return;
    }
    let config = &ctx.config;
    if !config.members.is_empty() {
        let lowest = config.members.iter().map(|m| m.id).min();
        if lowest != Some(config.id) {
            info!(id = config.id, "waiting for the lowest-id member to initialize the cluster");
            return;
        }
        let members: BTreeMap<u64, Member> = config.members.iter().map(|m| (m.id, Member { addr: m.addr.clone() })).collect();
        match ctx.raft.initialize(members).await {
            Ok(()) => info!(members = config.members.len(), "initialized a new cluster"),
            Err(e) => warn!(error = %e, "cluster initialization failed"),
        }
        return;
    }
    let (Some(via), Some(client)) = (config.join.clone(), join_client) else {
        info!("no members and no join address: waiting to be added by an existing cluster");
        return;
    };
    let mut backoff = Duration::from_millis(100);
    let mut stopping = ctx.stopping.clone();
    loop {
        let attempt = async {
            client.add_learner(ctx.id, &ctx.addr).await?;
            client.promote(ctx.id).await
        };
        match attempt.await {
            Ok(_) => {
                info!(via = %via, "joined the cluster as a voter");
                return;
            }
            Err(e) => warn!(via = %via, error = %e, "joining the cluster failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::api::stopped(&mut stopping) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Every request: a `Transfer-Encoding` naming a coding other than
/// `chunked` is 501 (kind `not_implemented`) before anything reads the
/// body, which hyper could only de-chunk (the key API's check, shared with
/// node and proxy).
async fn refuse_transfer_codings(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    match shardgate_api::body::check_transfer_encoding(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            let kind = if error.status() == http::StatusCode::NOT_IMPLEMENTED { "not_implemented" } else { "bad_request" };
            let body = crate::model::ErrorBody { error: error.to_string(), kind: kind.into(), leader: None };
            (error.status(), axum::Json(body)).into_response()
        }
    }
}
