//! `hub diff`: what `hub apply` would change, like `kubectl diff` (exit 0 none, 1 some,
//! more than 1 an error). Secret data is compared by hash and never printed.

use std::path::PathBuf;

use api::{HubClient, ListOptions, ManifestWork};
use clap::{ArgGroup, Args};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::apply::matching_clusters;
use super::get::check_selector;
use super::input::{plan_works, read_documents};
use super::output::{self, DocumentFormat};
use super::{CliError, ConnectionArgs};
use crate::service::secrets::{PlaceholderKey, is_placeholder};

/// The flags of `hub diff` (its help text is on [`super::ClientCommand::Diff`]).
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target").required(true).args(["cluster", "cluster_selector"])
))]
pub struct DiffArgs {
    /// A file, a directory (its *.yaml, *.yml and *.json files in lexical order) or - for
    /// stdin; repeat for more. The same input as `hub apply`.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    pub filenames: Vec<PathBuf>,
    /// The cluster to compare with.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Compare with every cluster whose labels match this selector.
    #[arg(long, value_name = "SELECTOR")]
    pub cluster_selector: Option<String>,
    /// Name of the work when the input is plain Kubernetes manifests (required then).
    #[arg(long)]
    pub name: Option<String>,
    /// Print the differences as JSON or YAML (a DiffResult) instead of a diff.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Which object a manifest is: `apiVersion`, `kind`, `namespace`, `name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestId {
    /// e.g. `apps/v1`.
    pub api_version: String,
    /// e.g. `Deployment`.
    pub kind: String,
    /// Empty for cluster-scoped objects.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ManifestId {
    fn of(manifest: &Value) -> Self {
        let text = |p: &str| {
            manifest
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        ManifestId {
            api_version: text("/apiVersion"),
            kind: text("/kind"),
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
        }
    }
}

impl std::fmt::Display for ManifestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} ", self.api_version, self.kind)?;
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// The manifests a work would gain, change and lose.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ManifestChanges {
    /// In the input, not on the hub.
    pub added: Vec<ManifestId>,
    /// In both, with different content.
    pub changed: Vec<ManifestId>,
    /// On the hub, not in the input: `hub apply` would remove them from the cluster.
    pub removed: Vec<ManifestId>,
}

impl ManifestChanges {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// How one work on one cluster would change.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkDiff {
    /// The cluster.
    pub cluster: String,
    /// The work's name.
    pub work: String,
    /// `unchanged`, `changed`, or `created` (the hub has no such work yet).
    pub status: &'static str,
    /// The manifests added, changed and removed.
    pub manifests: ManifestChanges,
    /// The unified diff of the work's labels, annotations and spec as YAML (hub first),
    /// with Secret data as `hmac-sha256:<hex>` placeholders; empty when unchanged.
    pub diff: String,
}

/// The document `hub diff -o json|yaml` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffResult {
    /// Always `v1`.
    pub api_version: &'static str,
    /// Always `DiffResult`.
    pub kind: &'static str,
    /// Whether anything would change.
    pub differences: bool,
    /// One per work and cluster.
    pub results: Vec<WorkDiff>,
}

/// Runs `hub diff`: exit 0 no differences, 1 differences, 2 usage or refusal, 4 hub.
pub async fn run(args: DiffArgs) -> Result<(), CliError> {
    match diff(args).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(CliError::Reported(1)),
        // 1 means "differences" here: a refusal is an error, exit 2 like kubectl's.
        Err(e) if e.exit_code() == 1 => {
            e.report();
            Err(CliError::Reported(2))
        }
        Err(e) => Err(e),
    }
}

