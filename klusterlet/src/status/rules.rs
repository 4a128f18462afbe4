//! `manifestConfigs[].conditionRules`, as OCM's work agent evaluates them: each rule sets
//! its condition on the manifest from CEL expressions over the live object (`object`).
//!
//! * `CEL`: True when every expression gives `true`, False at the first `false`; an
//!   expression that fails (a missing field, a wrong type) makes it False with reason
//!   `ConditionRuleExpressionError` and the error as message.
//! * `WellKnownConditions`: OCM's built-in `Complete` for Jobs (a `Complete` or `Failed`
//!   condition is True) and Pods (phase `Succeeded` or `Failed`), with OCM's expressions;
//!   other kinds get no condition.
//! * The message is `messageExpression`'s (over `object` and `result`) when it gives a
//!   non-empty string, else `message`, else `Manifest is [not] <condition>`.
//!
//! The work gets each rule-made condition aggregated over the manifests that report it
//! (False wins, then Unknown, else True), so a work whose manifests are all `Complete`
//! is `Complete`; as in OCM, the agent then stops applying it ([`work_complete`]).
//! Expressions are compiled once and cached by their text: a status pass only runs them.
//! A text is compiled through its shape (`api::cel::shape`): the 500 rules of a templated
//! work that differ only in a name cost one parse, not 500.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock, Mutex};

use api::status::COMPLETE;
use api::{Condition, ConditionRule, ConditionRuleType, ManifestCondition, ManifestWorkStatus};
use serde_json::Value;

/// The prefix of every reason a rule sets (OCM's): how rule-made conditions are told apart.
pub const REASON_PREFIX: &str = "ConditionRule";
/// The expressions ran; the condition is their result.
pub const EVALUATED: &str = "ConditionRuleEvaluated";
/// An expression did not compile or failed at run time.
pub const EXPRESSION_ERROR: &str = "ConditionRuleExpressionError";
/// The object could not be given to CEL.
pub const INTERNAL_ERROR: &str = "ConditionRuleInternalError";
/// The rule's type is unknown (the hub refuses it; a work stored before may have one).
pub const INVALID: &str = "ConditionRuleInvalid";
/// Reason of a work condition aggregated from its manifests'.
pub const AGGREGATED: &str = "ConditionRulesAggregated";

/// OCM's `Complete` rule for a Job: finished, successfully or not.
const JOB_COMPLETE: &str = "hasConditions(object.status) ? object.status.conditions.filter(c, c.type == 'Complete' || c.type == 'Failed').exists(c, c.status == 'True') : false";
const JOB_MESSAGE: &str = "result ? \"Job is finished\" : \"Job is not finished\"";
/// OCM's `Complete` rule for a Pod.
const POD_COMPLETE: &str = "object.status.phase in ['Succeeded', 'Failed']";
const POD_MESSAGE: &str = "\"Pod is in phase \" + object.status.phase";

/// Compiled programs kept at most; past it, those unused since the last sweep go.
const MAX_CACHED: usize = 4096;

/// One condition a rule gives, without generation and time (the caller sets those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCondition {
    /// The rule's condition type.
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// One of the `ConditionRule*` reasons.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// The conditions `rules` give for the live object `object` (as JSON, with apiVersion and
/// kind), in rule order.
pub fn evaluate(object: &Value, rules: &[ConditionRule]) -> Vec<RuleCondition> {
    if rules.is_empty() {
        return Vec::new();
    }
    let mut scope = None;
    let mut out = Vec::new();
    for rule in rules {
        let (expressions, message_expression): (Vec<&str>, &str) = match &rule.type_ {
            ConditionRuleType::Cel => (
                rule.cel_expressions.iter().map(String::as_str).collect(),
                &rule.message_expression,
            ),
            ConditionRuleType::WellKnownConditions => {
                let Some((expression, message)) = well_known(object) else {
                    continue;
                };
                let message = if rule.message_expression.is_empty() && rule.message.is_empty() {
                    message
                } else {
                    &rule.message_expression
                };
                (vec![expression], message)
            }
            ConditionRuleType::Other(name) => {
                out.push(RuleCondition {
                    type_: rule.condition.clone(),
                    status: "Unknown",
                    reason: INVALID,
                    message: format!("unrecognized condition rule type {name}"),
                });
                continue;
            }
        };
        let type_ = match (&rule.type_, rule.condition.as_str()) {
            (ConditionRuleType::WellKnownConditions, "") => COMPLETE.to_string(),
            (_, name) => name.to_string(),
        };
        let scope = match scope.get_or_insert_with(|| Scope::new(object)) {
            Ok(scope) => scope,
            Err(e) => {
                out.push(RuleCondition {
                    type_,
                    status: "Unknown",
                    reason: INTERNAL_ERROR,
                    message: e.clone(),
                });
                continue;
            }
        };
        let result = expressions
            .iter()
            .try_fold(true, |all, text| Ok(all && scope.test(text)?));
        let condition = match result {
            Err(e) => RuleCondition {
                type_,
                status: "False",
                reason: EXPRESSION_ERROR,
                message: e,
            },
            Ok(result) => {
                let message = match scope.message(message_expression, result) {
                    Ok(Some(m)) => m,
                    Ok(None) if !rule.message.is_empty() => rule.message.clone(),
                    Ok(None) if result => format!("Manifest is {type_}"),
                    Ok(None) => format!("Manifest is not {type_}"),
                    Err(e) => e,
                };
                RuleCondition {
                    type_,
                    status: if result { "True" } else { "False" },
                    reason: EVALUATED,
                    message,
                }
            }
        };
        out.push(condition);
    }
    out
}

