//! Which clusters a placement may choose at all: accepted and not being deleted, in one of
//! its cluster sets, passing a predicate, and with every taint tolerated.

use api::ManagedCluster;
use api::fleet::CLUSTER_SET_LABEL;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::Compiled;
use super::selector::CelScope;

/// A taint's effect (OCM's three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Not chosen unless tolerated.
    NoSelect,
    /// Chosen only after every cluster without such a taint.
    PreferNoSelect,
    /// Not newly chosen unless tolerated; a cluster already decided keeps its place.
    NoSelectIfNew,
}

impl Effect {
    pub(crate) const NAMES: [&'static str; 3] = ["NoSelect", "PreferNoSelect", "NoSelectIfNew"];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Effect::NoSelect => "NoSelect",
            Effect::PreferNoSelect => "PreferNoSelect",
            Effect::NoSelectIfNew => "NoSelectIfNew",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Effect> {
        match text {
            "NoSelect" => Some(Effect::NoSelect),
            "PreferNoSelect" => Some(Effect::PreferNoSelect),
            "NoSelectIfNew" => Some(Effect::NoSelectIfNew),
            _ => None,
        }
    }
}

/// A checked toleration.
#[derive(Debug, Clone)]
pub(crate) struct TolerationRule {
    /// Empty: every key.
    pub(crate) key: String,
    /// `Exists` (any value) rather than `Equal`.
    pub(crate) exists: bool,
    pub(crate) value: String,
    /// None: every effect.
    pub(crate) effect: Option<Effect>,
    pub(crate) seconds: Option<i64>,
}

impl TolerationRule {
    fn covers(&self, taint: &Taint<'_>) -> bool {
        (self.key.is_empty() || self.key == taint.key)
            && self.effect.is_none_or(|e| e == taint.effect)
            && (self.exists || self.value == taint.value)
    }
}

/// A taint as read from `spec.taints[]`.
struct Taint<'a> {
    key: &'a str,
    value: &'a str,
    effect: Effect,
    time_added: Option<DateTime<Utc>>,
}

impl Taint<'_> {
    fn shown(&self) -> String {
        let effect = self.effect.name();
        if self.value.is_empty() {
            format!("{}:{effect}", self.key)
        } else {
            format!("{}={}:{effect}", self.key, self.value)
        }
    }
}

/// Reads a taint leniently: the hub keeps taints as given, so a malformed one is reported
/// and skipped rather than failing the placement.
fn read_taint(raw: &Value) -> Result<Taint<'_>, String> {
    let key = raw
        .get("key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or("it has no key")?;
    let effect_text = raw
        .get("effect")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("taint {key} has no effect"))?;
    let effect = Effect::parse(effect_text)
        .ok_or_else(|| format!("taint {key} has an unknown effect {effect_text:?}"))?;
    let value = raw.get("value").and_then(Value::as_str).unwrap_or("");
    let time_added = match raw.get("timeAdded") {
        None | Some(Value::Null) => None,
        Some(t) => Some(
            t.as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| format!("taint {key} has an unreadable timeAdded {t}"))?,
        ),
    };
    Ok(Taint {
        key,
        value,
        effect,
        time_added,
    })
}

/// Whether one cluster passes the filters, and why not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filtered {
    /// It may be chosen.
    pub feasible: bool,
    /// It has a `PreferNoSelect` taint not tolerated: chosen only after the others.
    pub prefer_not: bool,
    /// One sentence each: what failed (or, for a feasible cluster, what is worth knowing).
    pub reasons: Vec<String>,
    /// When a toleration that lets it pass runs out.
    pub recheck_at: Option<DateTime<Utc>>,
}

impl Filtered {
    fn rejected(reason: String) -> Filtered {
        Filtered {
            feasible: false,
            reasons: vec![reason],
            ..Filtered::default()
        }
    }
}

impl Compiled {
    /// Whether one cluster passes the filters, and why not (for incremental re-decisions:
    /// the controller asks this for the one cluster that changed). `was_decided`: the
    /// cluster is among this placement's current decisions (for `NoSelectIfNew`).
    pub fn feasible(
        &self,
        cluster: &ManagedCluster,
        was_decided: bool,
        now: DateTime<Utc>,
    ) -> Filtered {
        self.filter_in(cluster, was_decided, now, &mut CelScope::new(), true)
    }

