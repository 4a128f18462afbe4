//! `klusterlet run`: the long-running agent.
//!
//! A [`Session`] holds the hub client with the current access token. It mints the token
//! by signing an assertion with the agent's key (`POST /api/v1/clusters/{c}/credentials`),
//! renews it at about two thirds of its life, and mints a new one when the hub answers 401.
//! The [`Agent`] runs its loops as tasks around one session and stops them when asked:
//! * the token refresher;
//! * the claims reader (re-reads the managed cluster every `--claims-interval`);
//! * the lease loop (`PUT /api/v1/clusters/{c}/lease` every interval the hub asks for,
//!   with the claims when they changed since the last renewal the hub accepted).
//!
//! The work pull / apply loop plugs in as one more task given the same `Arc<Session>`,
//! the kube client and the shutdown receiver.
//!
//! Nothing here gives up on an unreachable or failing hub: unreachable, 5xx and timeouts
//! are retried with jittered backoff, so an agent offline for days, or a hub down for
//! days, comes back without rejoining. A refusal is different: when the hub answers 401 or
//! 403 for the agent's key, the agent reads its own join request. Still pending (not yet
//! accepted) means wait; accepted, denied or gone means the cluster was deleted, its agent
//! revoked or another key accepted for it, and retrying cannot help: the agent stops with
//! exit code 1 and says so, instead of retrying 401s forever.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{Claim, HubClient, LeaseRenewal};
use clap::Args;
use tokio::sync::{Mutex, RwLock, watch};
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::identity::{self, AgentKey, Identity};
use crate::{Chain, Error, claims, is_transient};

/// Time limit of one call to the hub made by the agent's loops.
const HUB_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of reading the claims from the managed cluster.
const CLAIMS_TIMEOUT: Duration = Duration::from_secs(30);
/// The lease interval assumed until the hub says otherwise.
const DEFAULT_LEASE_INTERVAL: Duration = Duration::from_secs(10);

/// `klusterlet run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig of the managed cluster (default: KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Where `klusterlet join` left the agent's key and state.
    #[arg(long, env = "KLUSTERLET_DATA_DIR", default_value_os_t = identity::default_data_dir())]
    pub data_dir: PathBuf,
    /// How often to re-read the claims (version, nodes, CPU, memory) from the managed
    /// cluster; they are sent with the next lease renewal when they changed.
    #[arg(long, env = "KLUSTERLET_CLAIMS_INTERVAL", default_value = "5m", value_parser = api::parse_duration)]
    pub claims_interval: Duration,
    /// How often to look for drift: works with an object changed or deleted by hand (or
    /// not applied cleanly last time) are re-applied.
    #[arg(long, env = "KLUSTERLET_RESYNC", default_value = "60s", value_parser = api::parse_duration)]
    pub resync: Duration,
    /// A manifest failing for longer than this makes its work Degraded.
    #[arg(long, env = "KLUSTERLET_DEGRADED_AFTER", default_value = "60s", value_parser = api::parse_duration)]
    pub degraded_after: Duration,
    /// Works applied at once.
    #[arg(long, env = "KLUSTERLET_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Namespace in the managed cluster for the agent's ledger of applied resources.
    #[arg(
        long,
        env = "KLUSTERLET_NAMESPACE",
        default_value = "open-cluster-management-agent"
    )]
    pub namespace: String,
    /// How long one blocking query for works waits on the hub.
    #[arg(long, env = "KLUSTERLET_WATCH_WAIT", default_value = "60s", value_parser = api::parse_duration)]
    pub watch_wait: Duration,
}

/// `klusterlet token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Where `klusterlet join` left the agent's key and state.
    #[arg(long, env = "KLUSTERLET_DATA_DIR", default_value_os_t = identity::default_data_dir())]
    pub data_dir: PathBuf,
}

/// An access token and the client that carries it. `Debug` never shows the token.
#[derive(Clone)]
pub struct Authorized {
    /// A client whose bearer is the access token.
    pub client: HubClient,
    /// Counts mints, so a 401 invalidates only the token that got it.
    pub generation: u64,
    /// When to mint the next one (two thirds of its life).
    pub renew_at: Instant,
    /// When it stops working.
    pub expires_at: Instant,
    /// How often the hub wants the lease renewed.
    pub lease_interval: Duration,
    token: String,
}

