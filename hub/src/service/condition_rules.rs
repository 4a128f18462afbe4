//! What a work's `manifestConfigs[].conditionRules` and `deleteOption.ttlSecondsAfterFinished`
//! may say. Every CEL expression is compiled here, so an expression that does not parse is
//! refused with its line and column instead of failing later on every cluster; the verdict
//! is remembered by the text's digest (module `compiled`), so a work PUT again does not
//! parse its rules again.

mod compiled;

use std::collections::BTreeSet;

use api::cel::MAX_CEL_EXPRESSIONS;
use api::selector::validate_label_key;
use api::status::{APPLIED, AVAILABLE, COMPLETE, DEGRADED, DELETING, PROGRESSING, READY};
use api::{ConditionRuleType, FieldError, ManifestWorkSpec};

/// Most condition rules on one manifest.
pub const MAX_CONDITION_RULES: usize = 16;

/// Conditions the agent or the hub set themselves: a rule may not overwrite them.
const RESERVED: &[&str] = &[
    APPLIED,
    AVAILABLE,
    READY,
    PROGRESSING,
    DEGRADED,
    DELETING,
    "StatusFeedbackSynced",
];

/// Every problem of the spec's condition rules and TTL, with field paths from `spec.`.
pub fn check_condition_rules(spec: &ManifestWorkSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut bad = |field: String, message: String| errors.push(FieldError { field, message });
    if let Some(ttl) = spec
        .delete_option
        .as_ref()
        .and_then(|d| d.ttl_seconds_after_finished)
        && ttl < 0
    {
        bad(
            "spec.deleteOption.ttlSecondsAfterFinished".into(),
            format!("{ttl} is negative; it must be 0 or more"),
        );
    }
    for (i, config) in spec.manifest_configs.iter().enumerate() {
        let at = format!("spec.manifestConfigs[{i}].conditionRules");
        if config.condition_rules.len() > MAX_CONDITION_RULES {
            bad(
                at.clone(),
                format!(
                    "{} rules; at most {MAX_CONDITION_RULES} are allowed",
                    config.condition_rules.len()
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for (j, rule) in config.condition_rules.iter().enumerate() {
            let at = format!("{at}[{j}]");
            let condition = match (&rule.type_, rule.condition.as_str()) {
                // OCM's built-in rules only set Complete; an empty name means it.
                (ConditionRuleType::WellKnownConditions, "") => COMPLETE,
                (_, name) => name,
            };
            if condition.is_empty() {
                bad(format!("{at}.condition"), "is required".into());
            } else if let Err(m) = validate_label_key(condition) {
                bad(
                    format!("{at}.condition"),
                    format!("{condition:?} is not a valid condition type: {m}"),
                );
            } else if RESERVED.contains(&condition) {
                bad(
                    format!("{at}.condition"),
                    format!("{condition} is set by the agent itself; name another condition"),
                );
            } else if !seen.insert(condition) {
                bad(
                    format!("{at}.condition"),
                    format!("{condition} is set by an earlier rule of this manifest"),
                );
            }
            match &rule.type_ {
                ConditionRuleType::WellKnownConditions => {
                    if condition != COMPLETE {
                        bad(
                            format!("{at}.condition"),
                            format!(
                                "WellKnownConditions only defines {COMPLETE}, not {condition:?}"
                            ),
                        );
                    }
                    if !rule.cel_expressions.is_empty() {
                        bad(
                            format!("{at}.celExpressions"),
                            "only a CEL rule takes expressions".into(),
                        );
                    }
                }
                ConditionRuleType::Cel => {
                    if rule.cel_expressions.is_empty() {
                        bad(
                            format!("{at}.celExpressions"),
                            "a CEL rule needs at least one expression".into(),
                        );
                    } else if rule.cel_expressions.len() > MAX_CEL_EXPRESSIONS {
                        bad(
                            format!("{at}.celExpressions"),
                            format!(
                                "{} expressions; at most {MAX_CEL_EXPRESSIONS} are allowed",
                                rule.cel_expressions.len()
                            ),
                        );
                    }
                    for (k, text) in rule.cel_expressions.iter().enumerate() {
                        if let Err(m) = compiled::check(text) {
                            bad(format!("{at}.celExpressions[{k}]"), m);
                        }
                    }
                }
                ConditionRuleType::Other(name) => bad(
                    format!("{at}.type"),
                    format!("unknown type {name:?}: WellKnownConditions or CEL"),
                ),
            }
            if !rule.message_expression.is_empty()
                && let Err(m) = compiled::check(&rule.message_expression)
            {
                bad(format!("{at}.messageExpression"), m);
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(spec: serde_json::Value) -> Vec<(String, String)> {
        let spec: ManifestWorkSpec = serde_json::from_value(spec).unwrap();
        check_condition_rules(&spec)
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    fn rules(rules: serde_json::Value) -> serde_json::Value {
        json!({"manifestConfigs": [
            {"resourceIdentifier": {"group": "batch", "resource": "jobs", "name": "j", "namespace": "n"},
             "conditionRules": rules}
        ]})
    }

    const AT: &str = "spec.manifestConfigs[0].conditionRules";

    #[test]
    fn good_rules_pass() {
        let ok = refused(rules(json!([
            {"type": "WellKnownConditions", "condition": "Complete"},
            {"type": "CEL", "condition": "Up", "celExpressions": ["object.status.availableReplicas >= 1"],
             "messageExpression": "result ? 'up' : 'down'"},
            {"type": "CEL", "condition": "example.com/Backed-up", "celExpressions": ["true", "has(object.status)"]}
        ])));
        assert_eq!(ok, []);
        assert_eq!(
            refused(rules(json!([{"type": "WellKnownConditions"}]))),
            [],
            "WellKnownConditions without a condition means Complete"
        );
        assert_eq!(
            refused(json!({"deleteOption": {"ttlSecondsAfterFinished": 0}})),
            []
        );
    }

    #[test]
    fn each_bad_input_is_named() {
        let fields = |v| -> Vec<String> { refused(v).into_iter().map(|(f, _)| f).collect() };
        assert_eq!(
            fields(rules(json!([{"type": "Later", "condition": "X"}]))),
            [format!("{AT}[0].type")]
        );
        assert_eq!(
            fields(rules(json!([{"type": "CEL", "condition": "X"}]))),
            [format!("{AT}[0].celExpressions")]
        );
        assert_eq!(
            fields(rules(
                json!([{"type": "WellKnownConditions", "condition": "Complete", "celExpressions": ["true"]}])
            )),
            [format!("{AT}[0].celExpressions")]
        );
        assert_eq!(
            fields(rules(
                json!([{"type": "WellKnownConditions", "condition": "Done"}])
            )),
            [format!("{AT}[0].condition")]
        );
        assert_eq!(
            fields(rules(json!([{"type": "CEL", "celExpressions": ["true"]}]))),
            [format!("{AT}[0].condition")]
        );
        assert_eq!(
            fields(rules(
                json!([{"type": "CEL", "condition": "not a type!", "celExpressions": ["true"]}])
            )),
            [format!("{AT}[0].condition")]
        );
        assert_eq!(
            fields(rules(
                json!([{"type": "CEL", "condition": "Applied", "celExpressions": ["true"]}])
            )),
            [format!("{AT}[0].condition")]
        );
        assert_eq!(
            fields(rules(json!([
                {"type": "CEL", "condition": "Up", "celExpressions": ["true"]},
                {"type": "CEL", "condition": "Up", "celExpressions": ["false"]}
            ]))),
            [format!("{AT}[1].condition")]
        );
        let too_many: Vec<_> = (0..=MAX_CONDITION_RULES)
            .map(|i| json!({"type": "CEL", "condition": format!("C{i}"), "celExpressions": ["true"]}))
            .collect();
        assert_eq!(fields(rules(json!(too_many))), [AT.to_string()]);
        assert_eq!(
            fields(json!({"deleteOption": {"ttlSecondsAfterFinished": -1}})),
            ["spec.deleteOption.ttlSecondsAfterFinished"]
        );
    }

    #[test]
    fn cel_errors_carry_their_position() {
        let errors = refused(rules(json!([{
            "type": "CEL", "condition": "Up",
            "celExpressions": ["true", "object.status.(availableReplicas"],
            "messageExpression": "'unterminated"
        }])));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, format!("{AT}[0].celExpressions[1]"));
        assert!(
            errors[0]
                .1
                .starts_with("CEL does not compile: line 1, column "),
            "{}",
            errors[0].1
        );
        assert_eq!(errors[1].0, format!("{AT}[0].messageExpression"));
        assert!(errors[1].1.contains("line 1, column "), "{}", errors[1].1);
    }
}
