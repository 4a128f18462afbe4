//! `agentbench`: measures the klusterlet and the registration protocol with real processes
//! on loopback: a release `hub serve`, a real kube-apiserver + etcd (apiserver-only test
//! cluster) and the release `klusterlet` binary, joined and run exactly as an operator would.
//!
//! * `latency`: hub write (PUT acknowledged) → `Applied=True` (current `observedGeneration`)
//!   seen on the hub through a blocking GET, one work after another; split with a watch on
//!   the managed cluster (object created, ledger written).
//! * `apply500`: a work of N ConfigMaps, PUT → `Applied=True`, against
//!   `kubectl apply --server-side` of the same objects on the same apiserver.
//! * `idle`: RSS and CPU of the klusterlet process with N works applied and nothing to do.
//! * `joins`: registration (auto-accept bootstrap token) → access token, through the real
//!   protocol (ES256 key, `POST /registrations`, `POST /clusters/{c}/credentials`).
//!
//! Run on release builds, e.g.
//!
//! ```text
//! cargo run --release -p testkit --bin agentbench -- latency --works 200
//! ```
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::{ClientConfig, HubClient, ListOptions, ManifestWork, RegistrationRequest, TokenRequest};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde::Serialize;
use serde_json::{Value, json};
use testkit::cluster::{ClusterOptions, TestCluster};
use testkit::postgres::TestPostgres;
use testkit::procs::HubProcess;

/// Benchmarks of the klusterlet and of registration, real processes on loopback.
#[derive(Debug, Parser)]
#[command(name = "agentbench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print the report as JSON on stdout (the summary goes to stderr then).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hub write → Applied=True seen on the hub, per work, one work after another.
    Latency(LatencyArgs),
    /// A work of N ConfigMaps vs `kubectl apply --server-side` of the same objects.
    Apply500(Apply500Args),
    /// The klusterlet's RSS and CPU with N works applied and nothing changing.
    Idle(IdleArgs),
    /// Registration latency: request → access token, auto-accept.
    Joins(JoinsArgs),
    /// `hub apply --wait --for Applied` of a ConfigMap work, start to exit 0, as a CI job
    /// runs it (the release `hub` binary, a new process each time).
    CiWait(CiWaitArgs),
    /// A work of N ConfigMaps with a CEL condition rule on every manifest vs without.
    Rules500(Rules500Args),
}

#[path = "agentbench/rules.rs"]
mod rules;

#[derive(Debug, clap::Args)]
struct Rules500Args {
    /// ConfigMaps in each work.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    objects: u32,
    /// Timed pairs (without, with rules); one untimed warm-up of each comes first.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    runs: u32,
    /// The klusterlet's --resync (long, so no resync lands inside a timed run).
    #[arg(long, default_value = "1h", value_parser = api::parse_duration)]
    resync: Duration,
    /// Give up on one run after this long.
    #[arg(long, default_value = "5m", value_parser = api::parse_duration)]
    run_limit: Duration,
    /// The `wait` of each blocking GET that waits for Applied. It returns as soon as the
    /// status lands; a short one polls the whole work meanwhile (at 20 ms, ~40 reads of a
    /// work that is 3× bigger with rules: the hub's and this bench's CPU, not the apply).
    #[arg(long, default_value = "30s", value_parser = api::parse_duration)]
    get_wait: Duration,
    /// Give each run's rules texts no earlier run used (the work's name in each
    /// expression), so the hub validates and the agent compiles all of them: the cold
    /// case. Without it, every run after the warm-up has the same 500 texts, as a work
    /// updated to a new generation has.
    #[arg(long)]
    fresh_expressions: bool,
}

#[derive(Debug, clap::Args)]
struct CiWaitArgs {
    /// Timed runs; each changes the ConfigMap, so the agent applies every time. One
    /// untimed run that creates the work comes first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    runs: u32,
}

#[derive(Debug, clap::Args)]
struct LatencyArgs {
    /// How many works (one ConfigMap each), created one after another.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    works: u32,
    /// Pause between one work turning Applied and the next PUT.
    #[arg(long, default_value = "0s", value_parser = api::parse_duration)]
    interval: Duration,
    /// The klusterlet's --resync.
    #[arg(long, default_value = "60s", value_parser = api::parse_duration)]
    resync: Duration,
    /// Run the klusterlet with `KLUSTERLET_LOG=info,klusterlet=debug` and keep its log.
    #[arg(long)]
    debug_log: bool,
    /// How the bench sees Applied: `blocking` GETs from the PUT's index (each waiting up to
    /// --get-wait), or `poll` (a plain GET every --poll-interval).
    #[arg(long, value_enum, default_value_t = ObserveMode::Blocking)]
    observe: ObserveMode,
    /// The `wait` of each blocking GET.
    #[arg(long, default_value = "30s", value_parser = api::parse_duration)]
    get_wait: Duration,
    /// Time between GETs with `--observe poll`.
    #[arg(long, default_value = "2ms", value_parser = api::parse_duration)]
    poll_interval: Duration,
    /// Stop starting works after this long.
    #[arg(long, default_value = "10m", value_parser = api::parse_duration)]
    time_limit: Duration,
}

#[derive(Debug, clap::Args)]
struct Apply500Args {
    /// ConfigMaps in the work (and in kubectl's file).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    objects: u32,
    /// Timed runs of each (the median is reported); one untimed warm-up of each comes first.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    runs: u32,
    /// The klusterlet's --resync (long by default, so a resync of earlier runs' works does
    /// not land inside a timed run).
    #[arg(long, default_value = "1h", value_parser = api::parse_duration)]
    resync: Duration,
    /// Give up on one run after this long.
    #[arg(long, default_value = "5m", value_parser = api::parse_duration)]
    run_limit: Duration,
    /// The `wait` of each blocking GET that waits for Applied: short, so a blocking query
    /// that misses its wake-up costs at most this much.
    #[arg(long, default_value = "20ms", value_parser = api::parse_duration)]
    get_wait: Duration,
}

#[derive(Debug, clap::Args)]
struct IdleArgs {
    /// How many works (one small ConfigMap each) are applied before sampling.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    works: u32,
    /// How long to sample the idle klusterlet.
    #[arg(long, default_value = "60s", value_parser = api::parse_duration)]
    window: Duration,
    /// Wait this long after every work is Applied before sampling.
    #[arg(long, default_value = "10s", value_parser = api::parse_duration)]
    settle: Duration,
    /// The klusterlet's --resync (60 s is its default; a resync inside the window counts).
    #[arg(long, default_value = "60s", value_parser = api::parse_duration)]
    resync: Duration,
    /// Give every work's ConfigMap a CEL condition rule of its own (issue 18).
    #[arg(long)]
    cel_rules: bool,
}