impl std::fmt::Debug for Authorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorized")
            .field("generation", &self.generation)
            .field("renew_at", &self.renew_at)
            .field("expires_at", &self.expires_at)
            .field("lease_interval", &self.lease_interval)
            .finish_non_exhaustive()
    }
}

impl Authorized {
    /// The access JWT itself (for `klusterlet token`; never log it).
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// The agent's connection to the hub: its identity and the current access token, shared
/// by every loop of the agent.
#[derive(Debug)]
pub struct Session {
    cluster: String,
    /// The join request this identity came from, read again when the hub refuses the key.
    registration_id: String,
    key: AgentKey,
    /// Trusts only the pinned CA; carries no token.
    hub: HubClient,
    current: RwLock<Option<Authorized>>,
    /// One mint at a time: loops that find the token stale together share one new token.
    mint_lock: Mutex<u64>,
    /// After a failed mint, no other before the backoff's delay: every loop of the agent
    /// asks for a token, and without this they would all retry at once, each time.
    mint_retry: std::sync::Mutex<MintRetry>,
    /// Set, with the reason, once the hub has refused this agent for good.
    refused: watch::Sender<Option<String>>,
}

/// When the next mint may be tried, after failures.
#[derive(Debug)]
struct MintRetry {
    backoff: Backoff,
    not_before: Option<(Instant, String)>,
}

impl Session {
    /// A session for this identity; no call to the hub yet.
    pub fn new(identity: Identity) -> Result<Self, Error> {
        let Identity { state, key } = identity;
        let hub = HubClient::new(&state.client_config())?;
        Ok(Session::with_client(
            state.cluster_name,
            state.registration_id,
            key,
            hub,
        ))
    }

    fn with_client(
        cluster: String,
        registration_id: String,
        key: AgentKey,
        hub: HubClient,
    ) -> Self {
        Session {
            cluster,
            registration_id,
            key,
            hub,
            current: RwLock::new(None),
            mint_lock: Mutex::new(0),
            mint_retry: std::sync::Mutex::new(MintRetry {
                backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
                not_before: None,
            }),
            refused: watch::Sender::new(None),
        }
    }

    /// Why the hub refuses this agent for good, once it does (see the module docs).
    pub fn refusal(&self) -> watch::Receiver<Option<String>> {
        self.refused.subscribe()
    }

    /// After the hub refused the agent's key: `Some(why)` when no retry can help, `None`
    /// when waiting may (the join request is still pending, or the hub cannot be asked).
    async fn refused_for_good(&self, refusal: &api::ClientError) -> Option<String> {
        let id = &self.registration_id;
        let cluster = &self.cluster;
        // A refusal of the assertion's times (this machine's clock is off) is mended by
        // fixing the clock, not by joining again: keep retrying, and say why.
        if let api::ClientError::Api { body, .. } = refusal
            && clock_problem(&body.message)
        {
            tracing::warn!(hub_says = %body.message, "the hub refuses this agent's assertion for its times: check this machine's clock");
            return None;
        }
        let assertion = self.key.registration_assertion(id).ok()?;
        let request = tokio::time::timeout(
            HUB_CALL_TIMEOUT,
            self.hub
                .with_token(Some(assertion))
                .get_registration(id, &api::ListOptions::default()),
        )
        .await
        .ok()?;
        let refused = match &refusal {
            api::ClientError::Api { body, .. } => body.message.clone(),
            other => other.to_string(),
        };
        match request {
            Ok(r) => match r.value.state {
                api::RegistrationState::Pending => None,
                api::RegistrationState::Denied => Some(format!(
                    "the hub denied this agent's join request {id} for cluster {cluster}: {}",
                    r.value.message
                )),
                api::RegistrationState::Accepted => Some(format!(
                    "the hub refuses this agent's key for cluster {cluster} ({refused}): the \
                     cluster was deleted, its agent revoked, or another key accepted for it"
                )),
            },
            Err(api::ClientError::Api { body, .. }) if clock_problem(&body.message) => None,
            Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(401 | 403 | 404)) => {
                Some(format!(
                    "the hub refuses this agent's key for cluster {cluster} ({refused}) and no \
                     longer knows its join request {id}: the cluster was deleted or its agent revoked"
                ))
            }
            Err(_) => None,
        }
    }

