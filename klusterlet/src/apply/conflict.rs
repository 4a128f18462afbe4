//! A server-side apply refused because other field managers own some of its fields (409,
//! reason `Conflict`, one `FieldManagerConflict` cause per field): which fields, and whose.

use kube::core::Status;

/// One field of the manifest another field manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConflict {
    /// The field, as the apiserver names it (`.spec.replicas`,
    /// `.spec.template.spec.containers[name="app"].image`).
    pub field: String,
    /// The field manager owning it (`kubectl`, `hpa`...).
    pub manager: String,
}

/// The conflicts of an apiserver answer: none unless it is a 409 with
/// `FieldManagerConflict` causes.
pub fn conflicts(status: &Status) -> Vec<FieldConflict> {
    if status.code != 409 {
        return Vec::new();
    }
    status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .filter(|c| c.reason == "FieldManagerConflict")
        .map(|c| FieldConflict {
            field: c.field.clone(),
            manager: manager_of(&c.message).unwrap_or_else(|| c.message.clone()),
        })
        .collect()
}

/// `conflict with "kubectl" using v1` (or `... with subresource "scale" using ...`):
/// the name in the first quotes.
fn manager_of(message: &str) -> Option<String> {
    let rest = message.split_once("conflict with ")?.1;
    let quoted: String = serde_json::Deserializer::from_str(rest)
        .into_iter::<String>()
        .next()?
        .ok()?;
    Some(quoted)
}

/// The message of a conflicting apply (reason `Conflict`): each field and its manager,
/// then what to do. `None` for any other answer.
pub fn conflict_message(status: &Status) -> Option<String> {
    let found = conflicts(status);
    if found.is_empty() {
        return None;
    }
    let fields: Vec<String> = found
        .iter()
        .map(|c| format!("{} (field manager {:?})", c.field, c.manager))
        .collect();
    Some(format!(
        "conflict: {} owned by another field manager: {}; set updateStrategy.serverSideApply.force to take them over, leave them out of the manifest, or list them in ignoreFields",
        if found.len() == 1 {
            "1 field is"
        } else {
            "fields are"
        },
        fields.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{StatusCause, StatusDetails};

    fn status(causes: Vec<(&str, &str, &str)>) -> Status {
        Status {
            status: None,
            code: 409,
            message: "Apply failed with 2 conflicts: conflict with \"kubectl\" using v1: .data.a"
                .into(),
            reason: "Conflict".into(),
            metadata: None,
            details: Some(StatusDetails {
                name: "cm".into(),
                group: String::new(),
                kind: "configmaps".into(),
                uid: String::new(),
                causes: causes
                    .into_iter()
                    .map(|(reason, message, field)| StatusCause {
                        reason: reason.into(),
                        message: message.into(),
                        field: field.into(),
                    })
                    .collect(),
                retry_after_seconds: 0,
            }),
        }
    }

    #[test]
    fn conflicts_name_each_field_and_manager() {
        let s = status(vec![
            (
                "FieldManagerConflict",
                "conflict with \"kubectl\" using v1",
                ".data.a",
            ),
            (
                "FieldManagerConflict",
                "conflict with \"hpa\" with subresource \"scale\" using apps/v1",
                ".spec.replicas",
            ),
            ("Other", "x", ".y"),
        ]);
        assert_eq!(
            conflicts(&s),
            vec![
                FieldConflict {
                    field: ".data.a".into(),
                    manager: "kubectl".into()
                },
                FieldConflict {
                    field: ".spec.replicas".into(),
                    manager: "hpa".into()
                },
            ]
        );
        let message = conflict_message(&s).unwrap();
        assert!(
            message.contains(
                ".data.a (field manager \"kubectl\"), .spec.replicas (field manager \"hpa\")"
            ),
            "{message}"
        );
    }

    #[test]
    fn other_answers_are_not_conflicts() {
        let mut s = status(vec![]);
        assert!(conflict_message(&s).is_none());
        s = status(vec![("FieldManagerConflict", "odd text", ".a")]);
        assert_eq!(conflicts(&s)[0].manager, "odd text");
        s.code = 422;
        assert!(conflicts(&s).is_empty());
        assert_eq!(
            manager_of("conflict with \"a\\\"b\" using v1").as_deref(),
            Some("a\"b")
        );
    }
}
