//! Facts about the managed cluster that the agent reports to the hub (OCM's cluster
//! claims): Kubernetes version, platform, node count, allocatable CPU and memory.
//!
//! Values as reported:
//! * `kubeversion.open-cluster-management.io`: the apiserver's `gitVersion`, e.g. `v1.33.4`.
//! * `platform.open-cluster-management.io`: the apiserver's `platform`, e.g. `linux/amd64`.
//! * `nodes.fleethub.io`: the number of Node objects, Ready or not, e.g. `3`.
//! * `allocatable-cpu.fleethub.io`: the sum of the Ready nodes' `status.allocatable.cpu` as
//!   a Kubernetes quantity: whole cores when exact (`12`), millicores otherwise (`11500m`).
//! * `allocatable-memory.fleethub.io`: the sum of the Ready nodes'
//!   `status.allocatable.memory` as a Kubernetes quantity in the largest binary unit that is
//!   exact (`48Gi`, `1536Mi`, `1000Ki`), or bytes (`1000000`).
//! * `allocatable-pods.fleethub.io`: the sum of the Ready nodes' `status.allocatable.pods`.
//! * `capacity-{cpu,memory,pods}.fleethub.io`: the same sums of `status.capacity`.
//!
//! The hub turns the six resource claims into OCM's `status.allocatable` and
//! `status.capacity` of the ManagedCluster, which placement reads.

use std::path::Path;
use std::time::Duration;

use api::Claim;
use api::registration::claims;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use tokio::sync::watch;

use crate::{Chain, sleep_or_stop};
use api::retry::Backoff;

/// Failures reading the managed cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("no Kubernetes configuration: {context}{source}")]
    Config {
        /// `PATH: ` of the kubeconfig given, or nothing.
        context: String,
        /// Why kube-rs could not use it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The managed cluster's apiserver failed.
    #[error("the managed cluster's apiserver: {0}")]
    Kube(#[from] crate::KubeError),
}

/// A client of the managed cluster: from `--kubeconfig` when given, otherwise `KUBECONFIG`,
/// `~/.kube/config`, or the in-cluster service account (kube-rs' inference).
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClaimsError> {
    client_from(kube_config(kubeconfig).await?)
}

/// The configuration [`kube_client`] makes its client from (the executor's impersonating
/// clients are made from it too).
pub async fn kube_config(kubeconfig: Option<&Path>) -> Result<kube::Config, ClaimsError> {
    Ok(match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| config_error(Some(path), e))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| config_error(Some(path), e))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| config_error(None, e))?,
    })
}

/// A client of the managed cluster from its configuration.
pub fn client_from(config: kube::Config) -> Result<kube::Client, ClaimsError> {
    kube::Client::try_from(config).map_err(|e| config_error(None, e))
}

fn config_error(
    kubeconfig: Option<&Path>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> ClaimsError {
    ClaimsError::Config {
        context: kubeconfig
            .map(|p| format!("{}: ", p.display()))
            .unwrap_or_default(),
        source: Box::new(source),
    }
}

/// Reads the claims from the managed cluster, sorted by name. The node facts (count, CPU,
/// memory) are optional: an agent that may not list nodes (least privilege) reports the
/// version and platform only, with one warning, instead of failing.
pub async fn read(client: &kube::Client) -> Result<Vec<Claim>, ClaimsError> {
    let version = client
        .apiserver_version()
        .await
        .map_err(|e| crate::KubeError::new("get", "/version", e))?;
    let mut out = vec![
        claim(claims::KUBE_VERSION, version.git_version),
        claim(claims::PLATFORM, version.platform),
    ];
    match node_facts(client).await {
        Ok(facts) => out.extend(facts),
        Err(e) if e.code() == Some(403) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "not reporting node claims (nodes, CPU, memory): {e} (grant `list` on \
                     `nodes` to report them)"
                )
            });
        }
        Err(e) => return Err(e.into()),
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Claims as `name=value` pairs, for logs and messages.
pub fn display(claims: &[Claim]) -> String {
    claims
        .iter()
        .map(|c| format!("{}={}", c.name, c.value))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The number of nodes, and the allocatable resources and capacity of the Ready ones.
async fn node_facts(client: &kube::Client) -> Result<Vec<Claim>, crate::KubeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut facts = NodeFacts::default();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = nodes
            .list(&params)
            .await
            .map_err(|e| crate::KubeError::new("list", "nodes", e))?;
        page.items.iter().for_each(|n| facts.add(n));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(facts.claims())
}

