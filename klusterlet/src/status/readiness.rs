//! Whether an applied object is up, by kstatus-like rules.

use kube::api::DynamicObject;
use serde_json::Value;

/// Whether the object is up, and why (or why not), by kstatus-like rules:
/// * Deployment: the controller observed its generation, `updatedReplicas`,
///   `availableReplicas` and `replicas` all equal `spec.replicas` (default 1), none
///   unavailable, no progress deadline exceeded;
/// * StatefulSet: `readyReplicas` and `updatedReplicas` equal `spec.replicas` (less a
///   rolling-update partition), `currentRevision == updateRevision` when both are given;
/// * DaemonSet: `numberAvailable` and `updatedNumberScheduled` equal
///   `desiredNumberScheduled`;
/// * Job: `Complete=True` or `succeeded >= completions` (default 1); `Failed=True` is not
///   ready;
/// * Pod: `Ready=True`, or phase `Succeeded`;
/// * PersistentVolumeClaim: phase `Bound`;
/// * CustomResourceDefinition: `Established=True`;
/// * anything else: ready once it exists. An object being deleted is not ready.
pub fn readiness(obj: &DynamicObject) -> (bool, String) {
    let (group, kind) = group_kind(obj);
    if obj.metadata.deletion_timestamp.is_some() {
        return (false, format!("{kind} is being deleted"));
    }
    let data = &obj.data;
    match (group, kind) {
        ("apps", "Deployment") => deployment(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("batch", "Job") => job(data),
        ("", "Pod") => pod(data),
        ("", "PersistentVolumeClaim") => match text(data, "/status/phase") {
            Some("Bound") => (true, "PersistentVolumeClaim is Bound".into()),
            phase => (
                false,
                format!("PersistentVolumeClaim is {}", phase.unwrap_or("Pending")),
            ),
        },
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            match find_condition(data, "Established") {
                Some(c) if c.status == "True" => {
                    (true, "CustomResourceDefinition is Established".into())
                }
                c => (
                    false,
                    format!(
                        "CustomResourceDefinition is not Established{}",
                        c.map(|c| c.explain()).unwrap_or_default()
                    ),
                ),
            }
        }
        (_, "") => (true, "Resource exists".into()),
        (_, kind) => (true, format!("{kind} exists")),
    }
}

/// `(group, kind)` of the object, from its `apiVersion` and `kind`.
fn group_kind(obj: &DynamicObject) -> (&str, &str) {
    match &obj.types {
        Some(t) => (
            t.api_version
                .split_once('/')
                .map(|(g, _)| g)
                .unwrap_or_default(),
            t.kind.as_str(),
        ),
        None => ("", ""),
    }
}

/// `Some(reason)` when the controller has not seen the object's latest spec yet.
fn not_observed(obj: &DynamicObject) -> Option<String> {
    let generation = obj.metadata.generation?;
    let observed = int(&obj.data, "/status/observedGeneration").unwrap_or(0);
    (observed < generation).then(|| {
        format!("the controller has not observed generation {generation} yet (observed {observed})")
    })
}

fn deployment(obj: &DynamicObject) -> (bool, String) {
    if let Some(why) = not_observed(obj) {
        return (false, why);
    }
    let data = &obj.data;
    if let Some(c) = find_condition(data, "Progressing")
        && c.reason == "ProgressDeadlineExceeded"
    {
        return (false, format!("progress deadline exceeded: {}", c.message));
    }
    let replicas = int(data, "/spec/replicas").unwrap_or(1);
    let total = int(data, "/status/replicas").unwrap_or(0);
    let updated = int(data, "/status/updatedReplicas").unwrap_or(0);
    let available = int(data, "/status/availableReplicas").unwrap_or(0);
    let unavailable = int(data, "/status/unavailableReplicas").unwrap_or(0);
    if updated < replicas {
        return (false, format!("{updated} of {replicas} replicas updated"));
    }
    if total > updated {
        return (
            false,
            format!("{} old replicas pending termination", total - updated),
        );
    }
    if available < replicas || unavailable > 0 {
        return (
            false,
            format!("{available} of {replicas} replicas available"),
        );
    }
    (
        true,
        format!("{available} of {replicas} replicas available"),
    )
}

