//! `manifestConfigs[].updateStrategy.serverSideApply.ignoreFields`: what the klusterlet
//! can honour (`klusterlet/src/apply/ignore.rs`), refused at the door otherwise.

use api::{ManifestWork, ON_SPOKE_CHANGE, ON_SPOKE_PRESENT, UpdateStrategyType};

/// At most this many `ignoreFields` entries per manifest config.
pub const MAX_IGNORE_FIELDS: usize = 32;
/// At most this many `jsonPaths` per entry.
pub const MAX_JSON_PATHS: usize = 64;
/// The longest `jsonPaths` entry, in bytes.
pub const MAX_JSON_PATH_LENGTH: usize = 512;

/// Paths (RFC 9535 form) whose removal would leave no object to apply.
const IDENTITY: [&str; 6] = [
    "$",
    "$.apiVersion",
    "$.kind",
    "$.metadata",
    "$.metadata.name",
    "$.metadata.namespace",
];

/// Reports each bad `ignoreFields` entry of the work to `bad` (field path, message): an
/// unknown condition, no or unparseable `jsonPaths`, a path naming the object's identity,
/// OCM's newer `jsonPointers`/`jqPathExpressions` (not supported, so not silently
/// ignored), too many entries, and `ignoreFields` under a strategy other than
/// `ServerSideApply` (OCM has them only there).
pub fn check_ignore_fields(work: &ManifestWork, bad: &mut impl FnMut(String, String)) {
    for (i, c) in work.spec.manifest_configs.iter().enumerate() {
        let Some(strategy) = &c.update_strategy else {
            continue;
        };
        let Some(ssa) = &strategy.server_side_apply else {
            continue;
        };
        if ssa.ignore_fields.is_empty() {
            continue;
        }
        let base = format!("spec.manifestConfigs[{i}].updateStrategy.serverSideApply.ignoreFields");
        if strategy.type_ != UpdateStrategyType::ServerSideApply {
            bad(
                base.clone(),
                format!(
                    "only with updateStrategy.type ServerSideApply (as in OCM), not {:?}",
                    strategy.type_
                ),
            );
        }
        if ssa.ignore_fields.len() > MAX_IGNORE_FIELDS {
            bad(
                base.clone(),
                format!(
                    "at most {MAX_IGNORE_FIELDS} entries, not {}",
                    ssa.ignore_fields.len()
                ),
            );
        }
        for (j, field) in ssa.ignore_fields.iter().enumerate() {
            let at = |f: &str| format!("{base}[{j}]{f}");
            if field.condition != ON_SPOKE_PRESENT && field.condition != ON_SPOKE_CHANGE {
                bad(
                    at(".condition"),
                    format!(
                        "must be {ON_SPOKE_PRESENT} or {ON_SPOKE_CHANGE}, not {:?}",
                        field.condition
                    ),
                );
            }
            for key in field.extra.keys() {
                bad(
                    at(&format!(".{key}")),
                    "not supported: name the fields with jsonPaths".into(),
                );
            }
            if field.json_paths.is_empty() {
                bad(at(".jsonPaths"), "must name at least one field".into());
            }
            if field.json_paths.len() > MAX_JSON_PATHS {
                bad(
                    at(".jsonPaths"),
                    format!(
                        "at most {MAX_JSON_PATHS} paths, not {}",
                        field.json_paths.len()
                    ),
                );
            }
            for (k, path) in field.json_paths.iter().enumerate() {
                if let Some(message) = path_problem(path) {
                    bad(at(&format!(".jsonPaths[{k}]")), message);
                }
            }
        }
    }
}

