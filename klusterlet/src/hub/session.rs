//! The agent's session with the hub: its access token, minted by signing an assertion
//! with the agent's key (`POST /api/v1/clusters/{c}/credentials`), renewed at about two
//! thirds of its life, and minted again when the hub answers 401.
//!
//! Nothing here gives up on an unreachable or failing hub: unreachable, 5xx and timeouts
//! are retried with jittered backoff, so an agent offline for days, or a hub down for
//! days, comes back without rejoining. A refusal is different: when the hub answers 401 or
//! 403 for the agent's key, the agent reads its own join request. Still pending (not yet
//! accepted) means wait; accepted, denied or gone means the cluster was deleted, its agent
//! revoked or another key accepted for it, and retrying cannot help: the session reports
//! it through [`Session::refusal`] and the agent stops with exit code 1, instead of
//! retrying 401s forever.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::HubClient;
use clap::Args;
use tokio::sync::{Mutex, RwLock, watch};

use super::identity::{self, AgentKey, Identity};
use crate::telemetry;
use crate::{Chain, Error, sleep_or_stop};
use api::retry::Backoff;

/// Time limit of one call to the hub made by the agent's loops.
pub const HUB_CALL_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// When a call to the hub last succeeded, and the lease interval the hub asked for.
    contact: std::sync::Mutex<Contact>,
}

/// The last successful call to the hub, for `/healthz`.
#[derive(Debug)]
struct Contact {
    at: Option<Instant>,
    lease_interval: Duration,
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
            contact: std::sync::Mutex::new(Contact {
                at: None,
                lease_interval: Duration::from_secs(10),
            }),
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

    /// Records a successful call to the hub (a token minted, a lease renewed, the works
    /// listed).
    pub fn reached(&self) {
        self.contact.lock().expect("contact lock").at = Some(Instant::now());
        metrics::gauge!(telemetry::HUB_CONNECTED).set(1.0);
    }

    /// Records a call to the hub that failed for an outage (no answer, 5xx).
    pub fn unreachable(&self) {
        metrics::gauge!(telemetry::HUB_CONNECTED).set(0.0);
    }

    /// `Ok` when a call to the hub succeeded within three lease intervals (at least a
    /// minute), else why not.
    pub fn reached_recently(&self) -> Result<(), String> {
        let contact = self.contact.lock().expect("contact lock");
        let window = (contact.lease_interval * 3).max(Duration::from_secs(60));
        match contact.at {
            Some(at) if at.elapsed() <= window => Ok(()),
            Some(at) => Err(format!(
                "the hub was last reached {}s ago (more than {}s)",
                at.elapsed().as_secs(),
                window.as_secs()
            )),
            None => Err("the hub has not been reached yet".to_string()),
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
    #[tracing::instrument(level = "debug", skip(self), fields(cluster = %self.cluster))]
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
            telemetry::hub_call(
                "mint_token",
                self.hub.credentials(&self.cluster, &assertion),
            ),
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
                if e.is_transient() {
                    self.unreachable();
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
        self.contact.lock().expect("contact lock").lease_interval = authorized.lease_interval;
        self.reached();
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

/// The error of a call to the hub that got no answer in time.
pub fn no_answer(url: &str) -> Error {
    Error::NoAnswer {
        url: url.to_string(),
        after: HUB_CALL_TIMEOUT,
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

/// Keeps the access token fresh even when nothing else calls the hub for a while.
pub async fn refresh_loop(session: Arc<Session>, mut stop: watch::Receiver<bool>) {
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

/// Logs a failed call to the hub: a warning for an outage, an error for a refusal.
pub fn log_failure(what: &str, err: &Error) {
    if err.is_transient() {
        tracing::warn!(error = %Chain(err), "{what} failed; retrying");
    } else {
        tracing::error!(error = %Chain(err), "{what} was refused; retrying (has the cluster been accepted, revoked or deleted?)");
    }
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
