//! A typed async client of the REST API v1, used by the CLI, the agent and the tests.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::ClientConfig;
use crate::registration::{
    AccessToken, AuditEntry, ClusterInfo, CredentialRequest, LeaseRenewal, LeaseStatus,
    Registration, RegistrationRequest, Token, TokenRequest,
};
use crate::types::{
    ClusterDeletion, ErrorBody, List, ManagedCluster, ManifestWork, ManifestWorkStatus,
    StatusUpdate, WorkSummary,
};

mod epoch;
mod fleet;

pub use epoch::EpochTracker;

/// What went wrong talking to the hub.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The hub answered with an error body.
    #[error("{} ({}): {}", body.message, status.as_u16(), body.code)]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The hub's error body.
        body: ErrorBody,
    },
    /// The hub could not be reached, or the connection broke.
    #[error("cannot reach the hub at {url}: {source}")]
    Transport {
        /// The URL asked.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The client configuration is unusable (bad URL, bad CA).
    #[error("client configuration: {0}")]
    Config(String),
    /// The hub's answer could not be read.
    #[error("unexpected answer from the hub: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status, when the hub answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The stable error code, when the hub answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }

    /// Whether the hub said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// The CLI exit code for this error (DESIGN.md): 1 refused (4xx other than 401/403),
    /// 4 unreachable, 5xx, 401 or 403.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Api { status, .. }
                if status.is_client_error()
                    && *status != StatusCode::UNAUTHORIZED
                    && *status != StatusCode::FORBIDDEN =>
            {
                1
            }
            ClientError::Config(_) => 2,
            _ => 4,
        }
    }
}

/// A response value and the change index it is consistent with (`X-Hub-Index`).
#[derive(Debug, Clone)]
pub struct Indexed<T> {
    /// The value.
    pub value: T,
    /// The change index; pass it back as `index` to block until something changes.
    pub index: u64,
    /// The index epoch (`X-Hub-Epoch`); indexes of two epochs are not comparable.
    pub epoch: Option<String>,
}

/// Query options of list and get calls.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// kubectl-style label selector.
    pub label_selector: Option<String>,
    /// Cluster label selector (lists across clusters).
    pub cluster_selector: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// Continue token from the previous page.
    pub continue_: Option<String>,
    /// Block until something changed past this index.
    pub index: Option<u64>,
    /// How long to block at most.
    pub wait: Option<Duration>,
    /// The epoch `index` belongs to; the client fills it in from what it saw last.
    pub epoch: Option<String>,
}

impl ListOptions {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(s) = &self.label_selector {
            q.push(("labelSelector", s.clone()));
        }
        if let Some(s) = &self.cluster_selector {
            q.push(("clusterSelector", s.clone()));
        }
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(c) = &self.continue_ {
            q.push(("continue", c.clone()));
        }
        if let Some(i) = self.index {
            q.push(("index", i.to_string()));
        }
        if let Some(w) = self.wait {
            q.push(("wait", format!("{}ms", w.as_millis())));
        }
        if let Some(e) = self.epoch.as_ref().filter(|_| self.index.is_some()) {
            q.push(("epoch", e.clone()));
        }
        q
    }

    fn blocking_timeout(&self) -> Option<Duration> {
        self.index
            .map(|_| self.wait.unwrap_or(Duration::from_secs(60)) + Duration::from_secs(30))
    }
}

/// A typed client of one hub.
#[derive(Clone)]
pub struct HubClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    epoch: EpochTracker,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches logs.
        f.debug_struct("HubClient")
            .field("base", &self.base)
            .finish()
    }
}