#[derive(Debug, clap::Args)]
struct JoinsArgs {
    /// How many simulated agents join (per backend).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,
    /// Which store the hub runs on.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Whether every join opens its own HTTPS connection (as separate agents do) or all
    /// share one client's pool.
    #[arg(long, value_enum, default_value_t = Connections::PerJoin)]
    connections: Connections,
    /// Stop starting joins after this long (per backend).
    #[arg(long, default_value = "5m", value_parser = api::parse_duration)]
    time_limit: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum ObserveMode {
    Blocking,
    Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Connections {
    PerJoin,
    Shared,
}

/// An overall bound on any subcommand, set-up included.
const HARD_LIMIT: Duration = Duration::from_secs(45 * 60);
/// How long one work may take to become Applied before the run fails.
const WORK_LIMIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let run = async {
        match &cli.command {
            Command::Latency(a) => latency(a).await,
            Command::Apply500(a) => apply500(a).await,
            Command::Idle(a) => idle(a).await,
            Command::Joins(a) => joins(a).await,
            Command::CiWait(a) => ci_wait(a).await,
            Command::Rules500(a) => rules::rules500(a).await,
        }
    };
    let (summary, report) = tokio::time::timeout(HARD_LIMIT, run)
        .await
        .context("agentbench exceeded its hard time limit")??;
    let machine = machine();
    let summary = format!(
        "machine: {} CPUs ({}), {} GiB, {}, commit {}, load average at the end {}\n{summary}",
        machine.cpus,
        machine.cpu_model,
        machine.memory_gib,
        machine.date,
        machine.commit,
        machine.loadavg
    );
    let report = json!({"machine": machine, "report": report});
    if cli.json {
        eprint!("{summary}");
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{summary}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The fleet: one apiserver-only cluster, one hub, one joined and running klusterlet.

struct Fleet {
    // Declared first: the agent stops before the apiserver and the hub.
    _agent: tokio::process::Child,
    agent_pid: u32,
    agent_log: PathBuf,
    hub: HubProcess,
    admin: HubClient,
    cluster_name: String,
    cluster: TestCluster,
    _dir: tempfile::TempDir,
}

/// The namespace of the klusterlet's ledger in the managed cluster.
const LEDGER_NS: &str = "agent-ns";

struct FleetOptions {
    resync: Duration,
    debug_log: bool,
}

impl Fleet {
    async fn start(opts: &FleetOptions) -> anyhow::Result<Fleet> {
        let klusterlet =
            tokio::task::spawn_blocking(|| testkit::procs::binary("klusterlet")).await??;
        eprintln!("starting an apiserver-only cluster");
        let cluster = TestCluster::start(ClusterOptions::apiserver_only()).await?;
        let dir = tempfile::tempdir()?;
        eprintln!("starting the hub");
        let hub = HubProcess::start(&dir.path().join("hub"), &[]).await?;
        let admin = hub.client()?;
        let cluster_name = "bench".to_string();
        let data = dir.path().join("agent");
        let kubeconfig = cluster.kubeconfig_path().display().to_string();
        eprintln!("klusterlet join");
        hub.join_klusterlet(
            &klusterlet,
            &cluster_name,
            cluster.kubeconfig_path(),
            &data,
            &[],
        )
        .await?;
        let agent_log = dir.path().join("klusterlet.log");
        let log_filter = if opts.debug_log {
            "info,klusterlet=debug"
        } else {
            "info"
        };
        eprintln!("klusterlet run (resync {:?})", opts.resync);
        let agent = tokio::process::Command::new(&klusterlet)
            .args(["run", "--kubeconfig", &kubeconfig, "--data-dir"])
            .arg(&data)
            .args(["--resync", &format!("{}s", opts.resync.as_secs().max(1))])
            .args(["--namespace", LEDGER_NS])
            .env("KLUSTERLET_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting klusterlet run")?;
        let agent_pid = agent.id().context("klusterlet exited at once")?;
        Ok(Fleet {
            _agent: agent,
            agent_pid,
            agent_log,
            hub,
            admin,
            cluster_name,
            cluster,
            _dir: dir,
        })
    }

    fn agent_log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.agent_log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(self.cluster.client())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(())
    }

    /// PUTs a work; returns the change index of the write (the work's `resourceVersion`)
    /// and the `X-Hub-Index` of the answer.
    ///
    /// The bench blocks from the `resourceVersion`, not from `X-Hub-Index`: the hub answers
    /// a write with its index at the time of the answer, which may already include the
    /// agent's status write for this very work, and a blocking GET from there would wait
    /// for a change that already happened.
    async fn put(&self, name: &str, manifests: Vec<Value>) -> anyhow::Result<Put> {
        let w = ManifestWork::new(&self.cluster_name, name, manifests);
        let put = self.admin.put_work(&w, None).await?;
        let version = put
            .value
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(put.index);
        Ok(Put {
            index: version.min(put.index),
            header_index: put.index,
        })
    }

    /// Waits until `Applied=True` holds for the work's current generation: with blocking
    /// GETs from `index` (each waiting at most `how`'s wait), or by polling.
    async fn wait_applied(
        &self,
        name: &str,
        mut index: u64,
        how: Observe,
    ) -> anyhow::Result<ManifestWork> {
        let deadline = Instant::now() + WORK_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "work {name} not Applied within {WORK_LIMIT:?}; klusterlet log tail:\n{}",
                    self.agent_log_tail()
                );
            }
            let opts = match how {
                Observe::Blocking(wait) => ListOptions {
                    index: Some(index),
                    wait: Some(left.min(wait)),
                    ..Default::default()
                },
                Observe::Poll(_) => ListOptions::default(),
            };
            let got = self.admin.get_work(&self.cluster_name, name, &opts).await?;
            if applied(&got.value) {
                return Ok(got.value);
            }
            if let Some(c) = got.value.condition("Applied")
                && c.status == "False"
                && c.observed_generation == got.value.metadata.generation
            {
                bail!("work {name} failed to apply: {}: {}", c.reason, c.message);
            }
            index = got.index.max(index);
            if let Observe::Poll(every) = how {
                tokio::time::sleep(every).await;
            }
        }
    }

    /// Blocks until every named work is Applied (a blocking list of the cluster's works).
    async fn wait_all_applied(&self, names: &[String]) -> anyhow::Result<()> {
        let deadline = Instant::now() + WORK_LIMIT * 2;
        let mut index = None;
        loop {
            let opts = ListOptions {
                index,
                wait: Some(Duration::from_secs(10)),
                ..Default::default()
            };
            let list = self
                .admin
                .list_works(Some(&self.cluster_name), &opts)
                .await?;
            let done: std::collections::HashSet<&str> = list
                .value
                .items
                .iter()
                .filter(|w| applied(w))
                .map(|w| w.metadata.name.as_str())
                .collect();
            let missing = names.iter().filter(|n| !done.contains(n.as_str())).count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{missing} works not Applied in time; klusterlet log tail:\n{}",
                    self.agent_log_tail()
                );
            }
            index = Some(list.index.max(list.value.metadata.index));
        }
    }

    /// Every work's status on the hub, by name.
    async fn statuses(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        let mut continue_ = None;
        loop {
            let opts = ListOptions {
                limit: Some(500),
                continue_: continue_.take(),
                ..Default::default()
            };
            let list = self
                .admin
                .list_works(Some(&self.cluster_name), &opts)
                .await?;
            for w in list.value.items {
                out.insert(w.metadata.name.clone(), serde_json::to_value(&w.status)?);
            }
            match list.value.metadata.continue_ {
                Some(c) if !c.is_empty() => continue_ = Some(c),
                _ => return Ok(out),
            }
        }
    }

    async fn metrics(&self) -> anyhow::Result<Metrics> {
        let text = self
            .admin
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await?
            .text()
            .await?;
        Ok(Metrics::parse(&text))
    }
}