/// Sums over nodes, in thousandths of each resource's unit: `[allocatable, capacity]` of
/// `[cpu, memory, pods]`.
#[derive(Debug, Default)]
struct NodeFacts {
    nodes: u64,
    sums: [[i128; 3]; 2],
}

impl NodeFacts {
    /// Counts a node; only a Ready node adds its resources (OCM's rule: what a NotReady
    /// node offers cannot be scheduled on).
    fn add(&mut self, node: &Node) {
        self.nodes += 1;
        let Some(status) = node.status.as_ref() else {
            return;
        };
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            return;
        }
        for (i, list) in [&status.allocatable, &status.capacity]
            .into_iter()
            .enumerate()
        {
            for (j, resource) in ["cpu", "memory", "pods"].into_iter().enumerate() {
                let value = list.as_ref().and_then(|l| l.get(resource));
                self.sums[i][j] += value.and_then(|q| milli(&q.0)).unwrap_or(0);
            }
        }
    }

    fn claims(&self) -> Vec<Claim> {
        let [a, c] = self.sums;
        vec![
            claim(claims::NODES, self.nodes.to_string()),
            claim(claims::CPU, format_cpu(a[0])),
            claim(claims::MEMORY, format_memory(a[1])),
            claim(claims::PODS, format_count(a[2])),
            claim(claims::CAPACITY_CPU, format_cpu(c[0])),
            claim(claims::CAPACITY_MEMORY, format_memory(c[1])),
            claim(claims::CAPACITY_PODS, format_count(c[2])),
        ]
    }
}

/// Thousandths of a count as a whole number (pods are whole).
fn format_count(milli: i128) -> String {
    (milli / 1000).to_string()
}

fn claim(name: &str, value: impl Into<String>) -> Claim {
    Claim {
        name: name.to_string(),
        value: value.into(),
    }
}

