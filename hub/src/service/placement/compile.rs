//! Checking a Placement's spec and compiling it: every problem is collected with its field
//! path from `spec.`.

use api::FieldError;
use api::fleet::{PlacementSpec, PrioritizerPolicy, SpreadPolicy, Toleration};
use api::selector::{validate_label_key, validate_label_value};

use super::Compiled;
use super::filter::{Effect, TolerationRule};
use super::groups::{ChunkSize, NamedGroup};
use super::score::BuiltIn;
use super::selector::{compile_selector, error};
use super::spread::SpreadRule;

/// Most predicates in one placement.
pub const MAX_PREDICATES: usize = 64;
/// Weights of a prioritizer, both ends included.
const WEIGHTS: std::ops::RangeInclusive<i32> = -10..=10;

impl Compiled {
    /// Checks every field and compiles selectors and CEL. Errors carry field paths from
    /// `spec.` (e.g. `spec.predicates[0].requiredClusterSelector.celSelector.celExpressions[1]`);
    /// a CEL error names its line and column.
    pub fn new(spec: &PlacementSpec) -> Result<Compiled, Vec<FieldError>> {
        let mut errors = Vec::new();
        for (i, set) in spec.cluster_sets.iter().enumerate() {
            let field = format!("spec.clusterSets[{i}]");
            if set.is_empty() {
                errors.push(error(&field, "a cluster set name is required"));
            } else if let Err(m) = validate_label_value(set) {
                errors.push(error(&field, format!("cluster set {set:?}: {m}")));
            }
        }
        let number_of_clusters = match spec.number_of_clusters {
            None => None,
            Some(n) => match usize::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    errors.push(error(
                        "spec.numberOfClusters",
                        format!("{n} is negative; it must be 0 or more"),
                    ));
                    None
                }
            },
        };
        if spec.predicates.len() > MAX_PREDICATES {
            errors.push(error(
                "spec.predicates",
                format!(
                    "{} predicates; at most {MAX_PREDICATES} are allowed",
                    spec.predicates.len()
                ),
            ));
        }
        let mut predicates = Vec::new();
        for (i, predicate) in spec.predicates.iter().enumerate() {
            let path = format!("spec.predicates[{i}].requiredClusterSelector");
            match compile_selector(&predicate.required_cluster_selector, &path) {
                Ok(m) => predicates.push(m),
                Err(e) => errors.extend(e),
            }
        }
        let prioritizers = prioritizers(spec.prioritizer_policy.as_ref(), &mut errors);
        let spread = spread(spec.spread_policy.as_ref(), &mut errors);
        let tolerations = tolerations(&spec.tolerations, &mut errors);
        let mut groups = Vec::new();
        let mut chunk = ChunkSize::default();
        if let Some(strategy) = &spec.decision_strategy {
            let at = "spec.decisionStrategy.groupStrategy";
            let group_strategy = &strategy.group_strategy;
            for (i, group) in group_strategy.decision_groups.iter().enumerate() {
                let path = format!("{at}.decisionGroups[{i}]");
                let name = &group.group_name;
                let name_field = format!("{path}.groupName");
                if name.is_empty() {
                    errors.push(error(&name_field, "a group name is required"));
                } else if let Err(m) = validate_label_value(name) {
                    errors.push(error(&name_field, format!("group name {name:?}: {m}")));
                } else if let Some(j) = group_strategy.decision_groups[..i]
                    .iter()
                    .position(|g| &g.group_name == name)
                {
                    errors.push(error(
                        &name_field,
                        format!("group name {name:?} is already used by decisionGroups[{j}]"),
                    ));
                }
                let selector_path = format!("{path}.groupClusterSelector");
                match compile_selector(&group.group_cluster_selector, &selector_path) {
                    Ok(selector) => groups.push(NamedGroup {
                        name: name.clone(),
                        selector,
                    }),
                    Err(e) => errors.extend(e),
                }
            }
            if let Some(value) = &group_strategy.clusters_per_decision_group {
                match ChunkSize::parse(value, &format!("{at}.clustersPerDecisionGroup")) {
                    Ok(c) => chunk = c,
                    Err(e) => errors.push(e),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let uses_cel = predicates.iter().any(|p| p.uses_cel());
        Ok(Compiled {
            cluster_sets: spec.cluster_sets.clone(),
            predicates,
            uses_cel,
            number_of_clusters,
            prioritizers,
            spread,
            tolerations,
            groups,
            chunk,
        })
    }
}

/// The prioritizers in force and their weights: in `Additive` mode Balance and Steady at
/// weight 1 unless configured, plus what is configured; in `Exact` only what is configured.
/// A weight of 0 turns a prioritizer off.
fn prioritizers(
    policy: Option<&PrioritizerPolicy>,
    errors: &mut Vec<FieldError>,
) -> Vec<(BuiltIn, i64)> {
    let at = "spec.prioritizerPolicy";
    let mode = policy.and_then(|p| p.mode.as_deref()).unwrap_or("Additive");
    let mut chosen: Vec<(BuiltIn, i64)> = match mode {
        "Additive" => vec![(BuiltIn::Balance, 1), (BuiltIn::Steady, 1)],
        "Exact" => Vec::new(),
        other => {
            errors.push(error(
                &format!("{at}.mode"),
                format!("unknown mode {other:?}: Additive or Exact"),
            ));
            Vec::new()
        }
    };
    for (i, config) in policy
        .map(|p| p.configurations.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = format!("{at}.configurations[{i}]");
        let coordinate = &config.score_coordinate;
        let builtin = match coordinate.type_.as_deref().unwrap_or("BuiltIn") {
            "BuiltIn" => match coordinate.built_in.as_deref() {
                Some(name) => BuiltIn::parse(name).ok_or_else(|| {
                    error(
                        &format!("{path}.scoreCoordinate.builtIn"),
                        format!(
                            "unknown prioritizer {name:?}: one of {}",
                            BuiltIn::NAMES.join(", ")
                        ),
                    )
                }),
                None => Err(error(
                    &format!("{path}.scoreCoordinate.builtIn"),
                    format!("required: one of {}", BuiltIn::NAMES.join(", ")),
                )),
            },
            "AddOn" => Err(error(
                &format!("{path}.scoreCoordinate.type"),
                "add-on scores are not served by this hub",
            )),
            other => Err(error(
                &format!("{path}.scoreCoordinate.type"),
                format!("unknown type {other:?}: BuiltIn or AddOn"),
            )),
        };
        let weight = config.weight.unwrap_or(1);
        if !WEIGHTS.contains(&weight) {
            errors.push(error(
                &format!("{path}.weight"),
                format!("{weight} is out of range: -10 to 10"),
            ));
        }
        match builtin {
            Ok(b) => {
                // A later configuration of the same prioritizer replaces the earlier one
                // (and the default weight), as OCM merges them by name.
                chosen.retain(|(c, _)| *c != b);
                chosen.push((b, i64::from(weight)));
            }
            Err(e) => errors.push(e),
        }
    }
    chosen.retain(|(_, w)| *w != 0);
    chosen
}

fn spread(policy: Option<&SpreadPolicy>, errors: &mut Vec<FieldError>) -> Vec<SpreadRule> {
    let mut rules = Vec::new();
    for (i, c) in policy
        .map(|p| p.spread_constraints.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = format!("spec.spreadPolicy.spreadConstraints[{i}]");
        if let Err(m) = validate_label_key(&c.topology_key) {
            errors.push(error(
                &format!("{path}.topologyKey"),
                format!("{:?}: {m}", c.topology_key),
            ));
        }
        let claim = match c.topology_key_type.as_str() {
            "Label" => false,
            "Claim" => true,
            other => {
                errors.push(error(
                    &format!("{path}.topologyKeyType"),
                    format!("unknown type {other:?}: Label or Claim"),
                ));
                false
            }
        };
        let max_skew = c.max_skew.unwrap_or(1);
        if max_skew < 1 {
            errors.push(error(
                &format!("{path}.maxSkew"),
                format!("{max_skew} is less than 1"),
            ));
        }
        let hard = match c.when_unsatisfiable.as_deref().unwrap_or("ScheduleAnyway") {
            "ScheduleAnyway" => false,
            "DoNotSchedule" => true,
            other => {
                errors.push(error(
                    &format!("{path}.whenUnsatisfiable"),
                    format!("unknown value {other:?}: ScheduleAnyway or DoNotSchedule"),
                ));
                false
            }
        };
        rules.push(SpreadRule {
            key: c.topology_key.clone(),
            claim,
            max_skew: i64::from(max_skew),
            hard,
        });
    }
    rules
}

fn tolerations(given: &[Toleration], errors: &mut Vec<FieldError>) -> Vec<TolerationRule> {
    let mut rules = Vec::new();
    for (i, t) in given.iter().enumerate() {
        let path = format!("spec.tolerations[{i}]");
        if !t.key.is_empty()
            && let Err(m) = validate_label_key(&t.key)
        {
            errors.push(error(&format!("{path}.key"), format!("{:?}: {m}", t.key)));
        }
        let exists = match t.operator.as_deref().unwrap_or("Equal") {
            "Equal" => false,
            "Exists" => {
                if !t.value.is_empty() {
                    errors.push(error(
                        &format!("{path}.value"),
                        "must be empty when the operator is Exists",
                    ));
                }
                true
            }
            other => {
                errors.push(error(
                    &format!("{path}.operator"),
                    format!("unknown operator {other:?}: Equal or Exists"),
                ));
                false
            }
        };
        let effect = if t.effect.is_empty() {
            None
        } else {
            match Effect::parse(&t.effect) {
                Some(e) => Some(e),
                None => {
                    errors.push(error(
                        &format!("{path}.effect"),
                        format!(
                            "unknown effect {:?}: one of {} (or empty for all)",
                            t.effect,
                            Effect::NAMES.join(", ")
                        ),
                    ));
                    None
                }
            }
        };
        if let Some(s) = t.toleration_seconds
            && s < 0
        {
            errors.push(error(
                &format!("{path}.tolerationSeconds"),
                format!("{s} is negative"),
            ));
        }
        rules.push(TolerationRule {
            key: t.key.clone(),
            exists,
            value: t.value.clone(),
            effect,
            seconds: t.toleration_seconds,
        });
    }
    rules
}