    /// As [`Compiled::feasible`]; without `explain`, a rejected cluster's reasons are left
    /// out (the decision path formats nothing it does not keep).
    pub(crate) fn filter_in(
        &self,
        cluster: &ManagedCluster,
        was_decided: bool,
        now: DateTime<Utc>,
        scope: &mut CelScope,
        explain: bool,
    ) -> Filtered {
        if !cluster.spec.hub_accepts_client {
            return Filtered::rejected(
                "not accepted by the hub (spec.hubAcceptsClient is false)".to_string(),
            );
        }
        if let Some(at) = cluster.metadata.deletion_timestamp {
            return Filtered::rejected(format!("being deleted (since {})", at.to_rfc3339()));
        }
        if !self.cluster_sets.is_empty() {
            let set = cluster.metadata.labels.get(CLUSTER_SET_LABEL);
            if !set.is_some_and(|s| self.cluster_sets.contains(s)) {
                if !explain {
                    return Filtered::default();
                }
                let member = match set {
                    Some(s) => format!("it is in {s}"),
                    None => "it is in none".to_string(),
                };
                return Filtered::rejected(format!(
                    "not in cluster sets [{}] ({member})",
                    self.cluster_sets.join(", ")
                ));
            }
        }
        if !explain && !self.predicates.is_empty() {
            if !self.predicates.iter().any(|p| p.accepts_in(cluster, scope)) {
                return Filtered::default();
            }
        } else if !self.predicates.is_empty() {
            let mut failures = Vec::new();
            for (i, predicate) in self.predicates.iter().enumerate() {
                match predicate.matches_in(cluster, scope) {
                    Ok(()) => {
                        failures.clear();
                        break;
                    }
                    Err(why) => failures.push(format!("predicate {i}: {why}")),
                }
            }
            if !failures.is_empty() {
                return Filtered {
                    feasible: false,
                    reasons: failures,
                    ..Filtered::default()
                };
            }
        }
        self.check_taints(cluster, was_decided, now)
    }

    fn check_taints(
        &self,
        cluster: &ManagedCluster,
        was_decided: bool,
        now: DateTime<Utc>,
    ) -> Filtered {
        let mut out = Filtered {
            feasible: true,
            ..Filtered::default()
        };
        for raw in &cluster.spec.taints {
            let taint = match read_taint(raw) {
                Ok(t) => t,
                Err(why) => {
                    out.reasons
                        .push(format!("a malformed taint was ignored: {why}"));
                    continue;
                }
            };
            match self.toleration_of(&taint, now) {
                Tolerated::Forever => {}
                Tolerated::Until(until) => {
                    out.reasons.push(format!(
                        "taint {} tolerated until {}",
                        taint.shown(),
                        until.to_rfc3339()
                    ));
                    out.recheck_at = Some(out.recheck_at.map_or(until, |r| r.min(until)));
                }
                Tolerated::RanOut(at) => {
                    let when = at.map_or("(the taint has no timeAdded)".to_string(), |t| {
                        format!("at {}", t.to_rfc3339())
                    });
                    // A cluster already chosen keeps its place under NoSelectIfNew even
                    // when the toleration ran out: only new choices are ruled out.
                    if taint.effect == Effect::NoSelectIfNew && was_decided {
                        out.reasons.push(format!(
                            "toleration of {} ran out {when}; kept, as it was already chosen (NoSelectIfNew)",
                            taint.key
                        ));
                    } else {
                        out.feasible = false;
                        out.reasons
                            .push(format!("toleration of {} ran out {when}", taint.key));
                    }
                }
                Tolerated::No => match taint.effect {
                    Effect::NoSelect => {
                        out.feasible = false;
                        out.reasons
                            .push(format!("taint {} not tolerated", taint.shown()));
                    }
                    Effect::NoSelectIfNew if was_decided => out.reasons.push(format!(
                        "taint {} not tolerated; kept, as it was already chosen",
                        taint.shown()
                    )),
                    Effect::NoSelectIfNew => {
                        out.feasible = false;
                        out.reasons.push(format!(
                            "taint {} not tolerated (it was not chosen before)",
                            taint.shown()
                        ));
                    }
                    Effect::PreferNoSelect => {
                        out.prefer_not = true;
                        out.reasons.push(format!(
                            "taint {} not tolerated: chosen only after clusters without it",
                            taint.shown()
                        ));
                    }
                },
            }
        }
        if !out.feasible {
            out.prefer_not = false;
            out.recheck_at = None;
        }
        out
    }

    fn toleration_of(&self, taint: &Taint<'_>, now: DateTime<Utc>) -> Tolerated {
        let mut latest: Option<Option<DateTime<Utc>>> = None;
        for rule in self.tolerations.iter().filter(|r| r.covers(taint)) {
            // tolerationSeconds bounds NoSelect and NoSelectIfNew only (OCM).
            let seconds = match (rule.seconds, taint.effect) {
                (Some(s), Effect::NoSelect | Effect::NoSelectIfNew) => s,
                _ => return Tolerated::Forever,
            };
            let until = match taint.time_added {
                // Without the time it was added, the taint counts as old (OCM reads a
                // missing time as the zero time): the toleration ran out.
                None => None,
                Some(added) => {
                    match Duration::try_seconds(seconds).and_then(|d| added.checked_add_signed(d)) {
                        Some(until) => Some(until),
                        // Beyond the calendar: as good as forever.
                        None => return Tolerated::Forever,
                    }
                }
            };
            latest = Some(match latest {
                None => until,
                Some(l) => l.max(until),
            });
        }
        match latest {
            None => Tolerated::No,
            Some(Some(until)) if until > now => Tolerated::Until(until),
            Some(until) => Tolerated::RanOut(until),
        }
    }
}

enum Tolerated {
    No,
    Forever,
    Until(DateTime<Utc>),
    /// When it ran out (None: the taint has no time it was added).
    RanOut(Option<DateTime<Utc>>),
}