/// The built-in rule's expression and message expression for the object's kind.
fn well_known(object: &Value) -> Option<(&'static str, &'static str)> {
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    match (api_version, kind) {
        (Some("batch/v1"), Some("Job")) => Some((JOB_COMPLETE, JOB_MESSAGE)),
        (Some("v1"), Some("Pod")) => Some((POD_COMPLETE, POD_MESSAGE)),
        _ => None,
    }
}

/// Whether a condition was set by a rule.
pub fn is_rule_made(condition: &Condition) -> bool {
    condition.reason.starts_with(REASON_PREFIX)
}

/// Whether a work's status says it is `Complete` (by its rules) for this generation: OCM's
/// agent then stops applying it.
pub fn work_complete(status: &ManifestWorkStatus, generation: Option<i64>) -> bool {
    api::find_condition(&status.conditions, COMPLETE)
        .is_some_and(|c| c.is_true() && c.observed_generation == generation && is_rule_made(c))
}

/// The rule-made conditions of `previous` for this generation, kept when the object could
/// not be read (a failed apply says nothing new about it), as OCM does.
pub fn carried_over(previous: &[Condition], generation: Option<i64>) -> Vec<Condition> {
    previous
        .iter()
        .filter(|c| is_rule_made(c) && c.observed_generation == generation)
        .cloned()
        .collect()
}

/// The work conditions aggregated from the manifests' rule-made ones, by type in name
/// order: False if any manifest's is False, Unknown if any is Unknown, else True. The
/// message is the manifest's when only one reports the condition.
pub fn aggregate(manifests: &[ManifestCondition]) -> Vec<RuleCondition> {
    #[derive(Default)]
    struct Tally<'a> {
        true_: usize,
        false_: usize,
        unknown: usize,
        message: &'a str,
    }
    let mut by_type: BTreeMap<&str, Tally> = BTreeMap::new();
    for c in manifests
        .iter()
        .flat_map(|m| &m.conditions)
        .filter(|c| is_rule_made(c))
    {
        let tally = by_type.entry(&c.type_).or_default();
        match c.status.as_str() {
            "True" => tally.true_ += 1,
            "False" => tally.false_ += 1,
            _ => tally.unknown += 1,
        }
        if !c.message.is_empty() {
            tally.message = &c.message;
        }
    }
    by_type
        .into_iter()
        .map(|(type_, t)| {
            let total = t.true_ + t.false_ + t.unknown;
            RuleCondition {
                type_: type_.to_string(),
                status: if t.false_ > 0 {
                    "False"
                } else if t.unknown > 0 || t.true_ == 0 {
                    "Unknown"
                } else {
                    "True"
                },
                reason: AGGREGATED,
                message: if total == 1 && !t.message.is_empty() {
                    t.message.to_string()
                } else {
                    format!("Aggregated from {total} manifest conditions")
                },
            }
        })
        .collect()
}

/// A program compiled from one expression text, or why it did not compile.
type Compiled = Arc<Result<api::cel::shape::Runnable, String>>;

struct Cached {
    program: Compiled,
    used: bool,
}