async fn diff(args: DiffArgs) -> Result<bool, CliError> {
    let DiffArgs {
        filenames,
        cluster,
        cluster_selector,
        name,
        output,
        connection,
    } = args;
    check_selector("--cluster-selector", cluster_selector.as_deref())?;
    let docs = read_documents(&filenames)?;
    let works = plan_works(docs, name.as_deref(), cluster.as_deref())?;
    let client = connection.client()?;
    let clusters = match (&cluster, &cluster_selector) {
        (Some(c), _) => vec![c.clone()],
        (None, Some(selector)) => matching_clusters(&client, selector).await?,
        (None, None) => unreachable!("clap requires --cluster or --cluster-selector"),
    };
    let mut results = Vec::new();
    for work in &works {
        for c in &clusters {
            let mut local = work.clone();
            local.metadata.namespace = Some(c.clone());
            let held = held_work(&client, c, &local.metadata.name).await?;
            if held.as_ref().is_some_and(has_hub_placeholders) {
                // Keyed placeholders: the hub masks the local work the same way.
                local = client.dry_run_work(&local).await?.value;
            }
            results.push(compare(c, &local, held.as_ref()));
        }
    }
    let differences = results.iter().any(|r| r.status != "unchanged");
    match output {
        Some(format) => {
            let doc = DiffResult {
                api_version: "v1",
                kind: "DiffResult",
                differences,
                results,
            };
            output::print(&output::document(&doc, format)?);
        }
        None => {
            let mut text = String::new();
            for r in results.iter().filter(|r| r.status != "unchanged") {
                text.push_str(&render(r));
            }
            output::print(&text);
        }
    }
    Ok(differences)
}

