//! `spec.executor`: what a well-formed executor is (who may set one: `service::executor`).

use api::selector::{validate_dns_label, validate_dns_subdomain};
use api::{EXECUTOR_SERVICE_ACCOUNT, FieldError, ManifestWorkExecutor};

/// Checks `spec.executor` (under `path`, e.g. `spec.executor`): the subject must be a
/// ServiceAccount with a DNS-1123 namespace and name. Every problem is listed.
pub fn validate_executor(executor: Option<&ManifestWorkExecutor>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(executor) = executor else {
        return errs;
    };
    let mut bad = |field: String, message: String| errs.push(FieldError { field, message });
    let Some(subject) = &executor.subject else {
        bad(format!("{path}.subject"), "is required".into());
        return errs;
    };
    let subject_path = format!("{path}.subject");
    if subject.type_ != EXECUTOR_SERVICE_ACCOUNT {
        bad(
            format!("{subject_path}.type"),
            format!(
                "must be {EXECUTOR_SERVICE_ACCOUNT} (the only executor type), not {:?}",
                subject.type_
            ),
        );
    }
    let Some(sa) = &subject.service_account else {
        bad(
            format!("{subject_path}.serviceAccount"),
            "is required: the namespace and name of the ServiceAccount on the managed cluster"
                .into(),
        );
        return errs;
    };
    if let Err(m) = validate_dns_label(&sa.namespace) {
        bad(format!("{subject_path}.serviceAccount.namespace"), m);
    }
    if let Err(m) = validate_dns_subdomain(&sa.name) {
        bad(format!("{subject_path}.serviceAccount.name"), m);
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: Option<&ManifestWorkExecutor>) -> Vec<String> {
        validate_executor(e, "spec.executor")
            .into_iter()
            .map(|f| f.field)
            .collect()
    }

    #[test]
    fn a_service_account_with_valid_names_is_accepted() {
        assert!(fields(None).is_empty());
        let sa = ManifestWorkExecutor::service_account("ops", "deployer.v1");
        assert!(fields(Some(&sa)).is_empty());
    }

    #[test]
    fn each_bad_part_is_named_by_its_path() {
        assert_eq!(
            fields(Some(&ManifestWorkExecutor::default())),
            ["spec.executor.subject"]
        );
        let mut e = ManifestWorkExecutor::service_account("Ops_", "");
        e.subject.as_mut().unwrap().type_ = "User".into();
        assert_eq!(
            fields(Some(&e)),
            [
                "spec.executor.subject.type",
                "spec.executor.subject.serviceAccount.namespace",
                "spec.executor.subject.serviceAccount.name",
            ]
        );
        e.subject.as_mut().unwrap().service_account = None;
        assert_eq!(
            fields(Some(&e)),
            [
                "spec.executor.subject.type",
                "spec.executor.subject.serviceAccount"
            ]
        );
        let text = validate_executor(Some(&e), "spec.executor")[0]
            .message
            .clone();
        assert!(
            text.contains("ServiceAccount") && text.contains("\"User\""),
            "{text}"
        );
    }
}