/// Why a `jsonPaths` entry cannot be used, if it cannot.
fn path_problem(path: &str) -> Option<String> {
    if path.len() > MAX_JSON_PATH_LENGTH {
        return Some(format!("longer than {MAX_JSON_PATH_LENGTH} bytes"));
    }
    if path.trim().is_empty() {
        return Some("must not be empty".into());
    }
    if let Err(e) = api::jsonpath::query(path) {
        return Some(format!("not a JSONPath: {e}"));
    }
    let rfc = api::jsonpath::to_rfc9535(path).ok()?;
    IDENTITY.contains(&rfc.as_str()).then(|| {
        format!("{path:?} names the object itself (apiVersion, kind, name, namespace): it cannot be ignored")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(strategy: serde_json::Value) -> Vec<(String, String)> {
        let work: ManifestWork = serde_json::from_value(json!({
            "metadata": {"name": "w"},
            "spec": {"manifestConfigs": [
                {"resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "a", "namespace": "n"}},
                {"resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "web", "namespace": "n"},
                 "updateStrategy": strategy},
            ]},
        }))
        .unwrap();
        let mut errs = Vec::new();
        check_ignore_fields(&work, &mut |f, m| errs.push((f, m)));
        errs
    }

    #[test]
    fn good_ignore_fields_pass() {
        let errs = refused(
            json!({"type": "ServerSideApply", "serverSideApply": {"ignoreFields": [
                {"condition": "OnSpokePresent", "jsonPaths": [".spec.replicas"]},
                {"condition": "OnSpokeChange", "jsonPaths": [".metadata.annotations.a\\.b/c", ".spec.template.spec.containers[*].image"]},
                {"jsonPaths": [".spec.paused"]},
            ]}}),
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn every_bad_entry_is_named_by_its_path() {
        let errs = refused(
            json!({"type": "Update", "serverSideApply": {"ignoreFields": [
                {"condition": "Always", "jsonPaths": [".spec.replicas"]},
                {"condition": "OnSpokeChange"},
                {"jsonPaths": ["spec[[", "", ".metadata.name", ".spec.ok"], "jqPathExpressions": [".x"]},
            ]}}),
        );
        let base = "spec.manifestConfigs[1].updateStrategy.serverSideApply.ignoreFields";
        let fields: Vec<String> = errs.iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(
            fields,
            [
                base.to_string(),
                format!("{base}[0].condition"),
                format!("{base}[1].jsonPaths"),
                format!("{base}[2].jqPathExpressions"),
                format!("{base}[2].jsonPaths[0]"),
                format!("{base}[2].jsonPaths[1]"),
                format!("{base}[2].jsonPaths[2]"),
            ]
        );
        assert!(errs[0].1.contains("ServerSideApply"), "{}", errs[0].1);
        assert!(
            errs[1].1.contains("OnSpokePresent or OnSpokeChange"),
            "{}",
            errs[1].1
        );
        assert!(errs[4].1.starts_with("not a JSONPath"), "{}", errs[4].1);
    }

    #[test]
    fn sizes_are_bounded() {
        let long = format!(".{}", "a".repeat(MAX_JSON_PATH_LENGTH));
        let many: Vec<String> = (0..=MAX_JSON_PATHS).map(|i| format!(".a{i}")).collect();
        let errs = refused(
            json!({"type": "ServerSideApply", "serverSideApply": {"ignoreFields": [
                {"jsonPaths": [long]}, {"jsonPaths": many},
            ]}}),
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn a_work_with_bad_ignore_fields_is_refused_with_the_paths() {
        let mut work: ManifestWork = serde_json::from_value(json!({
            "metadata": {"name": "w"},
            "spec": {"manifestConfigs": [
                {"resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "web", "namespace": "n"},
                 "updateStrategy": {"type": "ServerSideApply", "serverSideApply": {"ignoreFields": [
                     {"condition": "OnSpokeChange", "jsonPaths": [".spec.replicas", "nope"]}]}}},
            ]},
        }))
        .unwrap();
        let err = super::super::validate_work("c1", "w", &mut work).unwrap_err();
        let crate::service::error::Error::Invalid { fields, .. } = err else {
            panic!("not a 422: {err:?}");
        };
        assert_eq!(fields.len(), 1);
        assert_eq!(
            fields[0].field,
            "spec.manifestConfigs[0].updateStrategy.serverSideApply.ignoreFields[0].jsonPaths[1]"
        );
    }
}