/// Programs by expression text, shared by every work: the same rule on 100 works compiles
/// once, and a status pass never compiles.
static PROGRAMS: LazyLock<Mutex<HashMap<String, Cached>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The compiled program of `text`, compiling it the first time.
fn program(text: &str) -> Compiled {
    let mut cache = PROGRAMS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cache.get_mut(text) {
        c.used = true;
        return c.program.clone();
    }
    if cache.len() >= MAX_CACHED {
        cache.retain(|_, c| std::mem::take(&mut c.used));
    }
    let program = Arc::new(api::cel::shape::compile(text));
    cache.insert(
        text.to_string(),
        Cached {
            program: program.clone(),
            used: true,
        },
    );
    program
}

/// How many programs are cached (for tests).
#[cfg(test)]
fn cached(text: &str) -> bool {
    PROGRAMS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(text)
}

/// The CEL context of one object: `object` bound once for all its rules, with OCM's
/// `hasConditions` function.
struct Scope {
    context: cel::Context<'static, 'static>,
}

impl Scope {
    fn new(object: &Value) -> Result<Scope, String> {
        let value = cel::to_value(object)
            .map_err(|e| format!("the object could not be given to CEL: {e}"))?;
        let mut context = cel::Context::with_env(api::cel::stdlib().clone());
        context.add_variable_from_value("object", value);
        context
            .add_function("hasConditions", has_conditions)
            .map_err(|e| format!("hasConditions could not be declared: {e:?}"))?;
        Ok(Scope { context })
    }

    /// Runs a program in this context. The interpreter is third-party code run on user
    /// input: a panic in it fails the rule, not the agent.
    fn run(&self, text: &str) -> Result<cel::Value, String> {
        let program = program(text);
        let program = program.as_ref().as_ref().map_err(Clone::clone)?;
        match catch_unwind(AssertUnwindSafe(|| program.execute(&self.context))) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("{text}: {e}")),
            Err(_) => Err(format!("{text}: the interpreter panicked")),
        }
    }

    /// A rule expression's boolean.
    fn test(&self, text: &str) -> Result<bool, String> {
        match self.run(text)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(format!(
                "{text}: expected a bool result, got {}",
                other.type_of()
            )),
        }
    }

    /// The message expression's string, `None` when there is none or it gave "".
    fn message(&self, text: &str, result: bool) -> Result<Option<String>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        let mut inner = self.context.new_inner_scope();
        inner.add_variable_from_value("result", result);
        let program = program(text);
        let program = program.as_ref().as_ref().map_err(Clone::clone)?;
        let value = match catch_unwind(AssertUnwindSafe(|| program.execute(&inner))) {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => return Err(format!("{text}: {e}")),
            Err(_) => return Err(format!("{text}: the interpreter panicked")),
        };
        match value {
            cel::Value::String(s) if s.is_empty() => Ok(None),
            cel::Value::String(s) => Ok(Some(s.to_string())),
            other => Err(format!(
                "{text}: expected a string message, got {}",
                other.type_of()
            )),
        }
    }
}

