//! `klusterlet run`: the long-running agent. The [`Agent`] runs its loops as tasks around
//! one [`Session`] and stops them when asked:
//! * the token refresher ([`session::refresh_loop`]);
//! * the claims reader ([`claims::claims_loop`], every `--claims-interval`);
//! * the lease loop ([`lease::lease_loop`]);
//! * the work controller ([`WorkController`]), when given.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;
use crate::apply::Applier;
use crate::hub::identity::{self, Identity};
use crate::hub::session::{self, Session};
use crate::hub::{claims, lease};
use crate::telemetry::{self, Health};
use crate::work::controller::{ControllerOptions, WorkController};
use crate::work::ledger::Ledger;

/// `klusterlet run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig of the managed cluster (default: KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Serve `/metrics` (Prometheus), `/healthz`, `/livez` and `/readyz` on this address (e.g.
    /// 0.0.0.0:8080). Off by default.
    #[arg(long, env = "KLUSTERLET_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
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
    /// How long the objects of a work that vanished from the hub stay when the hub does
    /// not say it deleted the work (a restored backup, another database), counted from
    /// when the agent first found it missing, across restarts (OCM's
    /// appliedManifestWorkEvictionGracePeriod). A work the hub deleted goes at once.
    #[arg(long, env = "KLUSTERLET_EVICTION_GRACE", default_value = "60m", value_parser = api::parse_duration)]
    pub eviction_grace: Duration,
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

/// The running agent: a session, a client of the managed cluster, and its loops.
pub struct Agent {
    session: Arc<Session>,
    kube: kube::Client,
    claims_interval: Duration,
    works: Option<WorkController>,
    metrics: Option<TcpListener>,
}

/// The agent's health for `/healthz`, `/livez` and `/readyz` (see [`telemetry`]).
struct AgentHealth {
    session: Arc<Session>,
    stop: watch::Receiver<bool>,
    /// The work loop's first pass is done (`None`: no work loop).
    works_ready: Option<Arc<AtomicBool>>,
}

impl Health for AgentHealth {
    fn alive(&self) -> Result<(), String> {
        if *self.stop.borrow() {
            return Err("the agent is stopping".to_string());
        }
        Ok(())
    }

    fn healthy(&self) -> Result<(), String> {
        self.alive()?;
        self.session.reached_recently()
    }

    fn ready(&self) -> Result<(), String> {
        self.healthy()?;
        match &self.works_ready {
            Some(r) if !r.load(Ordering::Relaxed) => {
                Err("the first list of works from the hub was not read and reconciled yet".into())
            }
            _ => Ok(()),
        }
    }
}

impl Agent {
    /// An agent for this session and managed cluster.
    pub fn new(session: Arc<Session>, kube: kube::Client, claims_interval: Duration) -> Self {
        Agent {
            session,
            kube,
            claims_interval,
            works: None,
            metrics: None,
        }
    }

    /// Serves `/metrics`, `/healthz` and `/livez` on this listener while the agent runs.
    pub fn with_metrics(mut self, listener: TcpListener) -> Self {
        self.metrics = Some(listener);
        self
    }

    /// Adds the work loop (without it the agent only keeps its lease and credentials).
    pub fn with_works(mut self, works: WorkController) -> Self {
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
            metrics,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(listener) = metrics {
            let health = Arc::new(AgentHealth {
                session: session.clone(),
                stop: stop_rx.clone(),
                works_ready: works.as_ref().map(WorkController::readiness),
            });
            let mut stop = stop_rx.clone();
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::spawn(telemetry::serve(listener, health, stopped));
        }
        let (claims_tx, claims_rx) = watch::channel(None);
        let mut tasks = JoinSet::new();
        tasks.spawn(session::refresh_loop(session.clone(), stop_rx.clone()));
        tasks.spawn(claims::claims_loop(
            kube.clone(),
            claims_interval,
            claims_tx,
            stop_rx.clone(),
        ));
        tasks.spawn(lease::lease_loop(
            session.clone(),
            claims_rx,
            stop_rx.clone(),
        ));
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
        metrics_listen,
        data_dir,
        claims_interval,
        resync,
        degraded_after,
        eviction_grace,
        concurrency,
        namespace,
        watch_wait,
    } = args;
    let identity = Identity::load(&data_dir)?;
    let metrics = match metrics_listen {
        Some(addr) => Some(telemetry::bind(addr).await?),
        None => None,
    };
    tracing::info!(
        cluster = %identity.state.cluster_name,
        hub = %identity.state.server,
        data_dir = %data_dir.display(),
        "starting"
    );
    let kube_config = claims::kube_config(kubeconfig.as_deref()).await?;
    let kube = claims::client_from(kube_config.clone())?;
    let session = Arc::new(Session::new(identity)?);
    let applier = Arc::new(
        Applier::new(kube.clone())
            .await?
            .with_executor_config(kube_config),
    );
    let ledger = Ledger::new(kube.clone(), &namespace).await?;
    let options = ControllerOptions {
        resync,
        degraded_after,
        concurrency,
        wait: watch_wait,
        eviction_grace,
    };
    let works = WorkController::new(session.clone(), kube.clone(), applier, ledger, options);
    let mut agent = Agent::new(session, kube, claims_interval).with_works(works);
    if let Some(listener) = metrics {
        agent = agent.with_metrics(listener);
    }
    agent.run(shutdown_signal()).await
}
