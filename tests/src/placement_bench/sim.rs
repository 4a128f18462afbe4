//! The simulated agents of `bench placement`: [`crate::fleet`]'s agents, each in tasks of
//! its own so that one can fall silent while the others go on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::{ClientConfig, HubClient, TokenRequest};
use futures::StreamExt;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::fleet::{Leases, Ledger, follow, join, renew};

/// A fleet of simulated agents, each following its cluster's works and renewing its
/// lease in tasks of its own, so one agent can fall silent while the others go on.
pub(super) struct SimFleet {
    pub(super) clusters: Vec<String>,
    pub(super) clients: Vec<HubClient>,
    /// Per agent: its follower and its lease renewer.
    tasks: Vec<[JoinHandle<()>; 2]>,
    ledger: Arc<Mutex<Ledger>>,
    stop: watch::Sender<bool>,
    pub(super) join_seconds: f64,
}

impl SimFleet {
    /// `agents` agents named `{prefix}-NNNNN` join through an auto-accept token stamping
    /// `labels` on their clusters, `join_concurrency` at a time, and renew every
    /// `lease_interval`.
    pub(super) async fn join(
        admin: &HubClient,
        cfg: &ClientConfig,
        prefix: &str,
        agents: usize,
        join_concurrency: usize,
        lease_interval: Duration,
        labels: &BTreeMap<String, String>,
    ) -> anyhow::Result<SimFleet> {
        let token = admin
            .create_token(&TokenRequest {
                auto_accept: true,
                labels: labels.clone(),
                description: "bench placement".into(),
                ..Default::default()
            })
            .await?
            .token
            .context("no token secret")?;
        let mut bootstrap = cfg.clone();
        bootstrap.token = Some(token);
        let keys = tokio::task::spawn_blocking(move || {
            (0..agents)
                .map(|_| klusterlet::hub::identity::AgentKey::generate())
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
        eprintln!("placement: {agents} simulated agents joining");
        let started = Instant::now();
        let joined: Vec<anyhow::Result<(String, HubClient)>> =
            futures::stream::iter(keys.into_iter().enumerate().map(|(i, key)| {
                let cfg = bootstrap.clone();
                let name = format!("{prefix}-{i:05}");
                async move {
                    let client = join(&cfg, &name, &key).await?;
                    Ok((name, client))
                }
            }))
            .buffer_unordered(join_concurrency.max(1))
            .collect()
            .await;
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let leases = Arc::new(Leases::default());
        let (stop, stopped) = watch::channel(false);
        let mut fleet = SimFleet {
            clusters: Vec::new(),
            clients: Vec::new(),
            tasks: Vec::new(),
            ledger,
            stop,
            join_seconds: started.elapsed().as_secs_f64(),
        };
        for j in joined {
            let (name, client) = j?;
            fleet.tasks.push([
                tokio::spawn(follow(
                    client.clone(),
                    name.clone(),
                    fleet.ledger.clone(),
                    stopped.clone(),
                )),
                tokio::spawn(renew(
                    client.clone(),
                    name.clone(),
                    lease_interval,
                    false,
                    leases.clone(),
                    stopped.clone(),
                )),
            ]);
            fleet.clusters.push(name);
            fleet.clients.push(client);
        }
        eprintln!(
            "placement: {} agents joined in {:.1} s",
            fleet.clusters.len(),
            fleet.join_seconds
        );
        // Let every follower's first blocking list settle before timing anything.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(fleet)
    }

    /// When the agent of `cluster` reported `work` Applied (its latest generation).
    pub(super) async fn applied_at(&self, cluster: &str, work: &str) -> Option<Instant> {
        let ledger = self.ledger.lock().await;
        ledger
            .applied
            .get(&(cluster.to_string(), work.to_string()))
            .copied()
    }

    /// Waits until every cluster's agent reported `work` Applied or `timeout` ran out;
    /// returns the last report's time and how many are missing.
    pub(super) async fn wait_applied(
        &self,
        work: &str,
        timeout: Duration,
    ) -> (Option<Instant>, usize) {
        let deadline = Instant::now() + timeout;
        loop {
            let (last, missing) = {
                let ledger = self.ledger.lock().await;
                let mut last = None::<Instant>;
                let mut missing = 0;
                for c in &self.clusters {
                    match ledger.applied.get(&(c.clone(), work.to_string())) {
                        Some(t) => last = Some(last.map_or(*t, |l| l.max(*t))),
                        None => missing += 1,
                    }
                }
                (last, missing)
            };
            if missing == 0 || Instant::now() > deadline {
                return (last, missing);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The agent of cluster `i` stops everything, as if its process had been frozen.
    pub(super) fn silence(&self, i: usize) {
        for t in &self.tasks[i] {
            t.abort();
        }
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.iter().flatten() {
            t.abort();
        }
    }
}