/// Percent-encodes one path segment.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl HubClient {
    /// A client for this configuration. With `ca_data` only that CA is trusted. It speaks
    /// HTTP/2 when the hub offers it (the hub does), so concurrent calls share one
    /// connection.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        Self::build(config, false)
    }

    /// Like [`new`](Self::new), but HTTP/1.1 only: one connection per call in flight
    /// (for comparing the two in benchmarks).
    pub fn new_http1(config: &ClientConfig) -> Result<Self, ClientError> {
        Self::build(config, true)
    }

    fn build(config: &ClientConfig, http1_only: bool) -> Result<Self, ClientError> {
        let base = config.server.trim_end_matches('/').to_string();
        url::Url::parse(&base)
            .map_err(|e| ClientError::Config(format!("server {:?}: {e}", config.server)))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // reqwest's default too, but a small write must never wait for the hub's
            // delayed ACK (~40 ms): say so rather than rely on a default.
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .user_agent(concat!("fleethub/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_data {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| ClientError::Config(format!("CA data: {e}")))?;
            if certs.is_empty() {
                return Err(ClientError::Config("CA data holds no certificate".into()));
            }
            builder = builder.tls_certs_only(certs);
        }
        if http1_only {
            builder = builder.http1_only();
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(HubClient {
            base,
            http,
            token: config.token.clone(),
            epoch: EpochTracker::default(),
        })
    }

    /// The same client with another bearer token.
    pub fn with_token(&self, token: Option<String>) -> Self {
        HubClient {
            token,
            ..self.clone()
        }
    }

    /// What this client (and its clones) saw of the hub's index epoch.
    pub fn epochs(&self) -> &EpochTracker {
        &self.epoch
    }

    /// The query of a read with these options: a blocking one carries the epoch its
    /// index belongs to, and an index of an epoch that ended is lowered ([`epoch`]).
    fn query(&self, opts: &ListOptions) -> Vec<(&'static str, String)> {
        match opts.index {
            Some(index) if opts.epoch.is_none() => {
                let (index, epoch) = self.epoch.blocking_params(index);
                ListOptions {
                    index: Some(index),
                    epoch,
                    ..opts.clone()
                }
                .query()
            }
            _ => opts.query(),
        }
    }

    /// The hub's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to a path under the base URL, with the bearer token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends a request and decodes a JSON answer with its index.
    pub async fn send<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
    ) -> Result<Indexed<T>, ClientError> {
        let (rb_ok, url) = match rb.try_clone().map(|r| r.build()) {
            Some(Ok(req)) => (rb, req.url().to_string()),
            _ => (rb, self.base.clone()),
        };
        let resp = rb_ok
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        let index = resp
            .headers()
            .get("x-hub-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let epoch = resp
            .headers()
            .get("x-hub-epoch")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if status.is_success() {
            self.epoch.observe(epoch.as_deref(), index);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport { url, source })?;
        if !status.is_success() {
            let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
                code: "unknown".into(),
                message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                details: None,
            });
            return Err(ClientError::Api { status, body });
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode(format!("{e} (HTTP {status})")))?;
        Ok(Indexed {
            value,
            index,
            epoch,
        })
    }

    async fn json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<Indexed<T>, ClientError> {
        self.send(self.request(method, path).json(body)).await
    }

    fn work_path(cluster: &str, name: &str) -> String {
        format!(
            "/api/v1/clusters/{}/manifestworks/{}",
            seg(cluster),
            seg(name)
        )
    }

    /// Creates or replaces a work. `if_match` is an ETag (`"<resourceVersion>"`).
    pub async fn put_work(
        &self,
        work: &ManifestWork,
        if_match: Option<&str>,
    ) -> Result<Indexed<ManifestWork>, ClientError> {
        let cluster = work.metadata.namespace.as_deref().unwrap_or_default();
        let mut rb = self
            .request(Method::PUT, &Self::work_path(cluster, &work.metadata.name))
            .json(work);
        if let Some(tag) = if_match {
            rb = rb.header("if-match", tag);
        }
        self.send(rb).await
    }

    /// `PUT ...?dryRun=All`: the hub checks the work and answers it as a read by this
    /// caller would show it (Secret data as keyed placeholders without the `secrets`
    /// verb), storing nothing.
    pub async fn dry_run_work(
        &self,
        work: &ManifestWork,
    ) -> Result<Indexed<ManifestWork>, ClientError> {
        let cluster = work.metadata.namespace.as_deref().unwrap_or_default();
        let rb = self
            .request(Method::PUT, &Self::work_path(cluster, &work.metadata.name))
            .query(&[("dryRun", "All")])
            .json(work);
        self.send(rb).await
    }

    /// Reads one work; with `index` set, blocks until it changed past that index.
    pub async fn get_work(
        &self,
        cluster: &str,
        name: &str,
        opts: &ListOptions,
    ) -> Result<Indexed<ManifestWork>, ClientError> {
        let mut rb = self
            .request(Method::GET, &Self::work_path(cluster, name))
            .query(&self.query(opts));
        if let Some(t) = opts.blocking_timeout() {
            rb = rb.timeout(t);
        }
        self.send(rb).await
    }

    /// Lists the works of one cluster, or of all clusters with `cluster = None`.
    pub async fn list_works(
        &self,
        cluster: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Indexed<List<ManifestWork>>, ClientError> {
        let path = match cluster {
            Some(c) => format!("/api/v1/clusters/{}/manifestworks", seg(c)),
            None => "/api/v1/manifestworks".to_string(),
        };
        let mut rb = self.request(Method::GET, &path).query(&self.query(opts));
        if let Some(t) = opts.blocking_timeout() {
            rb = rb.timeout(t);
        }
        self.send(rb).await
    }

    /// Asks for a work's deletion; returns the work as it is now (deleting) or `None`
    /// when it is gone already.
    pub async fn delete_work(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<ManifestWork>, ClientError> {
        let r: Indexed<Value> = self
            .send(self.request(Method::DELETE, &Self::work_path(cluster, name)))
            .await?;
        Ok(serde_json::from_value(r.value).ok())
    }

    /// Writes a work's status (the cluster's agent).
    pub async fn put_work_status(
        &self,
        cluster: &str,
        name: &str,
        status: &ManifestWorkStatus,
    ) -> Result<Indexed<ManifestWork>, ClientError> {
        let body = StatusUpdate {
            status: status.clone(),
        };
        self.json(
            Method::PUT,
            &format!("{}/status", Self::work_path(cluster, name)),
            &body,
        )
        .await
    }

    /// [`put_work_status`](Self::put_work_status) for a caller that does not need the work
    /// the hub answers with (the agent): the answer is skipped over, not built, and the
    /// status is sent without a copy. Gives the hub's index of the write.
    pub async fn put_work_status_receipt(
        &self,
        cluster: &str,
        name: &str,
        status: &ManifestWorkStatus,
    ) -> Result<u64, ClientError> {
        /// [`StatusUpdate`], borrowed.
        #[derive(Serialize)]
        struct Body<'a> {
            status: &'a ManifestWorkStatus,
        }
        let written: Indexed<serde::de::IgnoredAny> = self
            .json(
                Method::PUT,
                &format!("{}/status", Self::work_path(cluster, name)),
                &Body { status },
            )
            .await?;
        Ok(written.index)
    }

    /// Removes a finalizer from a work (the cluster's agent).
    pub async fn remove_work_finalizer(
        &self,
        cluster: &str,
        name: &str,
        finalizer: &str,
    ) -> Result<Option<ManifestWork>, ClientError> {
        let rb = self
            .request(
                Method::DELETE,
                &format!("{}/finalizers", Self::work_path(cluster, name)),
            )
            .query(&[("name", finalizer)]);
        let r: Indexed<Value> = self.send(rb).await?;
        Ok(serde_json::from_value(r.value).ok())
    }

    /// Creates or updates a cluster record (admin).
    pub async fn put_cluster(
        &self,
        cluster: &ManagedCluster,
    ) -> Result<Indexed<ManagedCluster>, ClientError> {
        self.json(
            Method::PUT,
            &format!("/api/v1/clusters/{}", seg(&cluster.metadata.name)),
            cluster,
        )
        .await
    }

    /// Reads one cluster.
    pub async fn get_cluster(&self, name: &str) -> Result<Indexed<ManagedCluster>, ClientError> {
        self.send(self.request(Method::GET, &format!("/api/v1/clusters/{}", seg(name))))
            .await
    }

    /// Lists clusters.
    pub async fn list_clusters(
        &self,
        opts: &ListOptions,
    ) -> Result<Indexed<List<ManagedCluster>>, ClientError> {
        let mut rb = self
            .request(Method::GET, "/api/v1/clusters")
            .query(&self.query(opts));
        if let Some(t) = opts.blocking_timeout() {
            rb = rb.timeout(t);
        }
        self.send(rb).await
    }

    /// Deletes a cluster (marks it and its works deleting; `force` removes at once).
    pub async fn delete_cluster(
        &self,
        name: &str,
        force: bool,
    ) -> Result<Indexed<ClusterDeletion>, ClientError> {
        let rb = self
            .request(Method::DELETE, &format!("/api/v1/clusters/{}", seg(name)))
            .query(&[("force", force.to_string())]);
        self.send(rb).await
    }

    /// Sets (`Some`) or removes (`None`) cluster labels.
    pub async fn set_cluster_labels(
        &self,
        name: &str,
        labels: &BTreeMap<String, Option<String>>,
    ) -> Result<Indexed<ManagedCluster>, ClientError> {
        self.json(
            Method::PUT,
            &format!("/api/v1/clusters/{}/labels", seg(name)),
            labels,
        )
        .await
    }

    /// Reads one cluster; with `opts.index` set, blocks until it changed past that index
    /// (a cluster that is gone answers 404).
    pub async fn get_cluster_with(
        &self,
        name: &str,
        opts: &ListOptions,
    ) -> Result<Indexed<ManagedCluster>, ClientError> {
        let mut rb = self
            .request(Method::GET, &format!("/api/v1/clusters/{}", seg(name)))
            .query(&self.query(opts));
        if let Some(t) = opts.blocking_timeout() {
            rb = rb.timeout(t);
        }
        self.send(rb).await
    }

    /// A client that trusts any certificate, only to fetch `cluster-info` before the CA is
    /// pinned: the caller must check the CA hash it gets back before trusting anything.
    pub fn for_discovery(server: &str) -> Result<Self, ClientError> {
        let base = server.trim_end_matches('/').to_string();
        url::Url::parse(&base)
            .map_err(|e| ClientError::Config(format!("server {server:?}: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(HubClient {
            base,
            http,
            token: None,
            epoch: EpochTracker::default(),
        })
    }

    /// `GET /api/v1/cluster-info` (no token needed).
    pub async fn cluster_info(&self) -> Result<ClusterInfo, ClientError> {
        Ok(self
            .send(self.request(Method::GET, "/api/v1/cluster-info"))
            .await?
            .value)
    }

    /// Creates a bootstrap or API token (admin). The answer carries `ID.SECRET` once.
    pub async fn create_token(&self, req: &TokenRequest) -> Result<Token, ClientError> {
        Ok(self.json(Method::POST, "/api/v1/tokens", req).await?.value)
    }

    /// Lists tokens (admin), without secrets.
    pub async fn list_tokens(&self) -> Result<List<Token>, ClientError> {
        Ok(self
            .send(self.request(Method::GET, "/api/v1/tokens"))
            .await?
            .value)
    }

    /// Revokes a token (admin).
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        self.send::<Value>(self.request(Method::DELETE, &format!("/api/v1/tokens/{}", seg(id))))
            .await?;
        Ok(())
    }

    /// Asks to join; this client's token must be a bootstrap token.
    pub async fn register(&self, req: &RegistrationRequest) -> Result<Registration, ClientError> {
        Ok(self
            .json(Method::POST, "/api/v1/registrations", req)
            .await?
            .value)
    }

    /// Reads a join request; with `index`, blocks until it changed. The joining agent calls
    /// this with a JWT signed by its own key as the bearer token.
    pub async fn get_registration(
        &self,
        id: &str,
        opts: &ListOptions,
    ) -> Result<Indexed<Registration>, ClientError> {
        let mut rb = self
            .request(Method::GET, &format!("/api/v1/registrations/{}", seg(id)))
            .query(&self.query(opts));
        if let Some(t) = opts.blocking_timeout() {
            rb = rb.timeout(t);
        }
        self.send(rb).await
    }

    /// The hub's version (`GET /version`, no token needed).
    pub async fn server_version(&self) -> Result<crate::types::ServerVersion, ClientError> {
        Ok(self
            .send(self.request(Method::GET, "/version"))
            .await?
            .value)
    }

    /// Lists join requests (admin).
    pub async fn list_registrations(
        &self,
        opts: &ListOptions,
    ) -> Result<Indexed<List<Registration>>, ClientError> {
        let mut rb = self
            .request(Method::GET, "/api/v1/registrations")
            .query(&self.query(opts));
        if let Some(t) = opts.blocking_timeout() {
            rb = rb.timeout(t);
        }
        self.send(rb).await
    }

    /// Accepts a join request (admin).
    pub async fn accept_registration(&self, id: &str) -> Result<Registration, ClientError> {
        let path = format!("/api/v1/registrations/{}/accept", seg(id));
        Ok(self.send(self.request(Method::POST, &path)).await?.value)
    }

    /// Denies a join request (admin).
    pub async fn deny_registration(&self, id: &str) -> Result<Registration, ClientError> {
        let path = format!("/api/v1/registrations/{}/deny", seg(id));
        Ok(self.send(self.request(Method::POST, &path)).await?.value)
    }

    /// Trades a JWT signed by the agent's own key for a short-lived access token.
    pub async fn credentials(
        &self,
        cluster: &str,
        assertion: &str,
    ) -> Result<AccessToken, ClientError> {
        let body = CredentialRequest {
            assertion: assertion.to_string(),
        };
        let path = format!("/api/v1/clusters/{}/credentials", seg(cluster));
        Ok(self.json(Method::POST, &path, &body).await?.value)
    }

    /// Renews the cluster's lease (the agent).
    pub async fn renew_lease(
        &self,
        cluster: &str,
        renewal: &LeaseRenewal,
    ) -> Result<LeaseStatus, ClientError> {
        let path = format!("/api/v1/clusters/{}/lease", seg(cluster));
        Ok(self.json(Method::PUT, &path, renewal).await?.value)
    }

    /// Cuts a cluster's agent off at once (admin); deletes nothing.
    pub async fn revoke_cluster(&self, name: &str) -> Result<ManagedCluster, ClientError> {
        let path = format!("/api/v1/clusters/{}/revoke", seg(name));
        Ok(self.send(self.request(Method::POST, &path)).await?.value)
    }

    /// Reads the audit log (admin), newest first.
    pub async fn list_audit(
        &self,
        target: Option<&str>,
        limit: Option<u32>,
    ) -> Result<List<AuditEntry>, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(t) = target {
            q.push(("target", t.to_string()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        Ok(self
            .send(self.request(Method::GET, "/api/v1/audit").query(&q))
            .await?
            .value)
    }

    /// `GET /api/v1/clusters/{cluster}/manifestworks/{name}/history`: the work's own audit
    /// entries, newest first; readable by anyone who may read the work.
    pub async fn work_history(
        &self,
        cluster: &str,
        name: &str,
        limit: Option<u32>,
    ) -> Result<List<AuditEntry>, ClientError> {
        let q: Vec<(&str, String)> = limit
            .map(|l| ("limit", l.to_string()))
            .into_iter()
            .collect();
        let path = format!(
            "/api/v1/clusters/{}/manifestworks/{}/history",
            seg(cluster),
            seg(name)
        );
        Ok(self
            .send(self.request(Method::GET, &path).query(&q))
            .await?
            .value)
    }

    /// `GET /api/v1/manifestworks/summary`: per work name (only `name` when given) across
    /// the caller's clusters, counts of applied, available, ready, degraded works and the
    /// failing resources; with `opts.index`, blocks until a work changed past it.
    pub async fn summary(
        &self,
        name: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Indexed<List<WorkSummary>>, ClientError> {
        let mut query = self.query(opts);
        if let Some(n) = name {
            query.push(("name", n.to_string()));
        }
        let mut rb = self
            .request(Method::GET, "/api/v1/manifestworks/summary")
            .query(&query);
        if let Some(t) = opts.blocking_timeout() {
            rb = rb.timeout(t);
        }
        self.send(rb).await
    }
}
