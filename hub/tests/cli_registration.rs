//! Joining through the `hub` CLI as an admin does it: the real binary as a process against
//! a real `hub serve` (SQLite, its own CA, the `client.yaml` it writes). The agent's side
//! of the handshake is driven from the test with the typed client and a key pair made
//! here, so what is tested is the admin's verbs: `hub token`, `hub get registrations`,
//! `hub accept`, `hub deny`, `hub revoke cluster`, `hub get audit`.

mod common;

use std::time::Duration;

use api::{HubClient, RegistrationRequest, RegistrationState};
use common::HubServe;
use serde_json::Value;

/// A bootstrap token made through the CLI, as `ID.SECRET`.
async fn bootstrap_token(hub: &HubServe, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", "-o", "json"];
    args.extend_from_slice(extra);
    let token = hub.cli(&args).await.json();
    token["token"].as_str().unwrap().to_string()
}

/// Asks to join as `cluster` with a fresh key pair, the way a klusterlet does.
async fn register(agent: &HubClient, cluster: &str) -> Result<api::Registration, api::ClientError> {
    let key = rcgen::KeyPair::generate().unwrap();
    agent
        .register(&RegistrationRequest {
            cluster_name: cluster.to_string(),
            labels: Default::default(),
            claims: Vec::new(),
            public_key: key.public_key_pem(),
        })
        .await
}

/// The value after `flag` in a command line.
fn flag<'a>(line: &'a str, flag: &str) -> &'a str {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == flag)
        .unwrap_or_else(|| panic!("no {flag} in {line:?}"));
    words[at + 1]
}