    /// The managed cluster's name on the hub.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// A client with a valid access token: the current one, or a new one when there is
    /// none, it expired, or it is due for renewal (a failed renewal falls back to the
    /// current token while it is still valid).
    pub async fn authorized(&self) -> Result<Authorized, Error> {
        // Bound first: the read guard must be gone before minting takes the write lock.
        let current = self.current.read().await.clone();
        if let Some(a) = current {
            let now = Instant::now();
            if now < a.renew_at {
                return Ok(a);
            }
            if now < a.expires_at {
                return match self.mint(Some(a.generation)).await {
                    Ok(fresh) => Ok(fresh),
                    Err(Error::Waiting { .. }) => Ok(a),
                    Err(e) => {
                        tracing::warn!(error = %Chain(&e), "renewing the access token failed; the current one is still valid");
                        Ok(a)
                    }
                };
            }
        }
        self.mint(None).await
    }

    /// Mints a new access token unless another task already replaced `stale` (or, with
    /// `None`, unless a valid one exists).
    async fn mint(&self, stale: Option<u64>) -> Result<Authorized, Error> {
        let mut generation = self.mint_lock.lock().await;
        let current = self.current.read().await.clone();
        if let Some(a) = current {
            let replaced = match stale {
                Some(g) => a.generation != g,
                None => Instant::now() < a.renew_at,
            };
            if replaced {
                return Ok(a);
            }
        }
        if let Some((at, last)) = &self.mint_retry.lock().expect("mint retry lock").not_before {
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                return Err(Error::Waiting {
                    wait,
                    last: last.clone(),
                });
            }
        }
        let assertion = self.key.cluster_assertion(&self.cluster)?;
        let asked = Instant::now();
        let access = match tokio::time::timeout(
            HUB_CALL_TIMEOUT,
            self.hub.credentials(&self.cluster, &assertion),
        )
        .await
        .map_err(|_| no_answer(self.hub.base_url()))
        .and_then(|r| r.map_err(Error::from))
        {
            Ok(access) => {
                let mut retry = self.mint_retry.lock().expect("mint retry lock");
                retry.backoff.reset();
                retry.not_before = None;
                access
            }
            Err(e) => {
                if let Error::Hub(h) = &e
                    && matches!(h.status().map(|s| s.as_u16()), Some(401 | 403))
                    && let Some(why) = self.refused_for_good(h).await
                {
                    tracing::error!(cluster = %self.cluster, "{why}");
                    self.refused.send_replace(Some(why));
                }
                let mut retry = self.mint_retry.lock().expect("mint retry lock");
                let delay = retry.backoff.next_delay();
                retry.not_before = Some((Instant::now() + delay, Chain(&e).to_string()));
                return Err(e);
            }
        };
        *generation += 1;
        let lifetime = lifetime(&access.access_token)
            .or_else(|| (access.expires_at - chrono::Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO);
        let authorized = Authorized {
            client: self.hub.with_token(Some(access.access_token.clone())),
            generation: *generation,
            renew_at: asked + lifetime * 2 / 3,
            expires_at: asked + lifetime,
            lease_interval: Duration::from_secs(access.lease_interval_seconds.max(1)),
            token: access.access_token,
        };
        tracing::info!(
            cluster = %self.cluster,
            generation = authorized.generation,
            lifetime_secs = lifetime.as_secs(),
            "got an access token"
        );
        *self.current.write().await = Some(authorized.clone());
        Ok(authorized)
    }

    /// Forgets the token of this generation (the hub refused it); the next
    /// [`authorized`](Self::authorized) mints a new one.
    pub async fn invalidate(&self, generation: u64) {
        let mut current = self.current.write().await;
        if current.as_ref().is_some_and(|a| a.generation == generation) {
            *current = None;
        }
    }

    /// When the current token is due for renewal, if there is one; after a failed
    /// renewal, when the next attempt may be made.
    pub async fn renew_at(&self) -> Option<Instant> {
        let renew_at = self.current.read().await.as_ref().map(|a| a.renew_at)?;
        let retry = self.mint_retry.lock().expect("mint retry lock");
        Some(match &retry.not_before {
            Some((at, _)) => renew_at.max(*at),
            None => renew_at,
        })
    }
}