/// What a PUT of a work answered.
struct Put {
    /// The change index of the write.
    index: u64,
    /// The answer's `X-Hub-Index`.
    header_index: u64,
}

/// How the bench learns that a work is Applied.
#[derive(Debug, Clone, Copy)]
enum Observe {
    /// Blocking GETs from the write's index, each waiting at most this long.
    Blocking(Duration),
    /// Plain GETs, this far apart.
    Poll(Duration),
}

fn applied(w: &ManifestWork) -> bool {
    w.condition("Applied")
        .is_some_and(|c| c.status == "True" && c.observed_generation == w.metadata.generation)
}

fn config_map(namespace: &str, name: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"v": value},
    })
}

// ---------------------------------------------------------------------------------------
// What the bench sees happen in the managed cluster, from a watch of every ConfigMap.

/// When the bench's watch first saw each ConfigMap (`obj/<ns>/<name>`) and each work's
/// ledger ConfigMap (`ledger/<work>`).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, Instant>>>);

impl Seen {
    fn start(client: kube::Client) -> (Seen, tokio::task::JoinHandle<()>) {
        let seen = Seen::default();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let api: Api<ConfigMap> = Api::all(client);
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = events.next().await {
                let now = Instant::now();
                let cm = match ev {
                    Ok(watcher::Event::Apply(cm)) | Ok(watcher::Event::InitApply(cm)) => cm,
                    _ => continue,
                };
                let ns = cm.metadata.namespace.clone().unwrap_or_default();
                let key = if ns == LEDGER_NS {
                    match cm
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("fleethub.io/work"))
                    {
                        Some(work) => format!("ledger/{work}"),
                        None => continue,
                    }
                } else {
                    format!("obj/{ns}/{}", cm.metadata.name.unwrap_or_default())
                };
                s.0.lock().expect("seen lock").entry(key).or_insert(now);
            }
        });
        (seen, task)
    }

    fn get(&self, key: &str) -> Option<Instant> {
        self.0.lock().expect("seen lock").get(key).copied()
    }

    /// Waits a little for a key the watch may deliver just after the hub answered.
    async fn wait(&self, key: &str) -> Option<Instant> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(t) = self.get(key) {
                return Some(t);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// latency

#[derive(Debug, Serialize)]
struct LatencyReport {
    works: usize,
    observe: ObserveMode,
    get_wait_ms: f64,
    poll_interval_ms: f64,
    resync_seconds: u64,
    interval_ms: f64,
    timed_out: bool,
    /// PUT sent → Applied=True with the current observedGeneration seen by the blocking GET.
    write_to_applied_ms: Stats,
    /// PUT sent → PUT answered.
    put_ms: Stats,
    /// PUT answered → the ConfigMap first seen by the bench's watch of the apiserver
    /// (hub wakes the agent's blocking list, the agent lists, queues, applies).
    ack_to_object_ms: Stats,
    /// ConfigMap seen → the work's ledger ConfigMap seen.
    object_to_ledger_ms: Stats,
    /// Ledger seen → Applied seen on the hub (status computed and PUT, hub commit,
    /// the bench's blocking GET woken).
    ledger_to_applied_ms: Stats,
    /// Works that took over a second (a blocking GET that missed its wake-up waits out its
    /// `wait`).
    over_one_second: usize,
    /// Works whose blocking GET was still waiting when a plain GET (a second after the PUT,
    /// then every 100 ms) already showed Applied=True: missed wake-ups. The figures are when
    /// the plain GET saw it (an upper bound of when the hub had it).
    missed_wakeups_visible_after_ms: Stats,
    /// write_to_applied over the first and the last tenth of the works.
    first_tenth_p50_ms: f64,
    last_tenth_p50_ms: f64,
    /// PUT answers whose `X-Hub-Index` was past the write's own index.
    put_header_index_ahead: usize,
    /// PUT answers whose `X-Hub-Index` already covered the agent's Applied status write
    /// for the same work (a blocking GET from that index would have missed it).
    put_header_index_past_status: usize,
    hub_routes: Vec<RouteTime>,
    klusterlet_log: Option<String>,
}

async fn latency(args: &LatencyArgs) -> anyhow::Result<(String, Value)> {
    let fleet = Fleet::start(&FleetOptions {
        resync: args.resync,
        debug_log: args.debug_log,
    })
    .await?;
    let ns = "latency";
    let observe = match args.observe {
        ObserveMode::Blocking => Observe::Blocking(args.get_wait),
        ObserveMode::Poll => Observe::Poll(args.poll_interval),
    };
    fleet.create_namespace(ns).await?;
    let (seen, watch) = Seen::start(fleet.cluster.client());
    // Warm-up: the agent is running, discovery is warm, the watch is synced.
    let put = fleet
        .put("warmup", vec![config_map(ns, "warmup", "0")])
        .await?;
    fleet.wait_applied("warmup", put.index, observe).await?;
    seen.wait(&format!("obj/{ns}/warmup")).await;

    let before = fleet.metrics().await?;
    let started = Instant::now();
    let (mut total, mut put_times, mut to_obj, mut to_ledger, mut to_applied) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut timed_out = false;
    let (mut header_ahead, mut header_past_status) = (0, 0);
    let mut missed: Vec<Duration> = Vec::new();
    eprintln!("latency: {} works, one after another", args.works);
    for i in 0..args.works {
        if started.elapsed() > args.time_limit {
            timed_out = true;
            break;
        }
        let name = format!("lat-{i:05}");
        let t0 = Instant::now();
        let put = fleet.put(&name, vec![config_map(ns, &name, "v")]).await?;
        let acked = Instant::now();
        // With blocking GETs, a plain GET after a second tells whether the hub already holds
        // Applied while the blocking GET still waits (a missed wake-up).
        let blocking = fleet.wait_applied(&name, put.index, observe);
        tokio::pin!(blocking);
        let probe = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(probe);
        let mut probing = matches!(observe, Observe::Blocking(_));
        let w = loop {
            tokio::select! {
                r = &mut blocking => break r?,
                _ = &mut probe, if probing => {
                    let got = fleet
                        .admin
                        .get_work(&fleet.cluster_name, &name, &ListOptions::default())
                        .await?;
                    if applied(&got.value) {
                        missed.push(Instant::now() - t0);
                        probing = false;
                    } else {
                        probe
                            .as_mut()
                            .reset(tokio::time::Instant::now() + Duration::from_millis(100));
                    }
                }
            }
        };
        let status_version: u64 = w
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if put.header_index > put.index {
            header_ahead += 1;
        }
        if put.header_index >= status_version {
            header_past_status += 1;
        }
        let done = Instant::now();
        total.push(done - t0);
        put_times.push(acked - t0);
        let obj = seen.wait(&format!("obj/{ns}/{name}")).await;
        let ledger = seen.wait(&format!("ledger/{name}")).await;
        if let (Some(obj), Some(ledger)) = (obj, ledger) {
            to_obj.push(obj.saturating_duration_since(acked));
            to_ledger.push(ledger.saturating_duration_since(obj));
            to_applied.push(done.saturating_duration_since(ledger));
        }
        if (i + 1) % 50 == 0 {
            eprintln!("  {} done", i + 1);
        }
        if !args.interval.is_zero() {
            tokio::time::sleep(args.interval).await;
        }
    }
    let after = fleet.metrics().await?;
    watch.abort();
    let stalls = total
        .iter()
        .filter(|d| **d > Duration::from_secs(1))
        .count();
    let tenth = (total.len() / 10).max(1);
    let report = LatencyReport {
        works: total.len(),
        observe: args.observe,
        get_wait_ms: ms(args.get_wait),
        poll_interval_ms: ms(args.poll_interval),
        resync_seconds: args.resync.as_secs(),
        interval_ms: ms(args.interval),
        timed_out,
        write_to_applied_ms: Stats::of(&total),
        put_ms: Stats::of(&put_times),
        ack_to_object_ms: Stats::of(&to_obj),
        object_to_ledger_ms: Stats::of(&to_ledger),
        ledger_to_applied_ms: Stats::of(&to_applied),
        over_one_second: stalls,
        missed_wakeups_visible_after_ms: Stats::of(&missed),
        first_tenth_p50_ms: Stats::of(&total[..tenth]).p50,
        last_tenth_p50_ms: Stats::of(&total[total.len() - tenth..]).p50,
        put_header_index_ahead: header_ahead,
        put_header_index_past_status: header_past_status,
        hub_routes: after.route_times(&before),
        klusterlet_log: args.debug_log.then(|| {
            // Keep the log for reading: copy it out of the temporary directory.
            let keep = std::env::temp_dir().join("agentbench-latency-klusterlet.log");
            let _ = std::fs::copy(&fleet.agent_log, &keep);
            keep.display().to_string()
        }),
    };
    let mut s = String::new();
    s += &format!(
        "latency: {} works one after another, 1 klusterlet (resync {} s), Applied seen by {}\n",
        report.works,
        report.resync_seconds,
        match args.observe {
            ObserveMode::Blocking => format!("blocking GETs (wait {:?})", args.get_wait),
            ObserveMode::Poll => format!("polling every {:?}", args.poll_interval),
        }
    );
    s += &stats_line("write → Applied=True on hub", &report.write_to_applied_ms);
    s += &stats_line("  PUT answered", &report.put_ms);
    s += &stats_line("  ack → object in apiserver", &report.ack_to_object_ms);
    s += &stats_line("  object → ledger written", &report.object_to_ledger_ms);
    s += &stats_line(
        "  ledger → Applied seen on hub",
        &report.ledger_to_applied_ms,
    );
    s += &format!("works over 1 s: {}\n", report.over_one_second);
    if report.missed_wakeups_visible_after_ms.n > 0 {
        s += &stats_line(
            "blocking GET still waiting while a plain GET already showed Applied (seen at)",
            &report.missed_wakeups_visible_after_ms,
        );
    }
    s += &format!(
        "p50 over the first tenth {:.1} ms, over the last tenth {:.1} ms\n",
        report.first_tenth_p50_ms, report.last_tenth_p50_ms
    );
    s += &format!(
        "PUT answers with X-Hub-Index past the write: {}; past the agent's Applied status: {}\n",
        report.put_header_index_ahead, report.put_header_index_past_status
    );
    s += &routes_table(&report.hub_routes);
    if let Some(l) = &report.klusterlet_log {
        s += &format!("klusterlet log: {l}\n");
    }
    Ok((s, serde_json::to_value(&report)?))
}

// ---------------------------------------------------------------------------------------
// apply500

#[derive(Debug, Serialize)]
struct Apply500Report {
    objects: usize,
    runs: usize,
    resync_seconds: u64,
    kubectl_version: String,
    ours: ApplySeries,
    kubectl: Vec<ApplySeries>,
    /// Our median over the fastest kubectl variant's median; the goal is ≤ 1.0.
    ratio_to_fastest_kubectl: f64,
    hub_routes: Vec<RouteTime>,
    /// Bytes of the status the klusterlet PUT for the last run's work.
    status_bytes: usize,
}

/// The timed runs of one way of applying the objects.
#[derive(Debug, Serialize)]
struct ApplySeries {
    how: String,
    seconds: Vec<f64>,
    median_seconds: f64,
    /// Per run. Ours: PUT → first object, first → last object, last object → ledger,
    /// total (Applied seen on the hub). kubectl: process start → first object (start-up,
    /// discovery, reading and validating the file), first → last object, total.
    phases: Vec<Phases>,
}

#[derive(Debug, Serialize)]
struct Phases {
    to_first_object: f64,
    first_to_last_object: f64,
    last_object_to_ledger: Option<f64>,
    to_done: f64,
}

/// How kubectl is given the objects.
#[derive(Debug, Clone, Copy)]
enum KubectlInput {
    /// One multi-document YAML file, kubectl's defaults (client-side schema validation of
    /// every document).
    Documents,
    /// One `kind: List` document holding every object, kubectl's defaults.
    List,
    /// Multi-document YAML with `--validate=false` (the server still validates).
    DocumentsNoValidate,
}

impl KubectlInput {
    const ALL: [KubectlInput; 3] = [
        KubectlInput::Documents,
        KubectlInput::List,
        KubectlInput::DocumentsNoValidate,
    ];

    fn describe(self) -> &'static str {
        match self {
            KubectlInput::Documents => "kubectl apply --server-side -f <500 YAML documents>",
            KubectlInput::List => "kubectl apply --server-side -f <one List of 500>",
            KubectlInput::DocumentsNoValidate => {
                "kubectl apply --server-side --validate=false -f <500 YAML documents>"
            }
        }
    }

    fn slug(self) -> &'static str {
        match self {
            KubectlInput::Documents => "docs",
            KubectlInput::List => "list",
            KubectlInput::DocumentsNoValidate => "novalidate",
        }
    }
}