fn stateful_set(obj: &DynamicObject) -> (bool, String) {
    if let Some(why) = not_observed(obj) {
        return (false, why);
    }
    let data = &obj.data;
    let replicas = int(data, "/spec/replicas").unwrap_or(1);
    let total = int(data, "/status/replicas").unwrap_or(0);
    let ready = int(data, "/status/readyReplicas").unwrap_or(0);
    let updated = int(data, "/status/updatedReplicas").unwrap_or(0);
    if ready < replicas {
        return (false, format!("{ready} of {replicas} replicas ready"));
    }
    if total > replicas {
        return (
            false,
            format!("{} extra replicas pending termination", total - replicas),
        );
    }
    if text(data, "/spec/updateStrategy/type").unwrap_or("RollingUpdate") == "RollingUpdate" {
        let partition = int(data, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
        let expected = (replicas - partition).max(0);
        if updated < expected {
            return (false, format!("{updated} of {expected} replicas updated"));
        }
        if partition == 0
            && let (Some(current), Some(update)) = (
                text(data, "/status/currentRevision"),
                text(data, "/status/updateRevision"),
            )
            && current != update
        {
            return (
                false,
                format!("rolling out revision {update} (current {current})"),
            );
        }
    }
    (true, format!("{ready} of {replicas} replicas ready"))
}

fn daemon_set(obj: &DynamicObject) -> (bool, String) {
    if let Some(why) = not_observed(obj) {
        return (false, why);
    }
    let data = &obj.data;
    let Some(desired) = int(data, "/status/desiredNumberScheduled") else {
        return (false, "the controller has not scheduled it yet".into());
    };
    let updated = int(data, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int(data, "/status/numberAvailable").unwrap_or(0);
    let on_delete = text(data, "/spec/updateStrategy/type") == Some("OnDelete");
    if !on_delete && updated < desired {
        return (false, format!("{updated} of {desired} pods updated"));
    }
    if available < desired {
        return (false, format!("{available} of {desired} pods available"));
    }
    (true, format!("{available} of {desired} pods available"))
}

fn job(data: &Value) -> (bool, String) {
    if let Some(c) = find_condition(data, "Failed")
        && c.status == "True"
    {
        return (false, format!("Job failed{}", c.explain()));
    }
    let succeeded = int(data, "/status/succeeded").unwrap_or(0);
    let completions = int(data, "/spec/completions").unwrap_or(1);
    if find_condition(data, "Complete").is_some_and(|c| c.status == "True") {
        return (true, format!("Job complete: {succeeded} succeeded"));
    }
    if succeeded >= completions {
        return (
            true,
            format!("Job complete: {succeeded} of {completions} succeeded"),
        );
    }
    let active = int(data, "/status/active").unwrap_or(0);
    (
        false,
        format!("Job running: {active} active, {succeeded} of {completions} succeeded"),
    )
}

fn pod(data: &Value) -> (bool, String) {
    let phase = text(data, "/status/phase").unwrap_or("Pending");
    match phase {
        "Succeeded" => return (true, "Pod succeeded".into()),
        "Failed" => {
            let reason = text(data, "/status/reason").unwrap_or_default();
            let message = text(data, "/status/message").unwrap_or_default();
            return (
                false,
                format!("Pod failed: {reason} {message}").trim().to_string(),
            );
        }
        _ => {}
    }
    match find_condition(data, "Ready") {
        Some(c) if c.status == "True" => (true, "Pod is Ready".into()),
        c => (
            false,
            format!(
                "Pod is {phase}, not Ready{}",
                c.map(|c| c.explain()).unwrap_or_default()
            ),
        ),
    }
}

/// A condition of an object's `status.conditions`.
struct ObjectCondition<'a> {
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

impl ObjectCondition<'_> {
    /// `: reason: message`, or nothing when both are empty.
    fn explain(&self) -> String {
        match (self.reason.is_empty(), self.message.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!(": {}", self.reason),
            (true, false) => format!(": {}", self.message),
            (false, false) => format!(": {}: {}", self.reason, self.message),
        }
    }
}

fn find_condition<'a>(data: &'a Value, type_: &str) -> Option<ObjectCondition<'a>> {
    let c = data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?;
    let field = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or_default();
    Some(ObjectCondition {
        status: field("status"),
        reason: field("reason"),
        message: field("message"),
    })
}