fn work_yaml(name: &str, cluster: &str) -> String {
    format!(
        "apiVersion: work.open-cluster-management.io/v1
kind: ManifestWork
metadata:
  name: {name}
  namespace: {cluster}
spec:
  workload:
    manifests:
    - apiVersion: v1
      kind: ConfigMap
      metadata: {{name: {name}, namespace: default}}
      data: {{k: v}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_line_registers_and_accept_by_name_joins_the_cluster() {
    let hub = HubServe::start().await;
    let info = hub.client().cluster_info().await.unwrap();

    // The join line, alone on stdout, ready to paste.
    let run = hub
        .cli(&["token", "create", "--ttl", "1h", "--label", "env=ci"])
        .await;
    let line = run.ok().trim_end().to_string();
    assert_eq!(run.stdout.lines().count(), 1, "{run}");
    assert!(line.starts_with("klusterlet join --hub "), "{run}");
    assert!(line.ends_with(" --cluster-name <name>"), "{run}");
    assert_eq!(flag(&line, "--hub"), info.server);
    assert_eq!(flag(&line, "--ca-hash"), info.ca_hash);
    assert!(info.ca_hash.starts_with("sha256:"), "{info:?}");
    let token = flag(&line, "--token");
    let (token_id, _) = token.split_once('.').expect("ID.SECRET");
    assert!(run.stderr.contains(token_id), "{run}");
    assert!(run.stderr.contains("expires in"), "{run}");

    // The token from the line lets an agent ask to join; the request waits for an admin.
    let agent = hub.agent_client(flag(&line, "--hub"), token);
    let reg = register(&agent, "c1").await.unwrap();
    assert_eq!(reg.state, RegistrationState::Pending);
    assert_eq!(reg.token_id, token_id);

    let run = hub.cli(&["get", "registrations"]).await;
    assert_eq!(
        run.table()[0],
        ["ID", "CLUSTER", "STATE", "KEY", "LABELS", "AGE"]
    );
    let row = run.row(&reg.id);
    let key = &reg.public_key_hash["sha256:".len()..][..12];
    assert_eq!(row[1..5], ["c1", "Pending", key, "env=ci"]);
    let listed = hub
        .cli(&["get", "registrations", "-o", "json"])
        .await
        .json();
    assert_eq!(listed["kind"], "RegistrationList");
    assert_eq!(listed["items"][0]["id"], reg.id.as_str());
    let one = hub
        .cli(&["get", "registrations", &reg.id, "-o", "yaml"])
        .await;
    let one: Value = serde_saphyr::from_str(one.ok()).unwrap();
    assert_eq!(one["clusterName"], "c1");

    // Accepting by name: one pending request, so it is that one.
    let run = hub.cli(&["accept", "c1"]).await;
    assert_eq!(
        run.ok(),
        format!("cluster c1 accepted (request {})\n", reg.id)
    );
    let run = hub.cli(&["get", "clusters"]).await;
    assert_eq!(
        run.table()[0],
        ["NAME", "ACCEPTED", "JOINED", "AVAILABLE", "LABELS", "AGE"]
    );
    // Available stays Unknown until the agent's first lease.
    assert_eq!(run.row("c1")[1..5], ["true", "True", "Unknown", "env=ci"]);
    let run = hub.cli(&["get", "clusters", "-o", "wide"]).await;
    assert_eq!(run.table()[0][6..], ["VERSION", "LEASE", "RESOURCEVERSION"]);
    assert_eq!(run.row("c1")[7], "-", "no lease yet: {run}");
    let run = hub.cli(&["get", "registrations", "--cluster", "c1"]).await;
    assert_eq!(run.row(&reg.id)[2], "Accepted");

    // Nothing pending any more: an accepted cluster is fine, an unknown one is not.
    let run = hub.cli(&["accept", "c1"]).await;
    assert_eq!(run.ok(), "cluster c1 is already accepted\n");
    let err = hub.cli(&["accept", "nobody"]).await;
    assert!(
        err.fails(1)
            .contains("cluster nobody has no pending join request"),
        "{err}"
    );
    // Several names: the good one is still accepted, the exit code tells of the other.
    let reg2 = register(&agent, "c2").await.unwrap();
    let run = hub.cli(&["accept", "c2", "nobody"]).await;
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(
        run.stdout,
        format!("cluster c2 accepted (request {})\n", reg2.id)
    );
    // -o json: the decided requests as the API returns them, a RegistrationList for
    // several (as kubectl prints a List); notes and errors stay on stderr.
    let reg3 = register(&agent, "c3").await.unwrap();
    let reg4 = register(&agent, "c4").await.unwrap();
    let run = hub
        .cli(&["accept", "c3", "c4", "c2", "nobody", "-o", "json"])
        .await;
    assert_eq!(run.code, 1, "{run}");
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["kind"], "RegistrationList", "{run}");
    let ids: Vec<&str> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [reg3.id.as_str(), reg4.id.as_str()], "{run}");
    assert_eq!(doc["items"][0]["state"], "Accepted", "{run}");
    assert!(
        run.stderr.contains("cluster c2 is already accepted"),
        "{run}"
    );
    assert!(run.stderr.contains("nobody has no pending"), "{run}");

    // Revoking cuts the agent off and deletes nothing.
    let run = hub.cli(&["revoke", "cluster", "c1"]).await;
    assert_eq!(
        run.ok(),
        "cluster c1 revoked: its agent's credentials no longer work; nothing was deleted\n"
    );
    let run = hub.cli(&["get", "clusters"]).await;
    assert_eq!(run.row("c1")[1..3], ["false", "False"]);
    let err = hub.cli(&["revoke", "cluster", "nope"]).await;
    assert!(err.fails(1).contains("NotFound"), "{err}");

    // The audit log says who did it.
    let run = hub.cli(&["get", "audit"]).await;
    let table = run.table();
    assert_eq!(table[0], ["TIME", "ACTOR", "ACTION", "TARGET", "SOURCE"]);
    let actions: Vec<(&str, &str, &str)> = table[1..]
        .iter()
        .map(|r| (r[1].as_str(), r[2].as_str(), r[3].as_str()))
        .collect();
    let token_target = format!("tokens/{token_id}");
    let reg_target = format!("registrations/{}", reg.id);
    for want in [
        ("admin", "token.create", token_target.as_str()),
        ("admin", "registration.accept", reg_target.as_str()),
        ("admin", "cluster.revoke", "clusters/c1"),
    ] {
        assert!(actions.contains(&want), "{want:?} missing: {run}");
    }
    assert!(
        actions
            .iter()
            .any(|(actor, action, target)| actor.starts_with("bootstrap:")
                && *action == "registration.create"
                && *target == reg_target),
        "{run}"
    );
    // Newest first, and narrowed by target and limit.
    assert_eq!(table[1][2], "cluster.revoke", "{run}");
    let run = hub
        .cli(&["get", "audit", "--target", &token_target, "-o", "json"])
        .await
        .json();
    let items = run["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{run}");
    assert_eq!(items[0]["action"], "token.create");
    let run = hub.cli(&["get", "audit", "--limit", "2"]).await;
    assert_eq!(run.table().len(), 3, "{run}");
    // No secret in the log.
    let all = hub.cli(&["get", "audit", "-o", "wide"]).await;
    let secret = token.split_once('.').unwrap().1;
    assert!(!all.ok().contains(secret), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_asking_for_one_name_are_decided_by_request_id() {
    let hub = HubServe::start().await;
    let token = bootstrap_token(&hub, &[]).await;
    let agent = hub.agent_client(&hub.config().server, &token);
    let first = register(&agent, "dup").await.unwrap();
    let second = register(&agent, "dup").await.unwrap();
    assert_ne!(first.public_key_hash, second.public_key_hash);

    // Two keys are two rows; KEY tells them apart.
    let run = hub.cli(&["get", "registrations"]).await;
    assert_ne!(run.row(&first.id)[3], run.row(&second.id)[3], "{run}");

    // By name it is ambiguous: exit 1, both ids, and how to pick one. Nothing decided.
    for verb in ["accept", "deny"] {
        let err = hub.cli(&[verb, "dup"]).await;
        let msg = err.fails(1);
        assert!(msg.contains("2 pending join requests"), "{err}");
        assert!(msg.contains(&first.id) && msg.contains(&second.id), "{err}");
        assert!(
            msg.contains(&format!("hub {verb} dup --request ID")),
            "{err}"
        );
        assert!(err.stdout.is_empty(), "{err}");
    }

    // --request with another cluster's name is refused; with none or the right one it works.
    let err = hub.cli(&["accept", "other", "--request", &second.id]).await;
    assert!(
        err.fails(1).contains("is from cluster dup, not other"),
        "{err}"
    );
    let run = hub.cli(&["accept", "dup", "--request", &second.id]).await;
    assert_eq!(
        run.ok(),
        format!("cluster dup accepted (request {})\n", second.id)
    );
    // Two NAMEs with one --request is a usage error.
    let err = hub.cli(&["accept", "a", "b", "--request", &first.id]).await;
    err.fails(2);
    // An unknown request id: the hub's 404.
    let err = hub.cli(&["deny", "--request", "no-such-request"]).await;
    assert!(err.fails(1).contains("NotFound"), "{err}");

    // Now one is pending: deny by name takes it.
    let run = hub.cli(&["deny", "dup", "-o", "yaml"]).await;
    let doc: Value = serde_saphyr::from_str(run.ok()).unwrap();
    assert_eq!(doc["id"], first.id.as_str(), "{run}");
    assert_eq!(doc["state"], "Denied", "{run}");
    let run = hub.cli(&["get", "registrations", "--cluster", "dup"]).await;
    assert_eq!(run.row(&first.id)[2], "Denied");
    assert_eq!(run.row(&second.id)[2], "Accepted");
    // Nothing left to deny; a denied request cannot be accepted.
    let err = hub.cli(&["deny", "dup"]).await;
    assert!(err.fails(1).contains("no pending join request"), "{err}");
    let err = hub.cli(&["accept", "--request", &first.id]).await;
    assert!(err.fails(1).contains("Conflict"), "{err}");
    let run = hub.cli(&["get", "clusters"]).await;
    assert_eq!(run.row("dup")[1], "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_wait_blocks_until_the_request_arrives_and_times_out_with_exit_3() {
    let hub = HubServe::start().await;
    let token = bootstrap_token(&hub, &[]).await;
    let agent = hub.agent_client(&hub.config().server, &token);

    // The request arrives half a second after `hub accept --wait` started.
    let late_agent = agent.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        register(&late_agent, "late").await.unwrap()
    });
    let run = hub
        .cli(&["accept", "late", "--wait", "--timeout", "60s"])
        .await;
    let reg = late.await.unwrap();
    assert_eq!(
        run.ok(),
        format!("cluster late accepted (request {})\n", reg.id)
    );
    assert!(run.stderr.contains("waiting"), "{run}");
    assert!(
        run.took < Duration::from_secs(30),
        "woken, not polled: {run}"
    );
    let run = hub.cli(&["get", "clusters", "late"]).await;
    assert_eq!(run.row("late")[1], "true");

    // A name that never asks: exit 3 after the timeout, naming it; the other name that
    // did ask is still accepted.
    let soon_agent = agent.clone();
    let soon = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        register(&soon_agent, "soon").await.unwrap()
    });
    let run = hub
        .cli(&["accept", "ghost", "soon", "--wait", "--timeout", "2s"])
        .await;
    let soon = soon.await.unwrap();
    let msg = run.fails(3);
    assert!(
        msg.contains("timed out after 2s waiting for a join request from: ghost"),
        "{run}"
    );
    assert_eq!(
        run.stdout,
        format!("cluster soon accepted (request {})\n", soon.id)
    );
    assert!(run.took >= Duration::from_secs(2), "{run}");

    // A cluster accepted meanwhile by an auto-accept token counts as accepted.
    let auto = bootstrap_token(&hub, &["--auto-accept"]).await;
    let auto_agent = hub.agent_client(&hub.config().server, &auto);
    let joined = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        register(&auto_agent, "auto").await.unwrap()
    });
    let run = hub
        .cli(&["accept", "auto", "--wait", "--timeout", "60s"])
        .await;
    let joined = joined.await.unwrap();
    assert_eq!(joined.state, RegistrationState::Accepted);
    assert_eq!(
        run.ok(),
        format!("cluster auto is already accepted (request {})\n", joined.id)
    );

    // --timeout belongs to --wait.
    hub.cli(&["accept", "x", "--timeout", "1s"]).await.fails(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_without_secrets_and_revoked_ones_stop_working() {
    let hub = HubServe::start().await;
    let created = hub
        .cli(&[
            "token",
            "create",
            "--max-uses",
            "2",
            "--auto-accept",
            "--label",
            "env=ci",
            "--description",
            "for the ci fleet",
            "-o",
            "json",
        ])
        .await
        .json();
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let secret = token.split_once('.').unwrap().1.to_string();
    assert_eq!(created["kind"], "bootstrap");
    assert_eq!(created["maxUses"], 2);
    // -o yaml carries the token too.
    let run = hub
        .cli(&["token", "create", "--ttl", "10m", "-o", "yaml"])
        .await;
    let yaml: Value = serde_saphyr::from_str(run.ok()).unwrap();
    assert!(yaml["token"].as_str().unwrap().contains('.'), "{run}");
    let api_token = hub
        .cli(&[
            "token",
            "create",
            "--kind",
            "api",
            "--cluster-selector",
            "env=ci",
        ])
        .await;
    assert_eq!(api_token.ok().lines().count(), 1, "{api_token}");
    assert!(
        api_token.stderr.contains("export HUB_TOKEN="),
        "{api_token}"
    );
    let api_secret = api_token
        .stdout
        .trim()
        .split_once('.')
        .unwrap()
        .1
        .to_string();
    // The hint on stderr (CI logs) does not repeat the secret.
    assert!(!api_token.stderr.contains(&api_secret), "{api_token}");

    // The list: both verbs, never a secret.
    let agent = hub.agent_client(&hub.config().server, &token);
    register(&agent, "one").await.unwrap();
    for args in [
        &["token", "list"][..],
        &["get", "tokens"],
        &["token", "list", "-o", "wide"],
        &["get", "tokens", "-o", "json"],
        &["get", "tokens", "-o", "yaml"],
    ] {
        let run = hub.cli(args).await;
        assert!(run.ok().contains(&id), "{run}");
        for s in [&secret, &api_secret] {
            assert!(!run.stdout.contains(s.as_str()), "secret shown: {run}");
        }
    }
    let run = hub.cli(&["token", "list"]).await;
    assert_eq!(
        run.table()[0],
        [
            "ID",
            "KIND",
            "USES",
            "MAX",
            "EXPIRES",
            "AUTO-ACCEPT",
            "LABELS/SCOPE",
            "AGE"
        ]
    );
    let row = run.row(&id);
    assert_eq!(row[1..4], ["bootstrap", "1", "2"]);
    assert_eq!(row[5..7], ["true", "env=ci"]);
    let api_id = api_token.stdout.trim().split_once('.').unwrap().0;
    let row = run.row(api_id);
    assert_eq!(row[1..3], ["api", "-"]);
    assert_eq!(row[4], "<never>");
    assert_eq!(row[6], "selector=env=ci;verbs=read");

    // Revoked: joining with it is 401 and the list no longer has it.
    let run = hub.cli(&["token", "revoke", &id]).await;
    assert_eq!(run.ok(), format!("token {id} revoked\n"));
    let err = register(&agent, "two").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    let run = hub.cli(&["token", "list"]).await;
    assert!(!run.ok().contains(&id), "{run}");
    let err = hub.cli(&["token", "revoke", &id]).await;
    assert!(err.fails(1).contains("NotFound"), "{err}");
    let names = hub
        .cli(&["get", "registrations", "-o", "json"])
        .await
        .json();
    let names: Vec<&str> = names["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["clusterName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one"], "the revoked token left no trace");

    // Flags of the other kind are usage errors, and nothing is created.
    for bad in [
        &["token", "create", "--kind", "api"][..],
        &["token", "create", "--clusters", "a"],
        &[
            "token",
            "create",
            "--kind",
            "api",
            "--clusters",
            "a",
            "--max-uses",
            "1",
        ],
        &["token", "create", "--ttl", "soon"],
        &["token", "create", "--label", "bad key=x"],
    ] {
        hub.cli(bad).await.fails(2);
    }
    let run = hub.cli(&["get", "tokens", "-o", "json"]).await.json();
    assert_eq!(run["items"].as_array().unwrap().len(), 2, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_see_and_touch_only_their_clusters() {
    let hub = HubServe::start().await;
    hub.add_cluster("a", &[]).await;
    hub.add_cluster("b", &[]).await;
    for cluster in ["a", "b"] {
        let file = hub.write(&format!("{cluster}.yaml"), &work_yaml("web", cluster));
        hub.cli(&["apply", "-f", file.to_str().unwrap(), "--cluster", cluster])
            .await
            .ok();
    }
    let run = hub
        .cli(&[
            "token",
            "create",
            "--kind",
            "api",
            "--clusters",
            "a",
            "--verbs",
            "read",
            "--description",
            "ci reads a",
        ])
        .await;
    let ci_token = run.ok().trim().to_string();
    assert!(run.stderr.contains("clusters=a;verbs=read"), "{run}");
    assert!(run.stderr.contains("never expires"), "{run}");
    let as_ci = [("HUB_TOKEN", ci_token.as_str())];

    // Lists across clusters are filtered to the token's scope.
    let run = hub.cli_env(&["get", "works", "-A"], &as_ci).await;
    let table = run.table();
    assert_eq!(table.len(), 2, "only cluster a's work: {run}");
    assert_eq!(table[1][..2], ["a", "web"]);
    let run = hub.cli(&["get", "works", "-A"]).await;
    assert_eq!(run.table().len(), 3, "the admin sees both: {run}");

    // Writing outside the scope, or without the write verb, is 403: exit 4.
    let file = hub.write("b2.yaml", &work_yaml("web", "b"));
    let err = hub
        .cli_env(
            &["apply", "-f", file.to_str().unwrap(), "--cluster", "b"],
            &as_ci,
        )
        .await;
    assert!(err.fails(4).contains("Forbidden"), "{err}");
    let file = hub.write("a2.yaml", &work_yaml("web2", "a"));
    let err = hub
        .cli_env(
            &["apply", "-f", file.to_str().unwrap(), "--cluster", "a"],
            &as_ci,
        )
        .await;
    assert!(err.fails(4).contains("Forbidden"), "{err}");
    // Admin verbs are not for api tokens.
    for args in [
        &["get", "tokens"][..],
        &["get", "registrations"],
        &["get", "audit"],
        &["token", "create"],
        &["accept", "a"],
        &["revoke", "cluster", "a"],
    ] {
        hub.cli_env(args, &as_ci).await.fails(4);
    }
    let run = hub.cli(&["get", "works", "web2", "--cluster", "a"]).await;
    run.fails(1);
    assert_eq!(
        hub.cli(&["get", "works", "web", "--cluster", "b", "-o", "json"])
            .await
            .json()["metadata"]["generation"],
        1,
        "the refused apply changed nothing"
    );
}
