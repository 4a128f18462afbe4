//! `agentbench rules500`: what `conditionRules` cost the apply of a big work, and the rule
//! every idle work gets with `agentbench idle --cel-rules` (issue 18).

use std::time::Instant;

use anyhow::{Context, bail};
use api::ManifestWork;
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    Fleet, FleetOptions, Observe, Put, Rules500Args, clock_ticks_per_second, cpu_ticks, median,
    round3,
};

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

/// The rule with the work's name in its expression too: a text no earlier run used, so
/// neither the hub's verdicts nor the agent's programs are cached yet.
fn fresh_rule(mut rule: Value, work: &str) -> Value {
    if let Some(Value::String(text)) = rule.pointer_mut("/conditionRules/0/celExpressions/0") {
        *text = format!("{text} && object.metadata.namespace == '{work}'");
    }
    rule
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

/// How long after each run its processes' CPU is still counted for it.
const CPU_TAIL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Serialize)]
struct Series {
    how: &'static str,
    seconds: Vec<f64>,
    median_seconds: f64,
    /// CPU of each process (hub, klusterlet, apiserver) per run, median over the runs, in
    /// ms: where the time with rules goes.
    median_cpu_ms: Cpu,
}

/// CPU (user + system) spent by each process during one run, in ms.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Cpu {
    hub: f64,
    klusterlet: f64,
    apiserver: f64,
    /// This bench (it builds, sends and parses the work, and parses the answers).
    bench: f64,
}

impl Cpu {
    fn median(runs: &[Cpu]) -> Cpu {
        let of = |f: fn(&Cpu) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Cpu {
            hub: of(|c| c.hub),
            klusterlet: of(|c| c.klusterlet),
            apiserver: of(|c| c.apiserver),
            bench: of(|c| c.bench),
        }
    }
}

/// The processes whose CPU a run counts, and the ticks each had spent so far.
struct CpuMeter {
    hub: u32,
    klusterlet: u32,
    apiserver: Option<u32>,
    ticks_per_ms: f64,
}

impl CpuMeter {
    async fn of(fleet: &Fleet) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            hub: fleet.hub.pid().context("the hub is not running")?,
            klusterlet: fleet.agent_pid,
            apiserver: fleet
                .cluster
                .pids()
                .into_iter()
                .find(|(name, _)| name.contains("apiserver"))
                .map(|(_, pid)| pid),
            ticks_per_ms: clock_ticks_per_second().await / 1000.0,
        })
    }

    /// Ticks spent so far by (hub, klusterlet, apiserver, this bench).
    fn read(&self) -> anyhow::Result<[u64; 4]> {
        Ok([
            cpu_ticks(self.hub)?,
            cpu_ticks(self.klusterlet)?,
            self.apiserver.map(cpu_ticks).transpose()?.unwrap_or(0),
            cpu_ticks(std::process::id())?,
        ])
    }

    fn since(&self, before: [u64; 4]) -> anyhow::Result<Cpu> {
        let now = self.read()?;
        let ms = |i: usize| now[i].saturating_sub(before[i]) as f64 / self.ticks_per_ms;
        Ok(Cpu {
            hub: ms(0),
            klusterlet: ms(1),
            apiserver: ms(2),
            bench: ms(3),
        })
    }
}

#[derive(Debug, Serialize)]
struct Rules500Report {
    objects: usize,
    runs: usize,
    /// The `wait` of the bench's blocking GETs, in ms.
    get_wait_ms: f64,
    /// Whether each run's rules were texts no earlier run used.
    fresh_expressions: bool,
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
    let fresh = args.fresh_expressions;
    let meter = CpuMeter::of(&fleet).await?;
    let run_one = |label: String, rules: bool| {
        let (fleet, meter) = (&fleet, &meter);
        async move {
            fleet.create_namespace(&label).await?;
            let manifests: Vec<Value> = (0..n)
                .map(|i| super::config_map(&label, &format!("cm-{i:04}"), "x"))
                .collect();
            let configs: Vec<Value> = if rules {
                (0..n)
                    .map(|i| {
                        let rule = cel_rule(&label, &format!("cm-{i:04}"));
                        if fresh {
                            fresh_rule(rule, &label)
                        } else {
                            rule
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let cpu0 = meter.read()?;
            let t0 = Instant::now();
            let put = put_with(fleet, &label, manifests, configs).await?;
            let w = tokio::time::timeout(
                args.run_limit,
                fleet.wait_applied(&label, put.index, observe),
            )
            .await
            .context("an apply exceeded --run-limit")??;
            let seconds = t0.elapsed().as_secs_f64();
            // What the processes still do after Applied (the agent's watchers of the new
            // objects, the bench's own reads) counts for this run, not the next.
            tokio::time::sleep(CPU_TAIL).await;
            let cpu = meter.since(cpu0)?;
            if rules {
                let filled = w.condition("Filled").map(|c| c.status.as_str());
                if filled != Some("True") {
                    bail!("work {label}: Filled is {filled:?}, not True, with its rules");
                }
            }
            anyhow::Ok((seconds, cpu))
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
    let series = |how, runs: &[(f64, Cpu)]| {
        let seconds: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let cpu: Vec<Cpu> = runs.iter().map(|r| r.1).collect();
        Series {
            how,
            median_seconds: median(&seconds),
            seconds: round3(&seconds),
            median_cpu_ms: Cpu::median(&cpu),
        }
    };
    let without_rules = series("no rules", &plain);
    let with_rules = series(
        "a CEL rule with messageExpression on every manifest",
        &ruled,
    );
    let pairs: Vec<f64> = plain.iter().zip(&ruled).map(|(p, r)| r.0 / p.0).collect();
    let report = Rules500Report {
        objects: n,
        runs: args.runs as usize,
        get_wait_ms: args.get_wait.as_secs_f64() * 1000.0,
        fresh_expressions: fresh,
        ratio: with_rules.median_seconds / without_rules.median_seconds,
        mean_pair_ratio: pairs.iter().sum::<f64>() / pairs.len().max(1) as f64,
        without_rules,
        with_rules,
    };
    let mut s = format!(
        "rules500: {n} ConfigMaps, PUT → Applied=True on the hub, {} runs each (GET wait {:?}, {} expressions)\n",
        report.runs,
        args.get_wait,
        if fresh { "fresh" } else { "the same" }
    );
    for series in [&report.without_rules, &report.with_rules] {
        let cpu = &series.median_cpu_ms;
        s += &format!(
            "{}: median {:.3} s, runs {:?} s; median CPU: hub {:.0} ms, klusterlet {:.0} ms, apiserver {:.0} ms, bench {:.0} ms\n",
            series.how,
            series.median_seconds,
            series.seconds,
            cpu.hub,
            cpu.klusterlet,
            cpu.apiserver,
            cpu.bench
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