async fn held_work(
    client: &HubClient,
    cluster: &str,
    name: &str,
) -> Result<Option<ManifestWork>, CliError> {
    match client
        .get_work(cluster, name, &ListOptions::default())
        .await
    {
        Ok(w) => Ok(Some(w.value)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The part of a work that `hub apply` sets, with Secret data hashed and object keys
/// sorted, so that equal works compare and print equal.
fn comparable(work: &ManifestWork) -> Value {
    let mut spec = serde_json::to_value(&work.spec).unwrap_or(Value::Null);
    if let Some(Value::Array(manifests)) = spec.pointer_mut("/workload/manifests") {
        for m in manifests.iter_mut() {
            hash_secret_data(m);
        }
    }
    let mut metadata = Map::new();
    if !work.metadata.labels.is_empty() {
        metadata.insert("labels".into(), json!(work.metadata.labels));
    }
    if !work.metadata.annotations.is_empty() {
        metadata.insert("annotations".into(), json!(work.metadata.annotations));
    }
    sorted(json!({"metadata": metadata, "spec": spec}))
}

/// The key of this run's own placeholders, for Secret data the hub showed in clear (or
/// that is only local): random, so equal values still compare and print equal within the
/// run, while a diff kept in a CI log gives nobody a hash to test guesses against.
static RUN_KEY: std::sync::LazyLock<PlaceholderKey> = std::sync::LazyLock::new(|| {
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    PlaceholderKey::from_bytes(key)
});

/// The placeholder this run shows for a secret value.
fn placeholder(value: &Value) -> Value {
    RUN_KEY.placeholder(value)
}

/// Whether the hub masked Secret data in this work (a read without the `secrets` verb):
/// then only the hub can make the placeholders of the local values, with a dry run.
fn has_hub_placeholders(work: &ManifestWork) -> bool {
    let mut found = false;
    for m in &work.spec.workload.manifests {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(map)) = m.get(field) {
                found |= map.values().any(is_placeholder);
            }
        }
    }
    found
}

/// Replaces the values of a v1 Secret's `data` and `stringData`, and its `last-applied-configuration`
/// annotation, with placeholders (keeping those that are placeholders already).
pub fn hash_secret_data(manifest: &mut Value) {
    let is_secret = manifest.get("kind").and_then(Value::as_str) == Some("Secret")
        && manifest.get("apiVersion").and_then(Value::as_str) == Some("v1");
    if !is_secret {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(Value::Object(map)) = manifest.get_mut(field) {
            for v in map.values_mut() {
                if !is_placeholder(v) {
                    *v = placeholder(v);
                }
            }
        }
    }
    // kubectl's copy of the whole Secret, data included.
    if let Some(v) = manifest
        .pointer_mut("/metadata/annotations")
        .and_then(|a| a.get_mut("kubectl.kubernetes.io/last-applied-configuration"))
        && !is_placeholder(v)
    {
        *v = placeholder(v);
    }
}

/// The value with every object's keys in order.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn manifests(comparable: &Value) -> Vec<Value> {
    comparable
        .pointer("/spec/workload/manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Compares the work `hub apply` would send with the one the hub holds.
fn compare(cluster: &str, local: &ManifestWork, held: Option<&ManifestWork>) -> WorkDiff {
    let new = comparable(local);
    let old = held.map(comparable);
    let new_manifests = manifests(&new);
    let old_manifests = old.as_ref().map(manifests).unwrap_or_default();
    let mut changes = ManifestChanges::default();
    let mut matched = vec![false; old_manifests.len()];
    for m in &new_manifests {
        let id = ManifestId::of(m);
        let found = old_manifests
            .iter()
            .enumerate()
            .find(|(i, o)| !matched[*i] && ManifestId::of(o) == id);
        match found {
            Some((i, o)) => {
                matched[i] = true;
                if o != m {
                    changes.changed.push(id);
                }
            }
            None => changes.added.push(id),
        }
    }
    for (i, o) in old_manifests.iter().enumerate() {
        if !matched[i] {
            changes.removed.push(ManifestId::of(o));
        }
    }
    let same = old.as_ref() == Some(&new);
    let diff = if same {
        String::new()
    } else {
        let old_text = old
            .as_ref()
            .map(|o| output::to_yaml(o).unwrap_or_default())
            .unwrap_or_default();
        let new_text = output::to_yaml(&new).unwrap_or_default();
        unified(&old_text, &new_text, 3)
    };
    WorkDiff {
        cluster: cluster.to_string(),
        work: local.metadata.name.clone(),
        status: match (held, same) {
            (None, _) => "created",
            (Some(_), true) => "unchanged",
            (Some(_), false) => "changed",
        },
        manifests: changes,
        diff,
    }
}

/// The text `hub diff` prints for one work that would change.
fn render(r: &WorkDiff) -> String {
    let what = format!("manifestwork {} (cluster {})", r.work, r.cluster);
    let mut out = format!(
        "diff {what}{}\n--- hub: {what}\n+++ local: {what}\n",
        if r.status == "created" {
            " (new: the hub has no such work)"
        } else {
            ""
        }
    );
    out.push_str(&r.diff);
    if !r.manifests.is_empty() {
        out.push_str(&format!("manifests of {what}:\n"));
        for (sign, word, ids) in [
            ('+', "added", &r.manifests.added),
            ('~', "changed", &r.manifests.changed),
            ('-', "removed", &r.manifests.removed),
        ] {
            for id in ids {
                out.push_str(&format!("  {sign} {word:<8} {id}\n"));
            }
        }
    }
    out
}

/// A unified diff of two texts, line by line, with `context` lines around each change.
/// Starts with the first `@@` hunk header; empty when the texts are equal.
pub fn unified(old: &str, new: &str, context: usize) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = edit_script(&a, &b);
    if ops.iter().all(|op| matches!(op, Op::Same(..))) {
        return String::new();
    }
    // Group the script into hunks: runs of changes with up to 2×context equal lines.
    let mut out = String::new();
    let mut i = 0;
    while i < ops.len() {
        if matches!(ops[i], Op::Same(..)) {
            i += 1;
            continue;
        }
        let start = i.saturating_sub(context);
        let mut end = i;
        let mut same_run = 0;
        let mut j = i;
        while j < ops.len() {
            if matches!(ops[j], Op::Same(..)) {
                same_run += 1;
                if same_run > 2 * context {
                    break;
                }
            } else {
                same_run = 0;
                end = j;
            }
            j += 1;
        }
        let stop = (end + context + 1).min(ops.len());
        let hunk = &ops[start..stop];
        let (a_start, b_start) = match hunk[0] {
            Op::Same(x, y) => (x, y),
            Op::Delete(x, y) | Op::Insert(x, y) => (x, y),
        };
        let a_len = hunk.iter().filter(|o| !matches!(o, Op::Insert(..))).count();
        let b_len = hunk.iter().filter(|o| !matches!(o, Op::Delete(..))).count();
        out.push_str(&format!(
            "@@ -{},{a_len} +{},{b_len} @@\n",
            a_start + usize::from(a_len > 0),
            b_start + usize::from(b_len > 0)
        ));
        for op in hunk {
            match *op {
                Op::Same(x, _) => out.push_str(&format!(" {}\n", a[x])),
                Op::Delete(x, _) => out.push_str(&format!("-{}\n", a[x])),
                Op::Insert(_, y) => out.push_str(&format!("+{}\n", b[y])),
            }
        }
        i = stop;
    }
    out
}

/// One step of an edit script, with the positions in both texts where it happens.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Same(usize, usize),
    Delete(usize, usize),
    Insert(usize, usize),
}

