use super::*;
use serde_json::json;

fn rule(condition: &str, paths: &[&str]) -> IgnoreField {
    IgnoreField {
        condition: condition.into(),
        json_paths: paths.iter().map(|p| p.to_string()).collect(),
        extra: Default::default(),
    }
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [
            {"name": "app", "image": image}, {"name": "side", "image": "side:1"}]}}},
    })
}

/// The live object with `managedFields` entries (manager, fieldsV1).
fn live(mut object: Value, managers: &[(&str, Value)]) -> Value {
    let entries: Vec<Value> = managers
        .iter()
        .map(|(m, f)| json!({"manager": m, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": f}))
        .collect();
    object["metadata"]["managedFields"] = Value::Array(entries);
    object
}

fn replicas_owned_by(manager: &str) -> (&str, Value) {
    (manager, json!({"f:spec": {"f:replicas": {}}}))
}

#[test]
fn a_new_object_gets_every_field() {
    let mut body = deployment(3, "app:1");
    prune(
        &mut body,
        None,
        &[rule("OnSpokePresent", &[".spec.replicas"])],
        "klusterlet",
    )
    .unwrap();
    assert_eq!(body, deployment(3, "app:1"));
}

#[test]
fn on_spoke_present_leaves_a_field_another_manager_owns_to_it() {
    let rules = [rule("OnSpokePresent", &[".spec.replicas"])];
    let spoke = live(deployment(7, "app:1"), &[replicas_owned_by("hpa")]);
    let mut body = deployment(3, "app:2");
    prune(&mut body, Some(&spoke), &rules, "klusterlet").unwrap();
    assert!(body["spec"].get("replicas").is_none(), "{body}");
    // Every other field is still the work's.
    assert_eq!(
        body["spec"]["template"]["spec"]["containers"][0]["image"],
        "app:2"
    );
    assert!(body["metadata"].get("annotations").is_none());
}

#[test]
fn a_field_only_the_agent_owns_is_pinned_not_dropped() {
    // Dropping it would make server-side apply delete it (replicas back to 1).
    let rules = [rule("OnSpokePresent", &[".spec.replicas"])];
    let spoke = live(deployment(5, "app:1"), &[replicas_owned_by("klusterlet")]);
    let mut body = deployment(3, "app:1");
    prune(&mut body, Some(&spoke), &rules, "klusterlet").unwrap();
    assert_eq!(body["spec"]["replicas"], 5);
}

#[test]
fn on_spoke_present_sends_a_field_the_live_object_lacks() {
    let rules = [rule("OnSpokePresent", &[".metadata.annotations.team"])];
    let spoke = live(deployment(1, "app:1"), &[]);
    let mut body = deployment(1, "app:1");
    body["metadata"]["annotations"] = json!({"team": "a"});
    prune(&mut body, Some(&spoke), &rules, "klusterlet").unwrap();
    assert_eq!(body["metadata"]["annotations"]["team"], "a");
}

#[test]
fn on_spoke_change_keeps_a_spoke_change_until_the_work_changes() {
    let rules = [rule("OnSpokeChange", &[".spec.replicas"])];
    let manager = "klusterlet";
    // First apply of an existing object: no record, the work's value goes.
    let mut first = deployment(3, "app:1");
    let spoke = live(deployment(3, "app:1"), &[replicas_owned_by(manager)]);
    prune(&mut first, Some(&spoke), &rules, manager).unwrap();
    assert_eq!(first["spec"]["replicas"], 3);
    let annotation = first["metadata"]["annotations"][LAST_SENT_ANNOTATION].clone();
    assert!(
        annotation.as_str().unwrap().contains("replicas"),
        "{annotation}"
    );

    // An autoscaler moves it to 6 and takes the field.
    let mut spoke = live(deployment(6, "app:1"), &[replicas_owned_by("hpa")]);
    spoke["metadata"]["annotations"] = json!({LAST_SENT_ANNOTATION: annotation});
    let mut again = deployment(3, "app:1");
    prune(&mut again, Some(&spoke), &rules, manager).unwrap();
    assert!(again["spec"].get("replicas").is_none(), "{again}");
    assert_eq!(
        again["metadata"]["annotations"][LAST_SENT_ANNOTATION], annotation,
        "what was last sent stays recorded"
    );

    // The work asks for 4: the hub wins.
    let mut changed = deployment(4, "app:1");
    prune(&mut changed, Some(&spoke), &rules, manager).unwrap();
    assert_eq!(changed["spec"]["replicas"], 4);
    assert_ne!(
        changed["metadata"]["annotations"][LAST_SENT_ANNOTATION],
        annotation
    );
}

#[test]
fn on_spoke_change_sends_an_unchanged_field() {
    let rules = [rule("OnSpokeChange", &[".spec.replicas"])];
    let mut sent = deployment(3, "app:1");
    prune(&mut sent, None, &rules, "klusterlet").unwrap();
    let mut spoke = live(deployment(3, "app:1"), &[replicas_owned_by("klusterlet")]);
    spoke["metadata"]["annotations"] = sent["metadata"]["annotations"].clone();
    let mut body = deployment(3, "app:1");
    prune(&mut body, Some(&spoke), &rules, "klusterlet").unwrap();
    assert_eq!(body["spec"]["replicas"], 3);
}

#[test]
fn list_items_are_found_by_their_keys_in_managed_fields() {
    let rules = [rule(
        "OnSpokePresent",
        &[".spec.template.spec.containers[*].image"],
    )];
    let fields = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
        "k:{\"name\":\"side\"}": {"f:image": {}}}}}}});
    let spoke = live(deployment(1, "app:1"), &[("injector", fields)]);
    let mut body = deployment(1, "app:2");
    prune(&mut body, Some(&spoke), &rules, "klusterlet").unwrap();
    let containers = &body["spec"]["template"]["spec"]["containers"];
    // `side`'s image belongs to the injector; `app`'s only to us: pinned to the live one.
    assert!(containers[1].get("image").is_none(), "{containers}");
    assert_eq!(containers[0]["image"], "app:1");
    assert_eq!(containers[1]["name"], "side");
}

