//! Starts one real Kubernetes test cluster for a person (a demo, a manual check, a
//! measurement) and keeps it until Ctrl-C. `tests/cluster/start.sh` runs it.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use clap::Parser;
use testkit::cluster::{ClusterOptions, TestCluster};

/// Starts a real Kubernetes test cluster (etcd, kube-apiserver; with --full also
/// kube-controller-manager, kube-scheduler and a KWOK node) on 127.0.0.1, prints its
/// kubeconfig and keeps it running until Ctrl-C, then stops it and deletes its files.
///
/// Exit codes: 0 after a clean stop, 1 if the cluster could not start.
#[derive(Parser)]
struct Args {
    /// Also run kube-controller-manager, kube-scheduler and a KWOK node, so workloads
    /// become ready.
    #[arg(long)]
    full: bool,
    /// Stop right after printing the figures (start time, memory) instead of waiting for
    /// Ctrl-C.
    #[arg(long)]
    once: bool,
    /// Before printing the memory, let the cluster idle this many seconds (caches fill up
    /// after start).
    #[arg(long, default_value_t = 0)]
    settle: u64,
    /// Let etcd sync its writes to disk (the tests' clusters do not).
    #[arg(long)]
    etcd_fsync: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        full,
        once,
        settle,
        etcd_fsync,
    } = Args::parse();
    let options = if full {
        ClusterOptions::full()
    } else {
        ClusterOptions::apiserver_only()
    }
    .etcd_fsync(etcd_fsync);
    let cluster = TestCluster::start(options).await?;
    println!(
        "cluster ({:?}) ready in {:.2?}",
        cluster.mode(),
        cluster.startup_time()
    );
    println!("server:     {}", cluster.server_url());
    println!("kubeconfig: {}", cluster.kubeconfig_path().display());
    println!("files:      {}", cluster.dir().display());
    for (name, pid) in cluster.pids() {
        println!("  pid {pid:>7}  {name}");
    }
    if settle > 0 {
        tokio::time::sleep(Duration::from_secs(settle)).await;
    }
    println!(
        "memory:     {} MiB RSS (sum over its processes{})",
        cluster.rss_kib()? / 1024,
        if settle > 0 {
            format!(", after {settle} s idle")
        } else {
            String::new()
        }
    );
    if !once {
        println!();
        println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
        println!("Ctrl-C stops the cluster and deletes its files.");
        tokio::signal::ctrl_c().await?;
    }
    let stopping = Instant::now();
    drop(cluster);
    println!("stopped in {:.2?}", stopping.elapsed());
    Ok(())
}