fn int(data: &Value, pointer: &str) -> Option<i64> {
    data.pointer(pointer).and_then(Value::as_i64)
}

fn text<'a>(data: &'a Value, pointer: &str) -> Option<&'a str> {
    data.pointer(pointer).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{deployment, object};
    use super::*;
    use serde_json::json;

    fn ready(value: Value) -> (bool, String) {
        readiness(&object(value))
    }
    #[test]
    fn deployments_are_ready_when_all_replicas_are_updated_and_available() {
        let (ok, why) = ready(deployment(
            Some(3),
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
        ));
        assert!(ok, "{why}");
        assert_eq!(why, "3 of 3 replicas available");
        // spec.replicas defaults to 1.
        assert!(ready(deployment(None, json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}))).0);
        // Scaled to zero is ready at once.
        assert!(ready(deployment(Some(0), json!({"observedGeneration": 2}))).0);

        let cases = [
            (
                json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
                "not observed generation 2",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}),
                "2 of 3 replicas updated",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
                "1 old replicas pending termination",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1, "unavailableReplicas": 2}),
                "1 of 3 replicas available",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, "unavailableReplicas": 1}),
                "3 of 3 replicas available",
            ),
            (
                json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-1\" has timed out progressing."}]}),
                "progress deadline exceeded: ReplicaSet",
            ),
            (json!({}), "not observed"),
        ];
        for (status, expected) in cases {
            let (ok, why) = ready(deployment(Some(3), status.clone()));
            assert!(!ok, "{status}");
            assert!(why.contains(expected), "{status}: {why}");
        }
    }

    #[test]
    fn stateful_sets_need_ready_updated_replicas_at_the_update_revision() {
        let sts = |spec: Value, status: Value| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "metadata": {"name": "db", "namespace": "ns", "generation": 1},
                   "spec": spec, "status": status})
        };
        let done = json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "db-1", "updateRevision": "db-1"});
        assert!(ready(sts(json!({"replicas": 2}), done.clone())).0);
        let (ok, why) = ready(sts(
            json!({"replicas": 2}),
            json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}),
        ));
        assert!(!ok);
        assert_eq!(why, "1 of 2 replicas ready");
        let (ok, why) = ready(sts(
            json!({"replicas": 2}),
            json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 1}),
        ));
        assert!(!ok);
        assert_eq!(why, "1 of 2 replicas updated");
        let mut rolling = done.clone();
        rolling["updateRevision"] = json!("db-2");
        let (ok, why) = ready(sts(json!({"replicas": 2}), rolling.clone()));
        assert!(!ok);
        assert!(why.contains("db-2"), "{why}");
        // A partition holds some replicas back on purpose.
        let partitioned = json!({"replicas": 2, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}});
        let mut status = rolling;
        status["updatedReplicas"] = json!(1);
        assert!(ready(sts(partitioned, status)).0);
        // Default replicas 1; OnDelete does not wait for updates.
        assert!(
            ready(sts(
                json!({"updateStrategy": {"type": "OnDelete"}}),
                json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 1})
            ))
            .0
        );
        assert!(!ready(sts(json!({}), json!({"observedGeneration": 0}))).0);
    }

    #[test]
    fn daemon_sets_need_every_scheduled_pod_updated_and_available() {
        let ds = |status: Value| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                   "metadata": {"name": "agent", "namespace": "ns", "generation": 3},
                   "spec": {}, "status": status})
        };
        assert!(ready(ds(json!({"observedGeneration": 3, "desiredNumberScheduled": 2, "numberAvailable": 2, "updatedNumberScheduled": 2, "numberReady": 2}))).0);
        let (ok, why) = ready(ds(
            json!({"observedGeneration": 3, "desiredNumberScheduled": 2, "numberAvailable": 1, "updatedNumberScheduled": 2}),
        ));
        assert!(!ok);
        assert_eq!(why, "1 of 2 pods available");
        let (ok, why) = ready(ds(
            json!({"observedGeneration": 3, "desiredNumberScheduled": 2, "numberAvailable": 2, "updatedNumberScheduled": 1}),
        ));
        assert!(!ok);
        assert_eq!(why, "1 of 2 pods updated");
        assert!(!ready(ds(json!({"observedGeneration": 3}))).0);
        assert!(
            !ready(ds(
                json!({"observedGeneration": 2, "desiredNumberScheduled": 0})
            ))
            .0
        );
        assert!(
            ready(ds(
                json!({"observedGeneration": 3, "desiredNumberScheduled": 0})
            ))
            .0
        );
    }

    #[test]
    fn jobs_are_ready_when_complete_and_never_when_failed() {
        let job = |spec: Value, status: Value| {
            json!({"apiVersion": "batch/v1", "kind": "Job",
                   "metadata": {"name": "migrate", "namespace": "ns"},
                   "spec": spec, "status": status})
        };
        assert!(ready(job(json!({}), json!({"succeeded": 1}))).0);
        assert!(
            !ready(job(
                json!({"completions": 3}),
                json!({"succeeded": 2, "active": 1})
            ))
            .0
        );
        assert!(ready(job(json!({"completions": 3}), json!({"succeeded": 3}))).0);
        assert!(
            ready(job(
                json!({"completions": 3}),
                json!({"conditions": [{"type": "Complete", "status": "True"}]})
            ))
            .0
        );
        let (ok, why) = ready(job(json!({}), json!({"active": 1})));
        assert!(!ok);
        assert_eq!(why, "Job running: 1 active, 0 of 1 succeeded");
        let (ok, why) = ready(job(
            json!({}),
            json!({"failed": 6, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
        ));
        assert!(!ok);
        assert_eq!(
            why,
            "Job failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
        );
    }

    #[test]
    fn pods_claims_crds_and_the_rest() {
        let pod = |status: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": status});
        assert!(
            ready(pod(
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
            ))
            .0
        );
        assert!(ready(pod(json!({"phase": "Succeeded"}))).0);
        let (ok, why) = ready(pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [app]"}]}),
        ));
        assert!(!ok);
        assert_eq!(
            why,
            "Pod is Running, not Ready: ContainersNotReady: containers with unready status: [app]"
        );
        let (ok, why) = ready(pod(json!({"phase": "Failed", "reason": "Evicted"})));
        assert!(!ok);
        assert_eq!(why, "Pod failed: Evicted");
        assert!(!ready(pod(json!({}))).0);

        let pvc = |phase: &str| json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"}, "status": {"phase": phase}});
        assert!(ready(pvc("Bound")).0);
        assert_eq!(
            ready(pvc("Pending")),
            (false, "PersistentVolumeClaim is Pending".into())
        );

        let crd = |conditions: Value| json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "a.b"}, "status": {"conditions": conditions}});
        assert!(ready(crd(json!([{"type": "Established", "status": "True"}]))).0);
        assert!(!ready(crd(json!([{"type": "NamesAccepted", "status": "False"}]))).0);

        let (ok, why) = ready(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}),
        );
        assert!(ok);
        assert_eq!(why, "ConfigMap exists");
        // Whatever is being deleted is not ready.
        let (ok, why) = ready(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "deletionTimestamp": "2025-01-01T00:00:00Z"}}),
        );
        assert!(!ok);
        assert_eq!(why, "ConfigMap is being deleted");
    }
}