#[test]
fn owners_are_read_from_fields_v1() {
    let object = deployment(1, "a");
    let spoke = live(
        object,
        &[
            ("klusterlet", json!({"f:spec": {"f:replicas": {}}})),
            ("other", json!({"f:metadata": {"f:labels": {}}})),
        ],
    );
    assert!(!owned_by_others(&spoke, "/spec/replicas", "klusterlet"));
    assert!(owned_by_others(&spoke, "/spec/replicas", "someone"));
    // An atomic map owned whole covers what is inside it.
    let mut labelled = spoke.clone();
    labelled["metadata"]["labels"] = json!({"x": "1"});
    assert!(owned_by_others(
        &labelled,
        "/metadata/labels/x",
        "klusterlet"
    ));
    assert!(!owned_by_others(&spoke, "/spec/paused", "klusterlet"));
    assert!(item_key_matches("i:2", &json!(1), "2"));
    assert!(item_key_matches("v:\"a\"", &json!("a"), "0"));
    assert!(!item_key_matches(
        "k:{\"name\":\"x\"}",
        &json!({"name": "y"}),
        "0"
    ));
}

#[test]
fn removals_start_from_the_last_index() {
    let mut body = json!({"a": [{"x": 1}, {"x": 2}, {"x": 3}]});
    let mut paths = vec![tokens("/a/0"), tokens("/a/2")];
    paths.sort_by(|a, b| compare_tokens(b, a));
    for p in paths {
        remove(&mut body, &p);
    }
    assert_eq!(body, json!({"a": [{"x": 2}]}));
}

#[test]
fn hashes_ignore_key_order_and_bad_paths_are_invalid() {
    let a: Value = serde_json::from_str(r#"{"b": 1, "a": [1, {"y": 2, "x": 1}]}"#).unwrap();
    let b: Value = serde_json::from_str(r#"{"a": [1, {"x": 1, "y": 2}], "b": 1}"#).unwrap();
    assert_eq!(hash(&a), hash(&b));
    assert_ne!(hash(&json!(1)), hash(&json!("1")));
    let mut body = deployment(1, "a");
    let err = prune(
        &mut body,
        None,
        &[rule("OnSpokePresent", &["spec[["])],
        "klusterlet",
    )
    .unwrap_err();
    assert_eq!(err.reason, "Invalid");
    assert!(err.message.contains("ignoreFields"), "{}", err.message);
}