/// The shortest edit script by longest common subsequence (quadratic: works are small;
/// very long texts fall back to replacing everything).
fn edit_script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > 25_000_000 {
        let mut ops: Vec<Op> = (0..n).map(|i| Op::Delete(i, 0)).collect();
        ops.extend((0..m).map(|j| Op::Insert(n, j)));
        return ops;
    }
    // lcs[i][j]: the LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(Op::Delete(i, j));
            i += 1;
        } else {
            ops.push(Op::Insert(i, j));
            j += 1;
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(manifests: Vec<Value>) -> ManifestWork {
        ManifestWork::new("c1", "web", manifests)
    }

    fn cm(name: &str, v: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"}, "data": {"v": v}})
    }

    fn secret(v: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}, "stringData": {"password": v}})
    }

    #[test]
    fn unified_diffs_have_hunks_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\n";
        assert_eq!(
            unified(old, new, 1),
            "@@ -3,3 +3,3 @@\n c\n-d\n+D\n e\n@@ -10,1 +10,2 @@\n j\n+k\n"
        );
        assert_eq!(unified(old, old, 3), "");
        assert_eq!(unified("", "x\n", 3), "@@ -0,0 +1,1 @@\n+x\n");
    }

    #[test]
    fn manifests_are_matched_by_identity() {
        let held = work(vec![cm("a", "1"), cm("b", "1"), cm("gone", "1")]);
        let local = work(vec![cm("a", "1"), cm("b", "2"), cm("new", "1")]);
        let d = compare("c1", &local, Some(&held));
        assert_eq!(d.status, "changed");
        let names = |ids: &[ManifestId]| ids.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&d.manifests.added), ["new"]);
        assert_eq!(names(&d.manifests.changed), ["b"]);
        assert_eq!(names(&d.manifests.removed), ["gone"]);
        assert!(
            d.diff.contains("-      name: gone") || d.diff.contains("name: gone"),
            "{}",
            d.diff
        );

        let same = compare("c1", &held, Some(&held));
        assert_eq!(same.status, "unchanged");
        assert!(same.diff.is_empty());
        let created = compare("c1", &local, None);
        assert_eq!(created.status, "created");
        assert_eq!(created.manifests.added.len(), 3);
    }

    #[test]
    fn secret_data_is_compared_by_hash_and_never_printed() {
        let local = work(vec![secret("hunter2-new")]);
        let held = work(vec![secret("hunter2-old")]);
        let d = compare("c1", &local, Some(&held));
        assert_eq!(d.status, "changed");
        let text = render(&d) + &serde_json::to_string(&d).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        let shown = placeholder(&json!("hunter2-new"));
        assert!(text.contains(shown.as_str().unwrap()), "{text}");
        // Placeholders already there (under the same key) equal the same data in clear.
        let mut masked = secret("hunter2-new");
        hash_secret_data(&mut masked);
        let d = compare("c1", &local, Some(&work(vec![masked])));
        assert_eq!(d.status, "unchanged", "{}", d.diff);
    }
}