async fn apply500(args: &Apply500Args) -> anyhow::Result<(String, Value)> {
    let fleet = Fleet::start(&FleetOptions {
        resync: args.resync,
        debug_log: false,
    })
    .await?;
    let kubectl_version = kubectl_version().await;
    let observe = Observe::Blocking(args.get_wait);
    let (seen, watch) = Seen::start(fleet.cluster.client());
    let cache = tempfile::tempdir()?;
    let kubectl = Kubectl {
        kubeconfig: fleet.cluster.kubeconfig_path().to_path_buf(),
        cache_dir: cache.path().to_path_buf(),
    };
    let n = args.objects as usize;
    let objects = |ns: &str| -> Vec<Value> {
        (0..n)
            .map(|i| config_map(ns, &format!("cm-{i:04}"), "x"))
            .collect()
    };

    // Untimed warm-ups: discovery, connections, kubectl's discovery and OpenAPI caches.
    fleet.create_namespace("warm-ours").await?;
    let put = fleet.put("warmup", objects("warm-ours")).await?;
    fleet.wait_applied("warmup", put.index, observe).await?;
    for input in KubectlInput::ALL {
        let ns = format!("warm-{}", input.slug());
        fleet.create_namespace(&ns).await?;
        let file = cache.path().join(format!("warm-{}.yaml", input.slug()));
        kubectl
            .apply(input, &objects(&ns), file, args.run_limit)
            .await?;
    }

    let before = fleet.metrics().await?;
    let mut ours = ApplySeries::new("klusterlet: PUT → Applied=True seen on the hub");
    let mut theirs: Vec<ApplySeries> = KubectlInput::ALL
        .iter()
        .map(|i| ApplySeries::new(i.describe()))
        .collect();
    let mut status_bytes = 0;
    for run in 1..=args.runs {
        let ns = format!("ours-{run}");
        fleet.create_namespace(&ns).await?;
        let work = format!("apply-{run}");
        let manifests = objects(&ns);
        eprintln!("run {run}: our {n} ConfigMaps");
        let t0 = Instant::now();
        let put = fleet.put(&work, manifests).await?;
        let w = tokio::time::timeout(
            args.run_limit,
            fleet.wait_applied(&work, put.index, observe),
        )
        .await
        .context("our apply exceeded --run-limit")??;
        let done = Instant::now();
        status_bytes = serde_json::to_vec(&w.status)?.len();
        let count = w
            .status
            .resource_status
            .as_ref()
            .map_or(0, |r| r.manifests.len());
        if count != n {
            bail!("work {work} reports {count} manifests, expected {n}");
        }
        let ledger = seen.wait(&format!("ledger/{work}")).await;
        ours.push(phases(&seen, &ns, n, t0, ledger, done).await);

        for (input, series) in KubectlInput::ALL.into_iter().zip(theirs.iter_mut()) {
            let ns = format!("kubectl-{}-{run}", input.slug());
            fleet.create_namespace(&ns).await?;
            eprintln!("run {run}: {}", input.describe());
            let file = cache.path().join(format!("{ns}.yaml"));
            let (t0, done) = kubectl
                .apply(input, &objects(&ns), file, args.run_limit)
                .await?;
            series.push(phases(&seen, &ns, n, t0, None, done).await);
        }
    }
    let after = fleet.metrics().await?;
    watch.abort();
    let fastest = theirs
        .iter()
        .map(|s| s.median_seconds)
        .fold(f64::INFINITY, f64::min);
    let report = Apply500Report {
        objects: n,
        runs: args.runs as usize,
        resync_seconds: args.resync.as_secs(),
        kubectl_version,
        ratio_to_fastest_kubectl: ours.median_seconds / fastest,
        ours,
        kubectl: theirs,
        hub_routes: after.route_times(&before),
        status_bytes,
    };
    let mut s = format!(
        "apply: {} ConfigMaps into a fresh namespace, {} runs each (medians), kubectl {}, klusterlet --resync {} s\n",
        n, report.runs, report.kubectl_version, report.resync_seconds
    );
    for series in std::iter::once(&report.ours).chain(&report.kubectl) {
        s += &format!(
            "{}: median {:.3} s (ours/this {:.2}), runs {:?} s\n",
            series.how,
            series.median_seconds,
            report.ours.median_seconds / series.median_seconds,
            round3(&series.seconds)
        );
        for (i, p) in series.phases.iter().enumerate() {
            s += &format!(
                "  run {}: → first object {:.3} s, first → last object {:.3} s{}, total {:.3} s\n",
                i + 1,
                p.to_first_object,
                p.first_to_last_object,
                p.last_object_to_ledger.map_or(String::new(), |v| format!(
                    ", last object → ledger {v:.3} s"
                )),
                p.to_done
            );
        }
    }
    s += &format!(
        "ratio ours / fastest kubectl: {:.2}\n",
        report.ratio_to_fastest_kubectl
    );
    s += &format!("status of the work: {} bytes\n", report.status_bytes);
    s += &routes_table(&report.hub_routes);
    Ok((s, serde_json::to_value(&report)?))
}