/// OCM's `hasConditions(object.status)`: whether the map has a non-empty `conditions` list.
fn has_conditions(status: cel::Value) -> bool {
    let cel::Value::Map(map) = status else {
        return false;
    };
    matches!(map.get(&cel::objects::Key::from("conditions")), Some(cel::Value::List(l)) if !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> Vec<ConditionRule> {
        serde_json::from_value(v).unwrap()
    }

    fn one(object: &Value, rule: Value) -> RuleCondition {
        let mut got = evaluate(object, &rules(json!([rule])));
        assert_eq!(got.len(), 1, "{got:?}");
        got.remove(0)
    }

    fn job(conditions: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "n"},
               "status": {"conditions": conditions}})
    }

    fn pod(phase: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": {"phase": phase}})
    }

    fn deployment(available: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": 2}, "status": {"replicas": 2, "availableReplicas": available}})
    }

    #[test]
    fn well_known_complete_for_jobs() {
        let rule = json!({"type": "WellKnownConditions", "condition": "Complete"});
        let running = one(&job(json!([])), rule.clone());
        assert_eq!(
            running,
            RuleCondition {
                type_: "Complete".into(),
                status: "False",
                reason: EVALUATED,
                message: "Job is not finished".into()
            }
        );
        let done = one(
            &job(json!([{"type": "Complete", "status": "True"}])),
            rule.clone(),
        );
        assert_eq!(
            (done.status, done.message.as_str()),
            ("True", "Job is finished")
        );
        let failed = one(
            &job(json!([{"type": "Failed", "status": "True"}])),
            rule.clone(),
        );
        assert_eq!(
            failed.status, "True",
            "a failed Job is finished too, as in OCM"
        );
        let suspended = one(&job(json!([{"type": "Suspended", "status": "True"}])), rule);
        assert_eq!(suspended.status, "False");
        // No condition name: Complete.
        let unnamed = one(
            &job(json!([{"type": "Complete", "status": "True"}])),
            json!({"type": "WellKnownConditions", "message": "all done"}),
        );
        assert_eq!(
            (
                unnamed.type_.as_str(),
                unnamed.status,
                unnamed.message.as_str()
            ),
            ("Complete", "True", "all done")
        );
    }

    #[test]
    fn well_known_complete_for_pods_and_nothing_for_others() {
        let rule = json!({"type": "WellKnownConditions", "condition": "Complete"});
        let running = one(&pod("Running"), rule.clone());
        assert_eq!(
            (running.status, running.message.as_str()),
            ("False", "Pod is in phase Running")
        );
        let done = one(&pod("Succeeded"), rule.clone());
        assert_eq!(
            (done.status, done.message.as_str()),
            ("True", "Pod is in phase Succeeded")
        );
        let overridden = one(
            &pod("Succeeded"),
            json!({"type": "WellKnownConditions", "condition": "Complete",
                   "messageExpression": "'ran on ' + object.metadata.name"}),
        );
        assert_eq!(overridden.message, "ran on p");
        assert_eq!(evaluate(&deployment(1), &rules(json!([rule]))), []);
    }

    #[test]
    fn cel_rules_with_messages() {
        let rule = json!({"type": "CEL", "condition": "Up",
                          "celExpressions": ["has(object.status)", "object.status.availableReplicas >= 1"]});
        let up = one(&deployment(1), rule.clone());
        assert_eq!(
            up,
            RuleCondition {
                type_: "Up".into(),
                status: "True",
                reason: EVALUATED,
                message: "Manifest is Up".into()
            }
        );
        let down = one(&deployment(0), rule);
        assert_eq!(
            (down.status, down.message.as_str()),
            ("False", "Manifest is not Up")
        );

        let with_message = json!({"type": "CEL", "condition": "Up", "message": "fixed",
            "celExpressions": ["object.status.availableReplicas >= 1"],
            "messageExpression": "result ? string(object.status.availableReplicas) + ' up' : ''"});
        assert_eq!(one(&deployment(2), with_message.clone()).message, "2 up");
        // An empty message expression result falls back to `message`.
        assert_eq!(one(&deployment(0), with_message).message, "fixed");
    }

    #[test]
    fn run_time_errors_make_the_condition_false_with_the_error() {
        let missing = one(
            &deployment(1),
            json!({"type": "CEL", "condition": "Ready2", "celExpressions": ["object.status.readyReplicas >= 1"]}),
        );
        assert_eq!(
            (missing.status, missing.reason),
            ("False", EXPRESSION_ERROR)
        );
        assert!(
            missing.message.contains("readyReplicas"),
            "{}",
            missing.message
        );
        let not_bool = one(
            &deployment(1),
            json!({"type": "CEL", "condition": "X", "celExpressions": ["object.status.replicas"]}),
        );
        assert_eq!(
            (not_bool.status, not_bool.reason),
            ("False", EXPRESSION_ERROR)
        );
        assert!(
            not_bool.message.contains("expected a bool"),
            "{}",
            not_bool.message
        );
        // A stored rule that does not compile (the hub refuses new ones) says where.
        let broken = one(
            &deployment(1),
            json!({"type": "CEL", "condition": "X", "celExpressions": ["object.status.("]}),
        );
        assert_eq!(broken.status, "False");
        assert!(
            broken.message.contains("line 1, column"),
            "{}",
            broken.message
        );
        // A failing message expression keeps the result and explains itself.
        let bad_message = one(
            &deployment(1),
            json!({"type": "CEL", "condition": "X", "celExpressions": ["true"],
                   "messageExpression": "object.nope"}),
        );
        assert_eq!(bad_message.status, "True");
        assert!(
            bad_message.message.contains("nope"),
            "{}",
            bad_message.message
        );
        let unknown = one(&deployment(1), json!({"type": "Later", "condition": "X"}));
        assert_eq!((unknown.status, unknown.reason), ("Unknown", INVALID));
    }

    #[test]
    fn expressions_are_compiled_once_and_shared() {
        let text = "object.metadata.name == 'cached-once'";
        assert!(!cached(text));
        let first = program(text);
        let second = program(text);
        assert!(Arc::ptr_eq(&first, &second));
        assert!(cached(text));
    }

    #[test]
    fn texts_of_one_shape_keep_their_own_literals() {
        // Compiled through one shape, each text still compares with its own name.
        let rule = |name: &str| {
            json!({"type": "CEL", "condition": "Mine",
                   "celExpressions": [format!("object.metadata.name == '{name}' && object.kind == \"Deployment\"")],
                   "messageExpression": format!("result ? 'is {name}' : \"isn't {name}\"")})
        };
        let mine = one(&deployment(1), rule("d"));
        assert_eq!((mine.status, mine.message.as_str()), ("True", "is d"));
        let other = one(&deployment(1), rule("e"));
        assert_eq!((other.status, other.message.as_str()), ("False", "isn't e"));
    }

    fn manifest(conditions: &[(&str, &str, &str)]) -> ManifestCondition {
        ManifestCondition {
            conditions: conditions
                .iter()
                .map(|(t, s, r)| Condition {
                    type_: t.to_string(),
                    status: s.to_string(),
                    reason: r.to_string(),
                    message: format!("{t} is {s}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_work_is_complete_when_every_reporting_manifest_is() {
        let done = manifest(&[
            ("Applied", "True", "AppliedManifestComplete"),
            ("Complete", "True", EVALUATED),
        ]);
        let running = manifest(&[("Complete", "False", EVALUATED)]);
        let plain = manifest(&[("Applied", "True", "AppliedManifestComplete")]);
        let errored = manifest(&[
            ("Complete", "False", EXPRESSION_ERROR),
            ("Up", "True", EVALUATED),
        ]);

        let all = aggregate(&[done.clone(), done.clone(), plain.clone()]);
        assert_eq!(
            all,
            [RuleCondition {
                type_: "Complete".into(),
                status: "True",
                reason: AGGREGATED,
                message: "Aggregated from 2 manifest conditions".into()
            }],
            "manifests without the rule do not count; Applied is not rule-made"
        );
        let one_done = aggregate(&[done.clone(), plain]);
        assert_eq!(one_done[0].message, "Complete is True");
        assert_eq!(aggregate(&[done.clone(), running])[0].status, "False");
        let mixed = aggregate(&[done, errored]);
        let types: Vec<(&str, &str)> = mixed.iter().map(|c| (c.type_.as_str(), c.status)).collect();
        assert_eq!(types, [("Complete", "False"), ("Up", "True")]);
        let unknown = manifest(&[("Complete", "Unknown", INVALID)]);
        assert_eq!(aggregate(&[unknown])[0].status, "Unknown");
        assert_eq!(aggregate(&[]), []);
    }

    #[test]
    fn a_work_complete_for_its_generation_is_finished() {
        let status = |reason: &str, status: &str, generation: i64| ManifestWorkStatus {
            conditions: vec![Condition {
                type_: COMPLETE.into(),
                status: status.into(),
                reason: reason.into(),
                observed_generation: Some(generation),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(work_complete(&status(AGGREGATED, "True", 2), Some(2)));
        assert!(!work_complete(&status(AGGREGATED, "False", 2), Some(2)));
        assert!(
            !work_complete(&status(AGGREGATED, "True", 1), Some(2)),
            "a new spec is applied"
        );
        assert!(!work_complete(&status("SomethingElse", "True", 2), Some(2)));
        assert!(!work_complete(&ManifestWorkStatus::default(), Some(2)));
    }

    #[test]
    fn only_this_generations_rule_conditions_are_carried_over() {
        let mut kept = Condition {
            type_: "Complete".into(),
            status: "True".into(),
            reason: EVALUATED.into(),
            observed_generation: Some(2),
            ..Default::default()
        };
        let mut old = kept.clone();
        old.observed_generation = Some(1);
        old.type_ = "Gone".into();
        let applied = Condition {
            type_: "Applied".into(),
            status: "True".into(),
            reason: "AppliedManifestComplete".into(),
            observed_generation: Some(2),
            ..Default::default()
        };
        assert_eq!(
            carried_over(&[kept.clone(), old, applied], Some(2)),
            [kept.clone()]
        );
        kept.observed_generation = Some(3);
        assert_eq!(carried_over(&[kept], Some(2)), []);
    }
}
