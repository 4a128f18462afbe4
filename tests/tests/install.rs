//! What an operator installs, checked as their tools check it: the systemd units of
//! `deploy/systemd/` pass `systemd-analyze verify` with no warning and stay confined
//! (`systemd-analyze security` exposure at most 2.0 of 10); the alert rules of
//! `deploy/prometheus/` pass `promtool check rules` and name only metrics a running hub
//! serves.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::procs::{HubProcess, binary};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The unit with its `/usr/local/bin/<tool>` replaced by the binary the tests built, since
/// `verify` checks that each command exists.
fn unit_with_built_binaries(unit: &Path, dir: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(unit).unwrap();
    for tool in ["hub", "klusterlet"] {
        text = text.replace(
            &format!("/usr/local/bin/{tool} "),
            &format!("{} ", binary(tool).unwrap().display()),
        );
    }
    let out = dir.join(unit.file_name().unwrap());
    std::fs::write(&out, text).unwrap();
    out
}

#[test]
fn systemd_units_verify_cleanly_and_are_confined() {
    let dir = tempfile::tempdir().unwrap();
    let units: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    assert_eq!(
        units.len(),
        2,
        "a unit for the hub and one for the klusterlet"
    );
    for unit in units {
        let text = std::fs::read_to_string(&unit).unwrap();
        for required in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "StateDirectory=",
            "DynamicUser=yes",
        ] {
            assert!(text.contains(required), "{}: no {required}", unit.display());
        }
        let copy = unit_with_built_binaries(&unit, dir.path());
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze (Debian's systemd; tests/run.sh installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // `verify` exits 0 on unknown keys and bad values: it only warns. Any line that
        // names our file is such a warning.
        let name = copy.file_name().unwrap().to_string_lossy().to_string();
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains(&name)).collect();
        assert!(
            out.status.success() && warnings.is_empty(),
            "systemd-analyze verify {}: {:?}\n{stderr}",
            unit.display(),
            out.status
        );
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
            .arg(&copy)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: exposure above 2.0:\n{}",
            unit.display(),
            report.lines().last().unwrap_or_default()
        );
    }
}

/// `promtool`, as tests/run.sh builds it (`FLEETHUB_PROMTOOL` overrides).
fn promtool() -> PathBuf {
    std::env::var_os("FLEETHUB_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME");
            Path::new(&home).join(".cache/fleethub/tools/promtool")
        })
}

/// Every `hub_...` name in the rules' expressions.
fn metric_names(rules: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in rules.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("hub_") {
            let word: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `fleethub_...` names are rule names, not metrics.
            if at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric() {
                names.insert(word.clone());
            }
            rest = &rest[at + word.len()..];
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_check_and_name_metrics_a_hub_serves() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rules_file = repo().join("deploy/prometheus/fleethub-alerts.yaml");
    let tool = promtool();
    let out = Command::new(&tool)
        .args(["check", "rules"])
        .arg(&rules_file)
        .output()
        .unwrap_or_else(|e| panic!("{} (tests/run.sh builds it): {e}", tool.display()));
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let rules = std::fs::read_to_string(&rules_file).unwrap();
    let wanted = metric_names(&rules);
    assert!(wanted.contains("hub_clusters") && wanted.contains("hub_write_errors_total"));
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path(), &[]).await.unwrap();
    let client = hub.client().unwrap();
    client
        .put_cluster(&api::ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap();
    // The feed's poll sets its lag gauge once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let text = client
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let missing: Vec<_> = wanted.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the rules name metrics the hub does not serve: {missing:?}"
    );
    assert!(
        text.contains(r#"hub_clusters{available="Unknown"} 1"#),
        "a cluster without an agent counts as Unknown:\n{text}"
    );
    assert!(text.contains(r#"hub_write_errors_total{kind="unreachable"} 0"#));
}