impl ApplySeries {
    fn new(how: &str) -> Self {
        ApplySeries {
            how: how.to_string(),
            seconds: Vec::new(),
            median_seconds: f64::NAN,
            phases: Vec::new(),
        }
    }

    fn push(&mut self, p: Phases) {
        self.seconds.push(p.to_done);
        self.median_seconds = median(&self.seconds);
        self.phases.push(p);
    }
}

async fn ci_wait(args: &CiWaitArgs) -> anyhow::Result<(String, Value)> {
    let hub_bin = tokio::task::spawn_blocking(|| testkit::procs::binary("hub")).await??;
    let fleet = Fleet::start(&FleetOptions {
        resync: Duration::from_secs(3600),
        debug_log: false,
    })
    .await?;
    let ns = "ciwait";
    fleet.create_namespace(ns).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cm.json");
    let mut times = Vec::new();
    for i in 0..=args.runs {
        std::fs::write(&file, config_map(ns, "ci", &i.to_string()).to_string())?;
        let started = Instant::now();
        let out = tokio::process::Command::new(&hub_bin)
            .arg("apply")
            .arg("-f")
            .arg(&file)
            .args(["--cluster", &fleet.cluster_name, "--name", "ci"])
            .args(["--wait", "--for", "Applied", "--timeout", "60s", "--quiet"])
            .env("HUB_CONFIG", fleet.hub.client_config_path())
            .stdin(Stdio::null())
            .output()
            .await?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "hub apply --wait exited {:?}: {}\nklusterlet log tail:\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr),
                fleet.agent_log_tail()
            );
        }
        // The first run also creates the work: a warm-up.
        if i > 0 {
            times.push(took);
        }
    }
    let stats = Stats::of(&times);
    let summary = stats_line(
        "hub apply --wait --for Applied (ConfigMap work), start to exit 0",
        &stats,
    );
    Ok((summary, json!({"ciWait": stats})))
}

