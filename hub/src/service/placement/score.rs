//! Scores of feasible clusters: each built-in prioritizer gives [-100, 100], the total is
//! Σ weight × score.

use std::collections::{BTreeSet, HashMap};

use api::ManagedCluster;

/// The built-in prioritizers (OCM's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BuiltIn {
    Balance,
    Steady,
    ResourceAllocatableCpu,
    ResourceAllocatableMemory,
}

impl BuiltIn {
    pub(crate) const NAMES: [&'static str; 4] = [
        "Balance",
        "Steady",
        "ResourceAllocatableCPU",
        "ResourceAllocatableMemory",
    ];

    pub(crate) fn parse(text: &str) -> Option<BuiltIn> {
        match text {
            "Balance" => Some(BuiltIn::Balance),
            "Steady" => Some(BuiltIn::Steady),
            "ResourceAllocatableCPU" => Some(BuiltIn::ResourceAllocatableCpu),
            "ResourceAllocatableMemory" => Some(BuiltIn::ResourceAllocatableMemory),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            BuiltIn::Balance => "Balance",
            BuiltIn::Steady => "Steady",
            BuiltIn::ResourceAllocatableCpu => "ResourceAllocatableCPU",
            BuiltIn::ResourceAllocatableMemory => "ResourceAllocatableMemory",
        }
    }
}

/// Raw scores of every (cluster, prioritizer), row by row, and each cluster's total.
pub(crate) struct Scores {
    width: usize,
    raw: Vec<i64>,
    pub(crate) totals: Vec<i64>,
}

impl Scores {
    /// The raw scores of the cluster at `row`, in prioritizer order.
    pub(crate) fn row(&self, row: usize) -> &[i64] {
        &self.raw[row * self.width..(row + 1) * self.width]
    }
}

/// Scores `clusters` (the feasible ones) with `prioritizers` and their weights.
pub(crate) fn score(
    prioritizers: &[(BuiltIn, i64)],
    clusters: &[&ManagedCluster],
    previous: &BTreeSet<String>,
    load: &HashMap<String, u32>,
) -> Scores {
    let width = prioritizers.len();
    let mut raw = vec![0i64; clusters.len() * width];
    for (column, (builtin, _)) in prioritizers.iter().enumerate() {
        let values = match builtin {
            BuiltIn::Steady => clusters
                .iter()
                .map(|c| {
                    if previous.contains(&c.metadata.name) {
                        100
                    } else {
                        0
                    }
                })
                .collect(),
            BuiltIn::Balance => balance(clusters, load),
            BuiltIn::ResourceAllocatableCpu => resource(clusters, "cpu"),
            BuiltIn::ResourceAllocatableMemory => resource(clusters, "memory"),
        };
        for (row, value) in values.into_iter().enumerate() {
            raw[row * width + column] = value;
        }
    }
    let totals = (0..clusters.len())
        .map(|row| {
            raw[row * width..(row + 1) * width]
                .iter()
                .zip(prioritizers)
                .map(|(score, (_, weight))| score * weight)
                .sum()
        })
        .collect();
    Scores { width, raw, totals }
}

/// 100 for the least loaded, −100 for the most: other placements' decisions per cluster.
fn balance(clusters: &[&ManagedCluster], load: &HashMap<String, u32>) -> Vec<i64> {
    let loads: Vec<i64> = clusters
        .iter()
        .map(|c| i64::from(load.get(&c.metadata.name).copied().unwrap_or(0)))
        .collect();
    let max = loads.iter().copied().max().unwrap_or(0);
    loads
        .into_iter()
        .map(|l| if max == 0 { 100 } else { 100 - 200 * l / max })
        .collect()
}

/// Highest allocatable 100, lowest −100, linear between; missing or unreadable counts as
/// the lowest; all equal gives 0.
fn resource(clusters: &[&ManagedCluster], resource: &str) -> Vec<i64> {
    let values: Vec<Option<f64>> = clusters
        .iter()
        .map(|c| {
            c.status
                .allocatable
                .get(resource)
                .and_then(|q| parse_quantity(q))
        })
        .collect();
    let present = values.iter().flatten().copied();
    let (min, max) = present.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let any_missing = values.iter().any(Option::is_none);
    values
        .into_iter()
        .map(|v| match v {
            None if min > max => 0, // none has a value: all equal
            None => -100,
            Some(_) if max == min => {
                if any_missing {
                    100
                } else {
                    0
                }
            }
            Some(v) => (-100.0 + 200.0 * (v - min) / (max - min)).round() as i64,
        })
        .collect()
}

/// Parses a Kubernetes quantity (`500m`, `4`, `16Gi`, `1.5k`, `1e3`) into its value; None
/// when it is not one.
pub(crate) fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let number_end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '+' || c == '-') && i == 0)))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let power = exponent.strip_prefix(['e', 'E'])?;
            let unsigned = power.trim_start_matches(['+', '-']);
            if unsigned.is_empty()
                || power.len() - unsigned.len() > 1
                || !unsigned.chars().all(|c| c.is_ascii_digit())
            {
                return None;
            }
            10f64.powi(power.parse::<i32>().ok()?)
        }
    };
    let value = number * factor;
    value.is_finite().then_some(value)
}
