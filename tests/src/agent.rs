//! One hub, one joined managed cluster and its klusterlet, as the klusterlet's end-to-end
//! tests run them: real `hub serve`, `klusterlet join` and `klusterlet run` processes
//! against a harness cluster, with timings short enough for a test (leases every second,
//! a resync every second, `Degraded` after 2 s).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::{HubClient, ListOptions, ManifestWork};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::cluster::TestCluster;
use crate::procs::{HubProcess, binary, free_port};

/// A hub, one cluster joined to it, and its klusterlet (once [`run_agent`] started it).
///
/// [`run_agent`]: AgentFleet::run_agent
pub struct AgentFleet {
    /// The hub.
    pub hub: HubProcess,
    /// An admin client of the hub.
    pub admin: HubClient,
    /// The managed cluster's name on the hub.
    pub cluster: String,
    /// The test's namespace in the managed cluster, `t-<cluster>` (created).
    pub namespace: String,
    /// A client of the managed cluster, as its admin.
    pub client: kube::Client,
    /// The kubeconfig the agent joins and runs with.
    pub kubeconfig: PathBuf,
    /// The agent's data directory.
    pub data: PathBuf,
    /// The agent's `--metrics-listen` port on 127.0.0.1.
    pub metrics_port: u16,
    /// The agent, while it runs.
    agent: Option<tokio::process::Child>,
    /// Holds the hub's and the agent's files.
    pub dir: tempfile::TempDir,
}

impl AgentFleet {
    /// A hub (leases every second) and the test namespace `t-<cluster>` in `managed`; the
    /// cluster has not joined yet ([`join`](Self::join)). The agent will use `kubeconfig`
    /// (`None`: the cluster admin's).
    pub async fn hub_only(
        managed: &TestCluster,
        cluster: &str,
        kubeconfig: Option<PathBuf>,
    ) -> anyhow::Result<AgentFleet> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let hub = HubProcess::start(&dir.path().join("hub"), &["--lease-interval", "1s"]).await?;
        let admin = hub.client()?;
        let namespace = format!("t-{cluster}");
        let client = managed.client();
        create_namespace(&client, &namespace).await?;
        Ok(AgentFleet {
            hub,
            admin,
            cluster: cluster.to_string(),
            namespace,
            client,
            kubeconfig: kubeconfig.unwrap_or_else(|| managed.kubeconfig_path().to_path_buf()),
            data: dir.path().join("agent"),
            metrics_port: free_port(),
            agent: None,
            dir,
        })
    }

    /// A hub, the cluster joined (auto-accepted) and its agent running: what most tests
    /// start with.
    pub async fn start(managed: &TestCluster, cluster: &str) -> anyhow::Result<AgentFleet> {
        let mut fleet = Self::hub_only(managed, cluster, None).await?;
        fleet.join().await?;
        create_namespace(&fleet.client, &fleet.ledger_namespace()).await?;
        fleet.run_agent(&[])?;
        Ok(fleet)
    }

    /// `klusterlet join` with an auto-accept token.
    pub async fn join(&self) -> anyhow::Result<()> {
        self.hub
            .join_klusterlet(
                &binary("klusterlet")?,
                &self.cluster,
                &self.kubeconfig,
                &self.data,
                &[],
            )
            .await
    }

    /// The namespace of the agent's ledger.
    pub fn ledger_namespace(&self) -> String {
        format!("agent-{}", self.cluster)
    }

    /// Starts `klusterlet run` with the test timings and `extra` flags; its log appends to
    /// one file across restarts.
    pub fn run_agent(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the agent's log")?;
        let child = tokio::process::Command::new(binary("klusterlet")?)
            .args(["run", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--resync", "1s", "--degraded-after", "2s", "--namespace"])
            .arg(self.ledger_namespace())
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .args(extra)
            .env("KLUSTERLET_LOG", "info,klusterlet=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting klusterlet run")?;
        self.agent = Some(child);
        Ok(())
    }

    /// Kills the agent (SIGKILL), if it runs.
    pub async fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill().await;
        }
    }

    /// The agent's log file.
    pub fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    /// What the agent logged so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A ConfigMap of the test namespace with `data.v = value`.
    pub fn cm(&self, name: &str, value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": self.namespace}, "data": {"v": value}})
    }

    /// The ConfigMaps of the test namespace.
    pub fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// PUTs the work `name` with these manifests, after `edit`; the hub's answer.
    pub async fn put(
        &self,
        name: &str,
        manifests: Vec<Value>,
        edit: impl FnOnce(&mut ManifestWork),
    ) -> ManifestWork {
        let mut w = ManifestWork::new(&self.cluster, name, manifests);
        edit(&mut w);
        match self.admin.put_work(&w, None).await {
            Ok(put) => put.value,
            Err(e) => panic!("writing work {name}: {e}"),
        }
    }

    /// Blocks on the work (blocking queries, no polling) until `done` holds, and returns
    /// it; fails after `limit` with the last state and the agent's log.
    pub async fn wait_work(
        &self,
        name: &str,
        limit: Duration,
        done: impl Fn(Option<&ManifestWork>) -> bool,
    ) -> Option<ManifestWork> {
        let deadline = Instant::now() + limit;
        let mut index = None;
        loop {
            let opts = ListOptions {
                index,
                wait: Some(Duration::from_secs(2)),
                ..Default::default()
            };
            let (work, i) = match self.admin.get_work(&self.cluster, name, &opts).await {
                Ok(r) => (Some(r.value), r.index),
                Err(e) if e.is_not_found() => (None, 0),
                Err(e) => panic!("reading {name}: {e}"),
            };
            if done(work.as_ref()) {
                return work;
            }
            assert!(
                Instant::now() < deadline,
                "work {name} did not get there within {limit:?}: {work:#?}\nagent log:\n{}",
                self.agent_log()
            );
            index = (i > 0).then_some(i);
            if work.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// `GET http://127.0.0.1:{metrics port}{path}`: status and body, `None` while the
    /// agent's port is not up.
    pub async fn scrape(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.metrics_port);
        let response = reqwest::get(&url).await.ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }
}

/// Creates a namespace of the managed cluster, if it does not exist yet.
pub async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}