/// Splits one run by what the watch saw in `ns`.
async fn phases(
    seen: &Seen,
    ns: &str,
    n: usize,
    t0: Instant,
    ledger: Option<Instant>,
    done: Instant,
) -> Phases {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(t) = seen.wait(&format!("obj/{ns}/cm-{i:04}")).await {
            times.push(t);
        }
    }
    let first = times.iter().min().copied().unwrap_or(t0);
    let last = times.iter().max().copied().unwrap_or(done);
    Phases {
        to_first_object: first.saturating_duration_since(t0).as_secs_f64(),
        first_to_last_object: last.saturating_duration_since(first).as_secs_f64(),
        last_object_to_ledger: ledger.map(|l| l.saturating_duration_since(last).as_secs_f64()),
        to_done: done.saturating_duration_since(t0).as_secs_f64(),
    }
}

struct Kubectl {
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
}

impl Kubectl {
    /// Writes the objects to `file` as `input` says and times `kubectl apply --server-side`.
    async fn apply(
        &self,
        input: KubectlInput,
        objects: &[Value],
        file: PathBuf,
        limit: Duration,
    ) -> anyhow::Result<(Instant, Instant)> {
        let text = match input {
            KubectlInput::List => serde_json::to_string(
                &json!({"apiVersion": "v1", "kind": "List", "items": objects}),
            )?,
            KubectlInput::Documents | KubectlInput::DocumentsNoValidate => {
                let mut text = String::new();
                for o in objects {
                    text += "---\n";
                    text += &serde_saphyr::to_string(o)?;
                }
                text
            }
        };
        std::fs::write(&file, text)?;
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(["apply", "--server-side"]);
        if let KubectlInput::DocumentsNoValidate = input {
            cmd.arg("--validate=false");
        }
        let t0 = Instant::now();
        let out = cmd
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(limit, out)
            .await
            .context("kubectl apply exceeded --run-limit")??;
        let done = Instant::now();
        if !out.status.success() {
            bail!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok((t0, done))
    }
}

async fn kubectl_version() -> String {
    let out = tokio::process::Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .await;
    out.ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| {
            v.pointer("/clientVersion/gitVersion")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------
// idle

#[derive(Debug, Serialize)]
struct IdleReport {
    works: usize,
    /// Each work's ConfigMap has a CEL condition rule (`--cel-rules`).
    cel_rules: bool,
    resync_seconds: u64,
    window_seconds: f64,
    settle_seconds: f64,
    rss_mib_end: f64,
    rss_mib_max_in_window: f64,
    /// VmHWM: the peak RSS over the process' life (the initial applies included).
    rss_mib_peak_lifetime: f64,
    cpu_seconds: f64,
    millicores: f64,
    /// CPU per 5 s slice of the window, millicores (a resync shows as a spike).
    millicores_per_5s: Vec<f64>,
    /// The hub process over the same window, for comparison.
    hub_millicores: f64,
    hub_rss_mib: f64,
    hub_routes_in_window: Vec<RouteTime>,
    /// Works whose status on the hub differs between the start and the end of the window
    /// (nothing changed in the cluster: any difference is a status write of the resync).
    works_whose_status_changed: usize,
    /// What differed, for one of them (JSON paths with before → after).
    status_change_example: Vec<String>,
}

async fn idle(args: &IdleArgs) -> anyhow::Result<(String, Value)> {
    let fleet = Fleet::start(&FleetOptions {
        resync: args.resync,
        debug_log: false,
    })
    .await?;
    let ns = "idle";
    fleet.create_namespace(ns).await?;
    let names: Vec<String> = (0..args.works).map(|i| format!("idle-{i:05}")).collect();
    eprintln!("idle: applying {} works", names.len());
    for name in &names {
        let configs = if args.cel_rules {
            vec![rules::cel_rule(ns, name)]
        } else {
            Vec::new()
        };
        rules::put_with(&fleet, name, vec![config_map(ns, name, "v")], configs).await?;
    }
    fleet.wait_all_applied(&names).await?;
    eprintln!(
        "all applied; settling {:?}, then sampling {:?}",
        args.settle, args.window
    );
    tokio::time::sleep(args.settle).await;
    let tick = clock_ticks_per_second().await;
    let pid = fleet.agent_pid;
    let hub_pid = fleet.hub.pid().context("hub not running")?;
    let statuses_before = fleet.statuses().await?;
    let before = fleet.metrics().await?;
    let start = Instant::now();
    let cpu0 = cpu_ticks(pid)?;
    let hub0 = cpu_ticks(hub_pid)?;
    let mut slices = Vec::new();
    let mut last = cpu0;
    let mut last_t = start;
    let mut rss_max = 0u64;
    let slice = Duration::from_secs(5);
    while start.elapsed() < args.window {
        let next = (last_t + slice).min(start + args.window);
        tokio::time::sleep_until(next.into()).await;
        let now = cpu_ticks(pid)?;
        rss_max = rss_max.max(proc_status_kib(pid, "VmRSS")?);
        let secs = (Instant::now() - last_t).as_secs_f64();
        slices.push(((now - last) as f64 / tick / secs * 1000.0 * 10.0).round() / 10.0);
        last = now;
        last_t = Instant::now();
    }
    let window = start.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid)? - cpu0) as f64 / tick;
    let hub_cpu = (cpu_ticks(hub_pid)? - hub0) as f64 / tick;
    let after = fleet.metrics().await?;
    let statuses_after = fleet.statuses().await?;
    let changed: Vec<&String> = statuses_after
        .iter()
        .filter(|(k, v)| statuses_before.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    let status_change_example = changed.first().map(|name| {
        json_diff(
            statuses_before.get(*name).unwrap_or(&Value::Null),
            &statuses_after[*name],
            "status",
        )
    });
    let mib = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
    let report = IdleReport {
        works: names.len(),
        cel_rules: args.cel_rules,
        resync_seconds: args.resync.as_secs(),
        window_seconds: window,
        settle_seconds: args.settle.as_secs_f64(),
        rss_mib_end: mib(proc_status_kib(pid, "VmRSS")?),
        rss_mib_max_in_window: mib(rss_max),
        rss_mib_peak_lifetime: mib(proc_status_kib(pid, "VmHWM")?),
        cpu_seconds: cpu,
        millicores: cpu / window * 1000.0,
        millicores_per_5s: slices,
        hub_millicores: hub_cpu / window * 1000.0,
        hub_rss_mib: mib(proc_status_kib(hub_pid, "VmRSS")?),
        hub_routes_in_window: after.route_times(&before),
        works_whose_status_changed: changed.len(),
        status_change_example: status_change_example.unwrap_or_default(),
    };
    let mut s = format!(
        "idle: {} works applied{}, klusterlet --resync {} s, {:.0} s window after {:.0} s settle\n",
        report.works,
        if report.cel_rules {
            " (a CEL rule each)"
        } else {
            ""
        },
        report.resync_seconds,
        report.window_seconds,
        report.settle_seconds
    );
    s += &format!(
        "klusterlet RSS {:.1} MiB (max in window {:.1}, lifetime peak {:.1}), CPU {:.2} s = {:.2} millicores\n",
        report.rss_mib_end,
        report.rss_mib_max_in_window,
        report.rss_mib_peak_lifetime,
        report.cpu_seconds,
        report.millicores
    );
    s += &format!("millicores per 5 s slice: {:?}\n", report.millicores_per_5s);
    s += &format!(
        "hub over the same window: {:.2} millicores, RSS {:.1} MiB\n",
        report.hub_millicores, report.hub_rss_mib
    );
    s += &format!(
        "works whose status on the hub changed during the window: {}\n",
        report.works_whose_status_changed
    );
    for d in &report.status_change_example {
        s += &format!("  e.g. {d}\n");
    }
    s += &routes_table(&report.hub_routes_in_window);
    Ok((s, serde_json::to_value(&report)?))
}

/// The leaves that differ between two JSON values, as `path: before → after`.
fn json_diff(a: &Value, b: &Value, path: &str) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    json_diff(
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        &format!("{path}.{k}"),
                    )
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .flat_map(|(i, (p, q))| json_diff(p, q, &format!("{path}[{i}]")))
            .collect(),
        _ if a == b => Vec::new(),
        _ => vec![format!("{path}: {a} → {b}")],
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unparsable /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// A `kB` line of `/proc/PID/status` (VmRSS, VmHWM).
fn proc_status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .with_context(|| format!("no {key} line"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

async fn clock_ticks_per_second() -> f64 {
    tokio::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .await
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------
// joins

#[derive(Debug, Serialize)]
struct JoinsReport {
    backend: &'static str,
    connections: Connections,
    count: usize,
    concurrency: usize,
    joined: usize,
    failed: usize,
    first_error: Option<String>,
    timed_out: bool,
    seconds: f64,
    joins_per_second: f64,
    /// POST /registrations sent → access token received.
    join_ms: Stats,
    /// POST /registrations (answered Accepted by the auto-accept token).
    register_ms: Stats,
    /// Signing the assertion and POST /clusters/{c}/credentials.
    credentials_ms: Stats,
    hub_cpu_seconds: f64,
    hub_cpu_ms_per_join: f64,
    hub_routes: Vec<RouteTime>,
}

async fn joins(args: &JoinsArgs) -> anyhow::Result<(String, Value)> {
    let mut reports = Vec::new();
    if matches!(args.backend, Backend::Sqlite | Backend::Both) {
        let dir = tempfile::tempdir()?;
        eprintln!("joins on SQLite");
        let hub = HubProcess::start(dir.path(), &[]).await?;
        reports.push(run_joins("sqlite", &hub, args).await?);
    }
    if matches!(args.backend, Backend::Postgres | Backend::Both) {
        eprintln!("starting postgres (fsync on)");
        let postgres = tokio::task::spawn_blocking(TestPostgres::start).await??;
        let url = postgres.fresh_database().await?;
        let dir = tempfile::tempdir()?;
        eprintln!("joins on Postgres");
        let hub = HubProcess::start(dir.path(), &["--database-url", &url]).await?;
        reports.push(run_joins("postgres", &hub, args).await?);
    }
    let mut s = String::new();
    for r in &reports {
        s += &format!(
            "joins on {} ({:?} connections): {}/{} joined, {} failed, concurrency {}, {:.1} s, {:.0} joins/s, hub CPU {:.2} ms/join\n",
            r.backend,
            r.connections,
            r.joined,
            r.count,
            r.failed,
            r.concurrency,
            r.seconds,
            r.joins_per_second,
            r.hub_cpu_ms_per_join
        );
        s += &stats_line("  request → credential", &r.join_ms);
        s += &stats_line("  POST registrations", &r.register_ms);
        s += &stats_line("  POST credentials", &r.credentials_ms);
        if let Some(e) = &r.first_error {
            s += &format!("  first error: {e}\n");
        }
        s += &routes_table(&r.hub_routes);
    }
    Ok((s, serde_json::to_value(&reports)?))
}

struct JoinTimes {
    total: Duration,
    register: Duration,
    credentials: Duration,
}

async fn run_joins(
    backend: &'static str,
    hub: &HubProcess,
    args: &JoinsArgs,
) -> anyhow::Result<JoinsReport> {
    let admin = hub.client()?;
    let token = admin
        .create_token(&TokenRequest {
            auto_accept: true,
            description: "agentbench joins".into(),
            ..Default::default()
        })
        .await?
        .token
        .context("no token secret")?;
    let mut cfg = ClientConfig::load(&hub.client_config_path())?;
    cfg.token = Some(token);
    let shared = HubClient::new(&cfg)?;
    let count = args.count as usize;
    eprintln!("generating {count} P-256 keys");
    let keys = tokio::task::spawn_blocking(move || {
        (0..=count)
            .map(|_| klusterlet::hub::identity::AgentKey::generate())
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    let mut keys = keys.into_iter();
    let connections = args.connections;
    let join = |name: String, key: klusterlet::hub::identity::AgentKey| {
        let shared = shared.clone();
        let cfg = cfg.clone();
        async move {
            let bootstrap = match connections {
                Connections::Shared => shared,
                Connections::PerJoin => HubClient::new(&cfg)?,
            };
            let t0 = Instant::now();
            let reg = bootstrap
                .register(&RegistrationRequest {
                    cluster_name: name.clone(),
                    public_key: key.public_key_pem().to_string(),
                    ..Default::default()
                })
                .await?;
            let t1 = Instant::now();
            if reg.state != api::RegistrationState::Accepted {
                bail!("{name}: registration {:?}, not Accepted", reg.state);
            }
            let assertion = key.cluster_assertion(&name)?;
            let access = bootstrap
                .with_token(None)
                .credentials(&name, &assertion)
                .await?;
            let t2 = Instant::now();
            if access.access_token.is_empty() {
                bail!("{name}: empty access token");
            }
            Ok::<_, anyhow::Error>(JoinTimes {
                total: t2 - t0,
                register: t1 - t0,
                credentials: t2 - t1,
            })
        }
    };
    // Warm-up join (connections, first statements), not counted.
    join("warmup".into(), keys.next().context("no key")?).await?;

    let before = metrics_of(&admin).await?;
    let hub_pid = hub.pid().context("hub not running")?;
    let tick = clock_ticks_per_second().await;
    let cpu0 = cpu_ticks(hub_pid)?;
    let started = Instant::now();
    let limit = args.time_limit;
    let results: Vec<anyhow::Result<JoinTimes>> = futures::stream::iter(
        keys.enumerate()
            .take_while(|_| started.elapsed() < limit)
            .map(|(i, key)| join(format!("agent-{i:06}"), key)),
    )
    .buffer_unordered(args.concurrency as usize)
    .collect()
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let hub_cpu = (cpu_ticks(hub_pid)? - cpu0) as f64 / tick;
    let after = metrics_of(&admin).await?;
    let mut first_error = None;
    let (mut total, mut register, mut credentials) = (vec![], vec![], vec![]);
    let mut failed = 0;
    for r in &results {
        match r {
            Ok(t) => {
                total.push(t.total);
                register.push(t.register);
                credentials.push(t.credentials);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Ok(JoinsReport {
        backend,
        connections,
        count,
        concurrency: args.concurrency as usize,
        joined: total.len(),
        failed,
        first_error,
        timed_out: results.len() < count,
        seconds,
        joins_per_second: total.len() as f64 / seconds,
        join_ms: Stats::of(&total),
        register_ms: Stats::of(&register),
        credentials_ms: Stats::of(&credentials),
        hub_cpu_seconds: hub_cpu,
        hub_cpu_ms_per_join: hub_cpu * 1000.0 / total.len().max(1) as f64,
        hub_routes: after.route_times(&before),
    })
}

async fn metrics_of(admin: &HubClient) -> anyhow::Result<Metrics> {
    let text = admin
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await?
        .text()
        .await?;
    Ok(Metrics::parse(&text))
}

// ---------------------------------------------------------------------------------------
// Figures

/// Latency statistics in milliseconds.
#[derive(Debug, Default, Serialize)]
struct Stats {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        let mut v: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        let round = |x: f64| (x * 100.0).round() / 100.0;
        Stats {
            n: v.len(),
            p50: round(q(0.50)),
            p90: round(q(0.90)),
            p99: round(q(0.99)),
            max: round(v[v.len() - 1]),
            mean: round(v.iter().sum::<f64>() / v.len() as f64),
        }
    }
}

fn stats_line(what: &str, s: &Stats) -> String {
    format!(
        "{what}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms (n={})\n",
        s.p50, s.p90, s.p99, s.max, s.mean, s.n
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn round3(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}

/// The hub's Prometheus text, as `series → value`.
struct Metrics(BTreeMap<String, f64>);

/// Requests the hub served on one route during a measurement, and their mean server time.
#[derive(Debug, Serialize)]
struct RouteTime {
    route: String,
    method: String,
    requests: f64,
    mean_ms: f64,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// Per route and method: requests and mean server time between `before` and now.
    fn route_times(&self, before: &Metrics) -> Vec<RouteTime> {
        const SUM: &str = "hub_http_request_duration_seconds_sum";
        const COUNT: &str = "hub_http_request_duration_seconds_count";
        let mut out = Vec::new();
        for (series, sum) in &self.0 {
            let Some(labels) = series.strip_prefix(SUM) else {
                continue;
            };
            let count_series = format!("{COUNT}{labels}");
            let count = self.0.get(&count_series).copied().unwrap_or(0.0)
                - before.0.get(&count_series).copied().unwrap_or(0.0);
            if count <= 0.0 {
                continue;
            }
            let sum = sum - before.0.get(series).copied().unwrap_or(0.0);
            let label = |k: &str| {
                let key = format!("{k}=\"");
                labels
                    .find(&key)
                    .map(|at| &labels[at + key.len()..])
                    .and_then(|v| v.split_once('"'))
                    .map(|(v, _)| v.to_string())
                    .unwrap_or_default()
            };
            out.push(RouteTime {
                route: label("route"),
                method: label("method"),
                requests: count,
                mean_ms: (sum / count * 1e3 * 100.0).round() / 100.0,
            });
        }
        out.sort_by(|a, b| b.requests.total_cmp(&a.requests));
        out
    }
}

fn routes_table(routes: &[RouteTime]) -> String {
    let mut s = String::from("hub requests in the measurement (server time):\n");
    for r in routes {
        s += &format!(
            "  {:>6} {:<7} {:<55} mean {:.2} ms\n",
            r.requests, r.method, r.route, r.mean_ms
        );
    }
    s
}

#[derive(Debug, Serialize)]
struct Machine {
    date: String,
    cpus: usize,
    cpu_model: String,
    memory_gib: f64,
    commit: String,
    /// `/proc/loadavg` when the run ended (other work on the machine disturbs the figures).
    loadavg: String,
}

fn machine() -> Machine {
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let commit = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Machine {
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        commit,
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    }
}
