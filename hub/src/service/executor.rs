//! `spec.executor`: who may set one (what a well-formed one is: `validate::executor`).
//!
//! An executor makes the agent apply a work as a ServiceAccount of the managed cluster,
//! with that account's rights. Naming a powerful account is borrowing its power, so
//! setting, changing or removing an executor needs more than `write`: an admin, or an API
//! token with the `executor` verb. A write that leaves the executor as it was needs only
//! `write` (a CI token may keep updating the manifests of a work an admin gave an executor).

use api::{ManifestWorkExecutor, Verb};

use super::authn::Principal;
use super::error::{Error, Result};

/// Whether `who` may set, change or remove an executor: admins, and API tokens with the
/// `executor` verb.
pub fn may_set_executor(who: &Principal) -> bool {
    match who {
        Principal::Admin => true,
        Principal::Api { scope, .. } => scope.verbs.contains(&Verb::Executor),
        _ => false,
    }
}

/// Refuses (403) a write of `what` that sets, changes or removes its executor when the
/// writer may not ([`may_set_executor`]); a write that keeps it as it was passes.
pub fn check_executor_change(
    old: Option<&ManifestWorkExecutor>,
    new: Option<&ManifestWorkExecutor>,
    allowed: bool,
    what: &str,
) -> Result<()> {
    if allowed || old == new {
        return Ok(());
    }
    let change = match (old, new) {
        (None, _) => "set",
        (_, None) => "remove",
        _ => "change",
    };
    Err(Error::Forbidden(format!(
        "only admins and tokens with the executor verb may {change} the executor of {what}: it picks the identity the agent applies the manifests as (hub token create --kind api --verbs write,executor)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_of_the_executor_needs_the_verb() {
        let a = ManifestWorkExecutor::service_account("ops", "a");
        let b = ManifestWorkExecutor::service_account("ops", "b");
        // Kept as it was, or never there: `write` is enough.
        assert!(check_executor_change(Some(&a), Some(&a), false, "w").is_ok());
        assert!(check_executor_change(None, None, false, "w").is_ok());
        for (old, new, verb) in [
            (None, Some(&a), "set"),
            (Some(&a), Some(&b), "change"),
            (Some(&a), None, "remove"),
        ] {
            let err = check_executor_change(old, new, false, "manifestwork \"w\"").unwrap_err();
            let Error::Forbidden(text) = err else {
                panic!("not a 403: {err:?}")
            };
            assert!(
                text.contains("executor verb") && text.contains(verb),
                "{text}"
            );
            assert!(check_executor_change(old, new, true, "w").is_ok());
        }
    }

    #[test]
    fn admins_and_executor_tokens_may_set_one() {
        use super::super::authn::ApiScope;
        assert!(may_set_executor(&Principal::Admin));
        let token = |verbs: Vec<Verb>| Principal::Api {
            token_id: "t".into(),
            scope: ApiScope {
                clusters: vec!["c1".into()],
                selector: None,
                verbs,
            },
        };
        assert!(!may_set_executor(&token(vec![Verb::Read, Verb::Write])));
        assert!(may_set_executor(&token(vec![Verb::Write, Verb::Executor])));
        assert!(!may_set_executor(&Principal::Agent {
            cluster: "c1".into()
        }));
    }
}
