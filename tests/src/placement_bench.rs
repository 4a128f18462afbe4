//! Fleet placement against a real hub, on loopback: the load of `bench placement`
//! (issue 17, "Measure").
//!
//! * [`one_set`]: simulated agents (those of [`crate::fleet`]) join with one label, a
//!   Placement selects them all and a ManifestWorkReplicaSet puts a small ConfigMap on
//!   each; timed from the set's `PUT` until every agent has reported its work `Applied`,
//!   and until the set's `status.summary.applied` says so. The baseline, in the same run
//!   and on the same fleet: the same works `PUT` one per cluster by a client.
//! * [`redecide`]: cluster records (no agents) in zones, placements over subsets of the
//!   zones; one cluster's zone label changes at a time, timed until the placements it
//!   left and joined show it in their decisions (blocking `GET`s of the decisions).
//! * [`failover`]: one agent of a fleet stops renewing its lease; a placement with
//!   `numberOfClusters: 1` had chosen it; timed from that agent's last renewal until the
//!   set's work is `Applied` on the replacement.
//!
//! Every call goes through the public REST API (DESIGN.md, "Fleet placement").

mod rest;
mod sim;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::fleet::Placement;
use api::fleet::{LabelSelector, SelectorRequirement, TAINT_UNAVAILABLE, TAINT_UNREACHABLE};
use api::{ClientConfig, HubClient, LeaseRenewal, ListOptions, ManagedCluster, ManifestWork};
use futures::StreamExt;
use serde::Serialize;

use crate::fleet::LatencyMs;
use crate::load::{CpuTime, Latencies};
use rest::{
    BLOCK, NAMESPACE, blocking, config_map, decisions, match_labels, placement, put_placement,
    put_set, set, wait_decisions,
};
use sim::SimFleet;

/// Seconds, to the millisecond.
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e3).round() / 1e3
}

/// What [`one_set`] runs.
#[derive(Debug, Clone)]
pub struct SetLoad {
    /// Simulated agents (clusters), all labelled `env=prod`.
    pub clusters: usize,
    /// Joins in flight at once.
    pub join_concurrency: usize,
    /// The hub's `--lease-interval`, which every agent renews at.
    pub lease_interval: Duration,
    /// The baseline's `PUT`s in flight at once.
    pub direct_in_flight: usize,
    /// How long to wait for all works to be Applied, each phase.
    pub timeout: Duration,
}

/// What [`one_set`] measured.
#[derive(Debug, Serialize)]
pub struct SetReport {
    pub clusters: usize,
    pub join_seconds: f64,
    /// Baseline: from the first of the client's `PUT`s to the last `Applied`, in seconds.
    pub direct_applied_seconds: Option<f64>,
    /// Baseline: how long the `PUT`s took.
    pub direct_put_seconds: f64,
    pub direct_missing: usize,
    /// From the placement's `PUT` until its decisions listed every cluster.
    pub placement_decided_seconds: Option<f64>,
    /// From the set's `PUT` until the last agent reported its work Applied.
    pub set_applied_seconds: Option<f64>,
    pub set_missing: usize,
    /// From the set's `PUT` until `status.summary.applied` counted every cluster.
    pub set_summary_seconds: Option<f64>,
    /// The set's summary when the bench stopped looking.
    pub set_summary: api::fleet::SetSummary,
    /// The set's time over the baseline's.
    pub set_over_direct: Option<f64>,
    /// The hub's CPU from the set's `PUT` to its summary, in seconds.
    pub set_hub_cpu_seconds: f64,
    pub direct_hub_cpu_seconds: f64,
}

