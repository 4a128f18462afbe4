//! `agentbench rules500`: what `conditionRules` cost the apply of a big work, and the rule
//! every idle work gets with `agentbench idle --cel-rules` (issue 18).

use std::time::Instant;

use anyhow::{Context, bail};
use api::ManifestWork;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Fleet, FleetOptions, Observe, Put, Rules500Args, median, round3};

/// The `manifestConfigs` entry giving the ConfigMap `name` a CEL rule of its own (its own
/// text, so every one is compiled once), with a message expression.
pub fn cel_rule(namespace: &str, name: &str) -> Value {
    json!({
        "resourceIdentifier": {"group": "", "resource": "configmaps", "name": name, "namespace": namespace},
        "conditionRules": [{
            "type": "CEL", "condition": "Filled",
            "celExpressions": [format!("has(object.data) && size(object.data) > 0 && object.metadata.name == '{name}'")],
            "messageExpression": "result ? 'data of ' + object.metadata.name : 'no data'"
        }]
    })
}

/// PUTs a work with these manifests and manifest configs.
pub async fn put_with(
    fleet: &Fleet,
    name: &str,
    manifests: Vec<Value>,
    configs: Vec<Value>,
) -> anyhow::Result<Put> {
    let mut w = ManifestWork::new(&fleet.cluster_name, name, manifests);
    w.spec.manifest_configs = serde_json::from_value(Value::Array(configs))?;
    let put = fleet.admin.put_work(&w, None).await?;
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

#[derive(Debug, Serialize)]
struct Series {
    how: &'static str,
    seconds: Vec<f64>,
    median_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Rules500Report {
    objects: usize,
    runs: usize,
    without_rules: Series,
    with_rules: Series,
    /// Median with rules / median without.
    ratio: f64,
    /// Mean of the per-run ratios (each pair ran back to back).
    mean_pair_ratio: f64,
}

/// One work of N ConfigMaps without rules and one with a CEL rule (and message expression)
/// on every manifest, PUT → `Applied=True` seen on the hub, pairs back to back and in
/// alternating order, after one untimed warm-up of each.
pub async fn rules500(args: &Rules500Args) -> anyhow::Result<(String, Value)> {
    let fleet = Fleet::start(&FleetOptions {
        resync: args.resync,
        debug_log: false,
    })
    .await?;
    let observe = Observe::Blocking(args.get_wait);
    let n = args.objects as usize;
    let run_one = |label: String, rules: bool| {
        let fleet = &fleet;
        async move {
            fleet.create_namespace(&label).await?;
            let manifests: Vec<Value> = (0..n)
                .map(|i| super::config_map(&label, &format!("cm-{i:04}"), "x"))
                .collect();
            let configs: Vec<Value> = if rules {
                (0..n)
                    .map(|i| cel_rule(&label, &format!("cm-{i:04}")))
                    .collect()
            } else {
                Vec::new()
            };
            let t0 = Instant::now();
            let put = put_with(fleet, &label, manifests, configs).await?;
            let w = tokio::time::timeout(
                args.run_limit,
                fleet.wait_applied(&label, put.index, observe),
            )
            .await
            .context("an apply exceeded --run-limit")??;
            let seconds = t0.elapsed().as_secs_f64();
            if rules {
                let filled = w.condition("Filled").map(|c| c.status.as_str());
                if filled != Some("True") {
                    bail!("work {label}: Filled is {filled:?}, not True, with its rules");
                }
            }
            anyhow::Ok(seconds)
        }
    };
    run_one("warm-plain".into(), false).await?;
    run_one("warm-rules".into(), true).await?;
    let (mut plain, mut ruled) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        eprintln!("run {run}: {n} ConfigMaps without and with a CEL rule each");
        if run % 2 == 1 {
            plain.push(run_one(format!("plain-{run}"), false).await?);
            ruled.push(run_one(format!("rules-{run}"), true).await?);
        } else {
            ruled.push(run_one(format!("rules-{run}"), true).await?);
            plain.push(run_one(format!("plain-{run}"), false).await?);
        }
    }
    let without_rules = Series {
        how: "no rules",
        median_seconds: median(&plain),
        seconds: round3(&plain),
    };
    let with_rules = Series {
        how: "a CEL rule with messageExpression on every manifest",
        median_seconds: median(&ruled),
        seconds: round3(&ruled),
    };
    let pairs: Vec<f64> = plain.iter().zip(&ruled).map(|(p, r)| r / p).collect();
    let report = Rules500Report {
        objects: n,
        runs: args.runs as usize,
        ratio: with_rules.median_seconds / without_rules.median_seconds,
        mean_pair_ratio: pairs.iter().sum::<f64>() / pairs.len().max(1) as f64,
        without_rules,
        with_rules,
    };
    let mut s = format!(
        "rules500: {n} ConfigMaps, PUT → Applied=True on the hub, {} runs each\n",
        report.runs
    );
    for series in [&report.without_rules, &report.with_rules] {
        s += &format!(
            "{}: median {:.3} s, runs {:?} s\n",
            series.how, series.median_seconds, series.seconds
        );
    }
    s += &format!(
        "ratio with / without rules: {:.3} (medians), {:.3} (mean of the pairs: {:?})\n",
        report.ratio,
        report.mean_pair_ratio,
        round3(&pairs)
    );
    Ok((s, serde_json::to_value(&report)?))
}