/// Whether the hub refused an assertion for its times (`iat` in the future, expired, not
/// yet valid), which says the clocks disagree, not that the agent lost its cluster. The
/// words are the hub's (`hub/src/auth.rs`, `verify_assertion`) and jsonwebtoken's.
fn clock_problem(hub_message: &str) -> bool {
    let m = hub_message.to_ascii_lowercase();
    [
        "clock",
        "in the future",
        "expired",
        "immature",
        "lives too long",
    ]
    .iter()
    .any(|w| m.contains(w))
}

fn no_answer(url: &str) -> Error {
    Error::NoAnswer {
        url: url.to_string(),
        after: HUB_CALL_TIMEOUT,
    }
}

/// Whether a failure looks like an outage rather than a refusal.
fn transient(err: &Error) -> bool {
    match err {
        Error::NoAnswer { .. } | Error::Waiting { .. } => true,
        Error::Hub(e) => is_transient(e),
        _ => false,
    }
}

/// The lifetime `exp - iat` of a JWT, read without verifying it (the hub made it; this
/// only schedules its renewal, by this machine's monotonic clock, so clock skew between
/// hub and agent does not matter).
pub fn lifetime(jwt: &str) -> Option<Duration> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Times {
        iat: i64,
        exp: i64,
    }
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let times: Times = serde_json::from_slice(&bytes).ok()?;
    u64::try_from(times.exp - times.iat)
        .ok()
        .map(Duration::from_secs)
}

/// The running agent: a session, a client of the managed cluster, and its loops.
pub struct Agent {
    session: Arc<Session>,
    kube: kube::Client,
    claims_interval: Duration,
    works: Option<crate::controller::WorkController>,
}

impl Agent {
    /// An agent for this session and managed cluster.
    pub fn new(session: Arc<Session>, kube: kube::Client, claims_interval: Duration) -> Self {
        Agent {
            session,
            kube,
            claims_interval,
            works: None,
        }
    }

    /// Adds the work loop (without it the agent only keeps its lease and credentials).
    pub fn with_works(mut self, works: crate::controller::WorkController) -> Self {
        self.works = Some(works);
        self
    }

    /// Runs the loops until `shutdown` completes, then stops them; stops early with
    /// [`Error::Refused`] when the hub refuses the agent for good.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Agent {
            session,
            kube,
            claims_interval,
            works,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (claims_tx, claims_rx) = watch::channel(None);
        let mut tasks = JoinSet::new();
        tasks.spawn(refresh_loop(session.clone(), stop_rx.clone()));
        tasks.spawn(claims_loop(
            kube.clone(),
            claims_interval,
            claims_tx,
            stop_rx.clone(),
        ));
        tasks.spawn(lease_loop(session.clone(), claims_rx, stop_rx.clone()));
        if let Some(works) = works {
            tasks.spawn(works.run(stop_rx.clone()));
        }
        tracing::info!(cluster = %session.cluster(), "klusterlet running");
        let mut refusal = session.refusal();
        let refused = tokio::select! {
            _ = shutdown => None,
            r = refusal.wait_for(Option::is_some) => r.ok().and_then(|r| r.clone()),
        };
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("loops did not stop within 10s; aborting them");
            tasks.abort_all();
        }
        match refused {
            Some(why) => Err(Error::Refused(format!(
                "{why}; stopping (retrying cannot help). To join again: `klusterlet join` with a \
                 new bootstrap token (and `hub accept` on the hub); `klusterlet unjoin` removes \
                 this agent's state"
            ))),
            None => Ok(()),
        }
    }
}

/// Sleeps for `delay`, or less when asked to stop; returns whether to stop.
async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.changed() => true,
    }
}

/// Keeps the access token fresh even when nothing else calls the hub for a while.
async fn refresh_loop(session: Arc<Session>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let delay = match session.authorized().await {
            Ok(_) => {
                backoff.reset();
                session
                    .renew_at()
                    .await
                    .map(|at| at.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_secs(1))
            }
            Err(e) => {
                log_failure("getting an access token", &e);
                backoff.next_delay()
            }
        };
        if sleep_or_stop(delay, &mut stop).await {
            return;
        }
    }
}