/// One set over `load.clusters` simulated clusters, against creating the same works
/// directly (measured first, on the same fleet, with another work name).
pub async fn one_set(
    admin: &HubClient,
    cfg: &ClientConfig,
    hub_pid: u32,
    load: &SetLoad,
) -> anyhow::Result<SetReport> {
    let labels = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    let fleet = SimFleet::join(
        admin,
        cfg,
        "sim",
        load.clusters,
        load.join_concurrency,
        load.lease_interval,
        &labels,
    )
    .await?;

    // Baseline: a client puts the same work on every cluster.
    let direct = "direct-config";
    eprintln!(
        "placement: baseline, {} direct PUTs, {} in flight",
        fleet.clusters.len(),
        load.direct_in_flight
    );
    let cpu0 = CpuTime::of(hub_pid)?.total().total();
    let started = Instant::now();
    let puts: Vec<anyhow::Result<()>> = futures::stream::iter(fleet.clusters.iter().map(|c| {
        let work = ManifestWork::new(c, direct, vec![config_map(direct)]);
        async move {
            admin.put_work(&work, None).await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(load.direct_in_flight.max(1))
    .collect()
    .await;
    let direct_put_seconds = secs(started.elapsed());
    puts.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let (last, direct_missing) = fleet.wait_applied(direct, load.timeout).await;
    let direct_hub_cpu_seconds = CpuTime::of(hub_pid)?.total().total() - cpu0;
    let direct_applied_seconds =
        (direct_missing == 0).then(|| secs(last.unwrap_or(started) - started));

    // The placement first, until it has decided every cluster.
    let started = Instant::now();
    put_placement(
        admin,
        &placement("all-prod", match_labels("env", "prod"), None, &[]),
    )
    .await?;
    let n = fleet.clusters.len();
    let decided = wait_decisions(admin, "all-prod", load.timeout, |d| d.len() >= n).await?;
    let placement_decided_seconds = decided.map(|_| secs(started.elapsed()));

    // The set, timed from its PUT.
    eprintln!("placement: a set over {n} clusters");
    let name = "config-set";
    let cpu0 = CpuTime::of(hub_pid)?.total().total();
    let started = Instant::now();
    put_set(admin, &set(name, "all-prod")).await?;
    let summary = async {
        let deadline = started + load.timeout;
        let mut index = None;
        loop {
            let s = admin.get_set(NAMESPACE, name, &blocking(index)).await?;
            let summary = s.value.status.summary;
            if summary.applied as usize >= n {
                return anyhow::Ok((Some(started.elapsed()), summary));
            }
            if Instant::now() > deadline {
                return Ok((None, summary));
            }
            index = Some(s.index);
        }
    };
    let (applied, summary) = tokio::join!(fleet.wait_applied(name, load.timeout), summary);
    let (summary_after, set_summary) = summary?;
    let set_hub_cpu_seconds = CpuTime::of(hub_pid)?.total().total() - cpu0;
    let (last, set_missing) = applied;
    let set_applied_seconds = (set_missing == 0).then(|| secs(last.unwrap_or(started) - started));
    Ok(SetReport {
        clusters: n,
        join_seconds: fleet.join_seconds,
        direct_applied_seconds,
        direct_put_seconds,
        direct_missing,
        placement_decided_seconds,
        set_applied_seconds,
        set_missing,
        set_summary_seconds: summary_after.map(secs),
        set_summary,
        set_over_direct: set_applied_seconds
            .zip(direct_applied_seconds)
            .map(|(s, d)| (s / d * 100.0).round() / 100.0),
        set_hub_cpu_seconds,
        direct_hub_cpu_seconds,
    })
}

/// What [`redecide`] runs.
#[derive(Debug, Clone)]
pub struct RedecideLoad {
    /// Cluster records (no agents), spread round-robin over the zones.
    pub clusters: usize,
    /// Values of the `zone` label.
    pub zones: usize,
    /// Placements, each over one zone or two (see [`redecide`]).
    pub placements: usize,
    /// Label changes, one at a time.
    pub relabels: usize,
    /// How long one change may take to show before it counts as missed.
    pub timeout: Duration,
}

/// What [`redecide`] measured.
#[derive(Debug, Serialize)]
pub struct RedecideReport {
    pub clusters: usize,
    pub placements: usize,
    /// From the last placement's `PUT` until every placement had decided.
    pub settled_seconds: f64,
    /// From the label `PUT` until both placements it concerns show it.
    pub latency_ms: LatencyMs,
    /// The label `PUT` alone (its answer), part of the above.
    pub label_put_ms: LatencyMs,
    /// Changes not shown within the timeout.
    pub missed: usize,
    /// The hub's CPU over the relabels.
    pub hub_cpu_seconds: f64,
    pub hub_millicores: f64,
    pub wall_seconds: f64,
}

/// The placements of [`redecide`] and how many clusters each must decide at first.
/// Placement `i` covers zone `z = i % zones`; by its round `v = i / zones`: when `v % 3` is
/// 0 it selects zone `z` (so `p-000` .. are the plain placements of zones 0 ..), when 1
/// `numberOfClusters` of them (a fifth of the zone), when 2 zones `z` and `z + 1`.
fn redecide_placements(load: &RedecideLoad) -> Vec<(Placement, usize)> {
    let zones = load.zones.max(1);
    let zone = |z: usize| format!("z{}", z % zones);
    // Clusters are dealt round-robin: the first `clusters % zones` zones have one more.
    let size = |z: usize| load.clusters / zones + usize::from(z % zones < load.clusters % zones);
    // Clusters with no agent may carry the hub's availability taints; what is measured
    // is the label change, so every placement tolerates those.
    let tolerate = [TAINT_UNREACHABLE, TAINT_UNAVAILABLE];
    (0..load.placements)
        .map(|i| {
            let z = i % zones;
            let (values, number, expect) = match (i / zones) % 3 {
                1 => {
                    let n = (size(z) / 5).max(1);
                    (vec![zone(z)], Some(n as i32), n)
                }
                2 => (vec![zone(z), zone(z + 1)], None, size(z) + size(z + 1)),
                _ => (vec![zone(z)], None, size(z)),
            };
            let selector = LabelSelector {
                match_expressions: vec![SelectorRequirement {
                    key: "zone".into(),
                    operator: "In".into(),
                    values,
                }],
                ..Default::default()
            };
            let name = format!("p-{i:03}");
            (placement(&name, selector, number, &tolerate), expect)
        })
        .collect()
}

/// Re-deciding after one label change: `load.clusters` cluster records over
/// `load.zones` zones, `load.placements` placements; then `load.relabels` times one
/// cluster moves to another zone, timed from its label `PUT` until the decisions of the
/// placement of its old zone (`p-<old>`) no longer list it and those of its new zone's
/// (`p-<new>`) do.
pub async fn redecide(
    admin: &HubClient,
    hub_pid: u32,
    load: &RedecideLoad,
) -> anyhow::Result<RedecideReport> {
    if load.zones < 2 || load.placements < load.zones || load.clusters < load.zones {
        bail!("need two zones or more, a placement per zone and a cluster per zone");
    }
    eprintln!(
        "placement: {} clusters over {} zones, {} placements",
        load.clusters, load.zones, load.placements
    );
    let mut zone_of: Vec<usize> = (0..load.clusters).map(|i| i % load.zones).collect();
    let name = |i: usize| format!("rd-{i:05}");
    let created: Vec<anyhow::Result<()>> = futures::stream::iter((0..load.clusters).map(|i| {
        let labels = BTreeMap::from([("zone".to_string(), format!("z{}", zone_of[i]))]);
        let mut cluster = ManagedCluster::new(&name(i), labels);
        // Placements choose among accepted clusters only, as OCM's do.
        cluster.spec.hub_accepts_client = true;
        async move {
            admin.put_cluster(&cluster).await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let placements = redecide_placements(load);
    for (p, _) in &placements {
        put_placement(admin, p).await?;
    }
    let started = Instant::now();
    for (p, expect) in &placements {
        let name = &p.metadata.name;
        if wait_decisions(admin, name, Duration::from_secs(120), |d| {
            d.len() == *expect
        })
        .await?
        .is_none()
        {
            bail!("placement {name} did not decide {expect} clusters within 120 s");
        }
    }
    let settled_seconds = secs(started.elapsed());
    eprintln!("placement: all decided {settled_seconds:.2} s after the last PUT; relabelling");

    let cpu0 = CpuTime::of(hub_pid)?.total().total();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(load.relabels);
    let mut puts = Vec::with_capacity(load.relabels);
    let mut missed = 0;
    for k in 0..load.relabels {
        // A stride coprime with most fleet sizes: each change moves a different cluster.
        let i = (k * 7919) % load.clusters;
        let (from, to) = (
            zone_of[i],
            (zone_of[i] + 1 + k % (load.zones - 1).max(1)) % load.zones,
        );
        let cluster = name(i);
        let (left, joined) = (format!("p-{from:03}"), format!("p-{to:03}"));
        let (_, left_index) = decisions(admin, &left, None).await?;
        let (_, joined_index) = decisions(admin, &joined, None).await?;
        let t0 = Instant::now();
        admin
            .set_cluster_labels(
                &cluster,
                &BTreeMap::from([("zone".to_string(), Some(format!("z{to}")))]),
            )
            .await?;
        puts.push(t0.elapsed());
        zone_of[i] = to;
        let shown = |placement: String, index: u64, listed: bool| {
            let cluster = cluster.clone();
            async move {
                let deadline = t0 + load.timeout;
                let mut index = index;
                loop {
                    let (d, i) = decisions(admin, &placement, Some(index)).await?;
                    if d.contains(&cluster) == listed {
                        return anyhow::Ok(Some(t0.elapsed()));
                    }
                    if Instant::now() > deadline {
                        return Ok(None);
                    }
                    index = i;
                }
            }
        };
        let (a, b) = tokio::join!(
            shown(left, left_index, false),
            shown(joined, joined_index, true)
        );
        match (a?, b?) {
            (Some(a), Some(b)) => latencies.push(a.max(b)),
            _ => missed += 1,
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = CpuTime::of(hub_pid)?.total().total() - cpu0;
    Ok(RedecideReport {
        clusters: load.clusters,
        placements: load.placements,
        settled_seconds,
        latency_ms: (&Latencies::new(latencies)).into(),
        label_put_ms: (&Latencies::new(puts)).into(),
        missed,
        hub_cpu_seconds: cpu,
        hub_millicores: (cpu * 1000.0 / wall).round(),
        wall_seconds: wall,
    })
}

/// What [`failover`] runs.
#[derive(Debug, Clone)]
pub struct FailoverLoad {
    /// Simulated agents, all labelled `env=prod`.
    pub agents: usize,
    /// The hub's `--lease-interval`, which every agent renews at.
    pub lease_interval: Duration,
    /// The hub's lease grace (what it was started with, or its default).
    pub lease_grace: Duration,
}

/// What [`failover`] measured, each in seconds from the silent agent's last renewal.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    pub agents: usize,
    pub lease_interval_seconds: f64,
    pub lease_grace_seconds: f64,
    /// The cluster chosen first, and the one chosen after it fell silent.
    pub chosen: String,
    pub replacement: Option<String>,
    /// Until the hub tainted the silent cluster unreachable.
    pub tainted_after: Option<f64>,
    /// Until the placement's decisions named the replacement.
    pub decided_after: Option<f64>,
    /// Until the replacement's agent reported the set's work Applied.
    pub applied_after: Option<f64>,
    /// The goal: the lease grace plus 5 s.
    pub goal_seconds: f64,
}

/// Failover: `load.agents` agents, a placement choosing one of them and a set on it;
/// the chosen agent stops (no renewals, no reads), and the time from its last renewal
/// to the set's work Applied on the replacement is measured, with the steps between.
pub async fn failover(
    admin: &HubClient,
    cfg: &ClientConfig,
    load: &FailoverLoad,
) -> anyhow::Result<FailoverReport> {
    let labels = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    let fleet = SimFleet::join(
        admin,
        cfg,
        "fo",
        load.agents,
        32,
        load.lease_interval,
        &labels,
    )
    .await?;
    let limit = load.lease_grace + Duration::from_secs(60);
    put_placement(
        admin,
        &placement("unique", match_labels("env", "prod"), Some(1), &[]),
    )
    .await?;
    let chosen = wait_decisions(admin, "unique", limit, |d| d.len() == 1)
        .await?
        .and_then(|d| d.into_iter().next())
        .context("the placement chose no cluster")?;
    let name = "unique-svc";
    put_set(admin, &set(name, "unique")).await?;
    let deadline = Instant::now() + limit;
    while fleet.applied_at(&chosen, name).await.is_none() {
        if Instant::now() > deadline {
            bail!("the set's work was never Applied on {chosen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim = fleet
        .clusters
        .iter()
        .position(|c| *c == chosen)
        .context("the placement chose a cluster outside the fleet")?;
    eprintln!("placement: failover: {chosen} falls silent");
    fleet.silence(victim);
    // A renewal of the stopped task may still be on its way; the last one is ours.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last_renewal = Instant::now();
    fleet.clients[victim]
        .renew_lease(&chosen, &LeaseRenewal::default())
        .await
        .context("the last renewal")?;
    let deadline = last_renewal + limit;

    let tainted = async {
        let mut index = None;
        loop {
            let opts = ListOptions {
                index,
                wait: Some(BLOCK),
                ..Default::default()
            };
            let c = admin.get_cluster_with(&chosen, &opts).await?;
            if c.value
                .spec
                .taints
                .iter()
                .any(|t| t["key"] == TAINT_UNREACHABLE)
            {
                return anyhow::Ok(Some(last_renewal.elapsed()));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            index = Some(c.index);
        }
    };
    let decided = async {
        let moved = |d: &HashSet<String>| d.len() == 1 && !d.contains(&chosen);
        let d = wait_decisions(admin, "unique", limit, moved).await?;
        anyhow::Ok(d.map(|d| (last_renewal.elapsed(), d.into_iter().next())))
    };
    let (tainted, decided) = tokio::join!(tainted, decided);
    let (tainted, decided) = (tainted?, decided?);
    let replacement = decided.as_ref().and_then(|(_, r)| r.clone());
    let mut applied_after = None;
    if let Some(r) = &replacement {
        loop {
            if let Some(t) = fleet.applied_at(r, name).await {
                applied_after = Some(t.saturating_duration_since(last_renewal));
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(FailoverReport {
        agents: fleet.clusters.len(),
        lease_interval_seconds: load.lease_interval.as_secs_f64(),
        lease_grace_seconds: load.lease_grace.as_secs_f64(),
        chosen,
        replacement,
        tainted_after: tainted.map(secs),
        decided_after: decided.map(|(d, _)| secs(d)),
        applied_after: applied_after.map(secs),
        goal_seconds: (load.lease_grace + Duration::from_secs(5)).as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(clusters: usize, zones: usize, placements: usize) -> RedecideLoad {
        RedecideLoad {
            clusters,
            zones,
            placements,
            relabels: 1,
            timeout: Duration::from_secs(1),
        }
    }

    /// The relabel measure watches `p-<zone>`: it must select exactly that zone, with no
    /// `numberOfClusters`, whatever the sizes.
    #[test]
    fn the_first_placement_of_each_zone_selects_the_whole_zone() {
        for (clusters, zones, placements) in [(1000, 10, 100), (7, 3, 3), (1001, 10, 25)] {
            let ps = redecide_placements(&load(clusters, zones, placements));
            assert_eq!(ps.len(), placements);
            for (z, (p, expect)) in ps.iter().take(zones).enumerate() {
                assert_eq!(p.metadata.name, format!("p-{z:03}"));
                assert_eq!(p.spec.number_of_clusters, None);
                let selector = p.spec.predicates[0]
                    .required_cluster_selector
                    .label_selector
                    .as_ref()
                    .expect("a label selector");
                assert_eq!(selector.match_expressions[0].values, [format!("z{z}")]);
                let members = (0..clusters).filter(|i| i % zones == z).count();
                assert_eq!(*expect, members, "{clusters} clusters, zone {z}");
            }
        }
    }

    /// 1,000 clusters, 10 zones, 100 placements: 40 plain, 30 with `numberOfClusters: 20`,
    /// 30 over two zones.
    #[test]
    fn the_default_layout_mixes_the_three_kinds() {
        let ps = redecide_placements(&load(1000, 10, 100));
        let counted = |n: usize| ps.iter().filter(|(_, e)| *e == n).count();
        assert_eq!((counted(100), counted(20), counted(200)), (40, 30, 30));
        assert!(
            ps.iter()
                .all(|(p, e)| p.spec.number_of_clusters.is_none_or(|n| n as usize == *e))
        );
    }
}