/// A Kubernetes quantity (`500m`, `4`, `16Gi`, `1.5G`, `12e3`) in thousandths of its unit,
/// rounded up; `None` when it is not a quantity.
pub fn milli(quantity: &str) -> Option<i128> {
    let q = quantity.trim();
    let (negative, q) = match q.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, q.strip_prefix('+').unwrap_or(q)),
    };
    let number_len = q
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if fraction.contains('.') || fraction.len() > 30 || whole.len() > 30 {
        return None;
    }
    let digits: i128 = format!("{whole}{fraction}").parse().ok()?;
    // value = digits / 10^fraction.len() * 2^binary * 10^decimal
    let (binary, decimal): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exp if exp.starts_with(['e', 'E']) => (0, exp[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    // Thousandths: one more factor 10^3.
    let decimal = decimal + 3 - i32::try_from(fraction.len()).ok()?;
    if !(-40..=30).contains(&decimal) {
        return None;
    }
    let mut numerator = digits.checked_mul(1i128.checked_shl(binary)?)?;
    let mut denominator: i128 = 1;
    if decimal >= 0 {
        numerator = numerator.checked_mul(10i128.checked_pow(decimal.unsigned_abs())?)?;
    } else {
        denominator = 10i128.checked_pow(decimal.unsigned_abs())?;
    }
    let value = (numerator + denominator - 1) / denominator;
    Some(if negative { -value } else { value })
}

/// Millicores as a quantity: whole cores when exact.
pub fn format_cpu(milli: i128) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// Thousandths of bytes as a quantity in the largest exact binary unit.
pub fn format_memory(milli: i128) -> String {
    let bytes = (milli + 999) / 1000;
    if bytes == 0 {
        return "0".into();
    }
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        let unit = 1i128 << shift;
        if bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Time limit of reading the claims from the managed cluster.
const CLAIMS_TIMEOUT: Duration = Duration::from_secs(30);

/// Re-reads the claims every `interval` and publishes them.
pub async fn claims_loop(
    kube: kube::Client,
    interval: Duration,
    claims: watch::Sender<Option<Vec<Claim>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), interval.max(Duration::from_secs(1)));
    loop {
        let delay = match tokio::time::timeout(CLAIMS_TIMEOUT, read(&kube)).await {
            Ok(Ok(read)) => {
                backoff.reset();
                claims.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&read);
                    if changed {
                        tracing::info!(claims = %self::display(&read), "claims of the managed cluster");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: Option<&str>, cpu: &str, memory: &str, pods: &str) -> Node {
        let resources = serde_json::json!({"cpu": cpu, "memory": memory, "pods": pods});
        let conditions = ready.map(|s| serde_json::json!([{"type": "Ready", "status": s}]));
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"allocatable": resources, "capacity": resources, "conditions": conditions},
        }))
        .unwrap()
    }

    /// Only Ready nodes add resources; every node is counted.
    #[test]
    fn resources_are_summed_over_ready_nodes() {
        let mut facts = NodeFacts::default();
        for n in [
            node(Some("True"), "2", "4Gi", "110"),
            node(Some("True"), "1500m", "4096Mi", "20"),
            node(Some("False"), "64", "1Ti", "500"),
            node(None, "64", "1Ti", "500"),
        ] {
            facts.add(&n);
        }
        let claims = facts.claims();
        let value = |name: &str| {
            claims
                .iter()
                .find(|c| c.name == name)
                .unwrap()
                .value
                .clone()
        };
        assert_eq!(value(claims::NODES), "4");
        assert_eq!(value(claims::CPU), "3500m");
        assert_eq!(value(claims::MEMORY), "8Gi");
        assert_eq!(value(claims::PODS), "130");
        assert_eq!(value(claims::CAPACITY_CPU), "3500m");
        assert_eq!(value(claims::CAPACITY_PODS), "130");
    }

    #[test]
    fn quantities() {
        assert_eq!(milli("4"), Some(4000));
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(milli("1Ki"), Some(1024 * 1000));
        assert_eq!(milli("16Gi"), Some(16 * (1i128 << 30) * 1000));
        assert_eq!(milli("1.5Gi"), Some(3 * (1i128 << 29) * 1000));
        assert_eq!(milli("2G"), Some(2_000_000_000_000));
        assert_eq!(milli("1k"), Some(1_000_000));
        assert_eq!(milli("12e3"), Some(12_000_000));
        assert_eq!(milli("1E"), Some(1_000_000_000_000_000_000_000));
        assert_eq!(milli("100u"), Some(1)); // rounded up
        assert_eq!(milli("1n"), Some(1));
        assert_eq!(milli("-2"), Some(-2000));
        assert_eq!(milli("+3"), Some(3000));
        for bad in ["", "Gi", "1.2.3", "1X", "1e", "abc", "1 Gi"] {
            assert_eq!(milli(bad), None, "{bad}");
        }
    }

    #[test]
    fn cpu_and_memory_formats() {
        assert_eq!(format_cpu(4000), "4");
        assert_eq!(format_cpu(3500), "3500m");
        assert_eq!(format_cpu(0), "0");
        let gi = (1i128 << 30) * 1000;
        assert_eq!(format_memory(16 * gi), "16Gi");
        assert_eq!(format_memory(gi + gi / 2), "1536Mi");
        assert_eq!(format_memory(milli("1000Ki").unwrap()), "1000Ki");
        assert_eq!(format_memory(milli("1000000").unwrap()), "1000000");
        assert_eq!(format_memory(milli("1M").unwrap()), "1000000");
        assert_eq!(format_memory(0), "0");
        // Sums across nodes keep exact binary units.
        let sum = milli("8Gi").unwrap() + milli("8192Mi").unwrap();
        assert_eq!(format_memory(sum), "16Gi");
    }
}