/// Re-reads the claims every `interval` and publishes them.
async fn claims_loop(
    kube: kube::Client,
    interval: Duration,
    claims: watch::Sender<Option<Vec<Claim>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), interval.max(Duration::from_secs(1)));
    loop {
        let delay = match tokio::time::timeout(CLAIMS_TIMEOUT, claims::read(&kube)).await {
            Ok(Ok(read)) => {
                backoff.reset();
                claims.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&read);
                    if changed {
                        tracing::info!(claims = %crate::claims::display(&read), "claims of the managed cluster");
                        *current = Some(read);
                    }
                    changed
                });
                interval
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %Chain(&e), "reading the managed cluster's claims failed");
                backoff.next_delay()
            }
            Err(_) => {
                tracing::warn!(timeout = ?CLAIMS_TIMEOUT, "reading the managed cluster's claims timed out");
                backoff.next_delay()
            }
        };
        if sleep_or_stop(delay, &mut stop).await {
            return;
        }
    }
}

/// Renews the lease every interval the hub asks for, sending the claims when they changed.
async fn lease_loop(
    session: Arc<Session>,
    claims: watch::Receiver<Option<Vec<Claim>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut interval = DEFAULT_LEASE_INTERVAL;
    let mut sent_claims: Option<Vec<Claim>> = None;
    let mut refused_in_a_row = 0u32;
    loop {
        let latest = claims.borrow().clone();
        let renewal = LeaseRenewal {
            claims: latest.clone().filter(|c| sent_claims.as_ref() != Some(c)),
        };
        let delay = match renew(&session, &renewal).await {
            Ok(status) => {
                backoff.reset();
                refused_in_a_row = 0;
                if renewal.claims.is_some() {
                    sent_claims = latest;
                }
                interval = Duration::from_secs(status.lease_interval_seconds.max(1));
                tracing::debug!(renewed_at = %status.renewed_at, "lease renewed");
                // ±5 %: agents that started together (after a hub or node restart) drift
                // apart instead of renewing in step, a burst on the hub every interval.
                interval.mul_f64(0.95 + 0.1 * rand::random::<f64>())
            }
            Err(Renewal::Unauthorized(generation)) => {
                session.invalidate(generation).await;
                refused_in_a_row += 1;
                tracing::warn!("the hub refused the access token; minting a new one");
                // The first 401 is usually an expired token: retry at once.
                if refused_in_a_row == 1 {
                    Duration::ZERO
                } else {
                    backoff.next_delay()
                }
            }
            Err(Renewal::Failed(e)) => {
                log_failure("renewing the lease", &e);
                backoff
                    .next_delay()
                    .min(interval.max(Duration::from_secs(1)) * 3)
            }
        };
        if sleep_or_stop(delay, &mut stop).await {
            return;
        }
    }
}

enum Renewal {
    Unauthorized(u64),
    Failed(Error),
}

async fn renew(session: &Session, renewal: &LeaseRenewal) -> Result<api::LeaseStatus, Renewal> {
    let auth = session.authorized().await.map_err(Renewal::Failed)?;
    let answer = tokio::time::timeout(
        HUB_CALL_TIMEOUT,
        auth.client.renew_lease(session.cluster(), renewal),
    )
    .await
    .map_err(|_| Renewal::Failed(no_answer(auth.client.base_url())))?;
    match answer {
        Ok(status) => Ok(status),
        Err(e) if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED) => {
            Err(Renewal::Unauthorized(auth.generation))
        }
        Err(e) => Err(Renewal::Failed(e.into())),
    }
}

fn log_failure(what: &str, err: &Error) {
    if transient(err) {
        tracing::warn!(error = %Chain(err), "{what} failed; retrying");
    } else {
        tracing::error!(error = %Chain(err), "{what} was refused; retrying (has the cluster been accepted, revoked or deleted?)");
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Runs `klusterlet run` until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> Result<(), Error> {
    let RunArgs {
        kubeconfig,
        data_dir,
        claims_interval,
        resync,
        degraded_after,
        concurrency,
        namespace,
        watch_wait,
    } = args;
    let identity = Identity::load(&data_dir)?;
    tracing::info!(
        cluster = %identity.state.cluster_name,
        hub = %identity.state.server,
        data_dir = %data_dir.display(),
        "starting"
    );
    let kube = claims::kube_client(kubeconfig.as_deref()).await?;
    let session = Arc::new(Session::new(identity)?);
    let applier = Arc::new(
        crate::apply::Applier::new(kube.clone())
            .await
            .map_err(|e| Error::Cluster(format!("{}: {}", e.reason, e.message)))?,
    );
    let ledger = crate::ledger::Ledger::new(kube.clone(), &namespace).await?;
    let options = crate::controller::ControllerOptions {
        resync,
        degraded_after,
        concurrency,
        wait: watch_wait,
    };
    let works = crate::controller::WorkController::new(
        session.clone(),
        kube.clone(),
        applier,
        ledger,
        options,
    );
    Agent::new(session, kube, claims_interval)
        .with_works(works)
        .run(shutdown_signal())
        .await
}

/// Runs `klusterlet token`: prints a fresh access JWT.
pub async fn token(args: TokenArgs) -> Result<(), Error> {
    let TokenArgs { data_dir } = args;
    let session = Session::new(Identity::load(&data_dir)?)?;
    let authorized = session.authorized().await?;
    println!("{}", authorized.token());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt(payload: serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b64.encode(br#"{"alg":"ES256","kid":"k1"}"#),
            b64.encode(payload.to_string())
        )
    }

    #[test]
    fn a_refusal_for_the_clock_is_not_a_refusal_for_good() {
        for m in [
            "the assertion is issued in the future (check the agent's clock)",
            "the assertion is not valid for cluster:c1: ExpiredSignature",
            "the assertion is not valid for cluster:c1: ImmatureSignature",
            "the assertion lives too long: it must expire within 10 minutes of now",
        ] {
            assert!(clock_problem(m), "{m}");
        }
        for m in [
            "the agent's credentials were revoked; join again",
            "cluster \"c1\" has no accepted agent",
            "the JWT names an unknown registration",
        ] {
            assert!(!clock_problem(m), "{m}");
        }
    }

    #[test]
    fn lifetime_comes_from_the_token_itself() {
        let t = jwt(serde_json::json!({"iat": 1000, "exp": 4600, "sub": "cluster:c1"}));
        assert_eq!(lifetime(&t), Some(Duration::from_secs(3600)));
        assert_eq!(lifetime("garbage"), None);
        assert_eq!(lifetime(&jwt(serde_json::json!({"exp": 5}))), None);
        assert_eq!(
            lifetime(&jwt(serde_json::json!({"iat": 10, "exp": 5}))),
            None
        );
    }

    #[test]
    fn authorized_debug_hides_the_token() {
        let client = HubClient::new(&api::ClientConfig {
            server: "https://127.0.0.1:1".into(),
            ca_data: None,
            token: None,
        })
        .unwrap();
        let a = Authorized {
            client,
            generation: 1,
            renew_at: Instant::now(),
            expires_at: Instant::now(),
            lease_interval: Duration::from_secs(1),
            token: "secret-token-value".into(),
        };
        assert!(!format!("{a:?}").contains("secret-token-value"));
    }

    /// A hub that is down must not be asked for a token by every loop, every time: after
    /// one failed attempt the others wait out the backoff (a leaked agent used to make
    /// about 3 connection attempts a second).
    #[tokio::test]
    async fn a_failed_mint_holds_back_the_next_attempts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let dead_hub = tokio::spawn(async move {
            // Accepts and hangs up at once: a port that answers but no hub behind it.
            while let Ok((conn, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
        let hub = HubClient::new(&api::ClientConfig {
            server: format!("https://127.0.0.1:{port}"),
            ca_data: None,
            token: None,
        })
        .unwrap();
        let session =
            Session::with_client("c1".into(), "r1".into(), AgentKey::generate().unwrap(), hub);
        let first = session.authorized().await.unwrap_err();
        assert!(!matches!(first, Error::Waiting { .. }), "{first}");
        for _ in 0..20 {
            match session.authorized().await {
                Err(Error::Waiting { wait, last }) => {
                    assert!(wait <= Duration::from_secs(1), "{wait:?}");
                    assert!(!last.is_empty());
                }
                other => panic!("expected to wait, got {other:?}"),
            }
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(first.exit_code(), 4);
        dead_hub.abort();
    }
}
