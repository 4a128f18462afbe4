//! Reading `-f FILE|DIR|-` into a stream of documents, and turning them into works.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use api::selector::validate_dns_subdomain;
use api::{ManifestWork, WORK_API_VERSION};
use serde_json::Value;

use super::error::CliError;

/// One document of the input and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `FILE` or `FILE (document N)`, for messages.
    pub source: String,
    /// The document.
    pub value: Value,
}

/// Reads every `-f` argument in order: a file, a directory (its `*.yaml`, `*.yml` and
/// `*.json` files in lexical order, not recursive) or `-` for stdin. `kind: *List`
/// documents are expanded into their items; empty documents are skipped.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>, CliError> {
    let mut docs = Vec::new();
    let mut stdin_read = false;
    for path in paths {
        if path.as_os_str() == "-" {
            if stdin_read {
                return Err(CliError::Usage(
                    "-f - (stdin) can be given only once".into(),
                ));
            }
            stdin_read = true;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
            docs.extend(parse_documents("<stdin>", &text)?);
            continue;
        }
        let meta = std::fs::metadata(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
        if meta.is_dir() {
            let files = manifest_files(path)?;
            if files.is_empty() {
                return Err(CliError::Usage(format!(
                    "directory {} holds no *.yaml, *.yml or *.json file",
                    path.display()
                )));
            }
            for file in files {
                docs.extend(read_file(&file)?);
            }
        } else {
            docs.extend(read_file(path)?);
        }
    }
    Ok(docs)
}

/// The manifest files of a directory, in lexical order of their names.
fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| CliError::Usage(format!("cannot read {}: {e}", dir.display())))?;
        let path = entry.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if is_manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn read_file(path: &Path) -> Result<Vec<Document>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    parse_documents(&path.display().to_string(), &text)
}

/// Parses a YAML stream (`---` between documents) or a JSON stream (objects one after
/// another). JSON is tried first when the text starts like JSON, so large integers and
/// exact strings survive.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, CliError> {
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let json: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect();
        match json {
            Ok(v) => v,
            Err(json_err) => serde_saphyr::from_multiple::<Value>(text)
                .map_err(|_| CliError::Usage(format!("{source}: invalid JSON: {json_err}")))?,
        }
    } else {
        serde_saphyr::from_multiple::<Value>(text)
            .map_err(|e| CliError::Usage(format!("{source}: invalid YAML: {}", yaml_error(&e))))?
    };
    let numbered = values.len() > 1;
    let mut docs = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        if value.is_null() {
            continue;
        }
        let source = if numbered {
            format!("{source} (document {})", i + 1)
        } else {
            source.to_string()
        };
        expand_lists(source, value, &mut docs);
    }
    Ok(docs)
}

/// The first line of a YAML parser error (the rest is a source excerpt), without its
/// own `error: ` prefix.
fn yaml_error(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// `kind: List` (or any `*List` with `items`) stands for its items, as in kubectl.
fn expand_lists(source: String, value: Value, out: &mut Vec<Document>) {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if !is_list {
        out.push(Document { source, value });
        return;
    }
    if let Some(Value::Array(items)) = value.get("items") {
        for (i, item) in items.iter().enumerate() {
            out.push(Document {
                source: format!("{source} item {i}"),
                value: item.clone(),
            });
        }
    }
}

fn is_manifest_work(doc: &Document) -> Result<bool, CliError> {
    let Some(obj) = doc.value.as_object() else {
        return Err(CliError::Usage(format!(
            "{}: not a Kubernetes object (a mapping with apiVersion, kind and metadata)",
            doc.source
        )));
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: no kind: every object needs apiVersion, kind and metadata.name",
            doc.source
        )));
    }
    if kind != "ManifestWork" {
        return Ok(false);
    }
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != WORK_API_VERSION {
        return Err(CliError::Usage(format!(
            "{}: a ManifestWork must have apiVersion {WORK_API_VERSION}, not {api_version:?}",
            doc.source
        )));
    }
    Ok(true)
}

/// Turns the documents into the works to apply, before anything is sent.
///
/// ManifestWork documents are taken as they are (`name` must be absent, and with
/// `cluster` their namespace must be absent or equal to it); plain manifests become one
/// work named `name`. Mixing the two is an error. The works' namespaces are left for
/// the caller to set per target cluster.
pub fn plan_works(
    docs: Vec<Document>,
    name: Option<&str>,
    cluster: Option<&str>,
) -> Result<Vec<ManifestWork>, CliError> {
    if docs.is_empty() {
        return Err(CliError::Usage(
            "no objects passed to apply: the input holds no document".into(),
        ));
    }
    let mut works = Vec::new();
    let mut plain = Vec::new();
    for doc in docs {
        if is_manifest_work(&doc)? {
            works.push(doc);
        } else {
            plain.push(doc);
        }
    }
    if let (Some(w), Some(p)) = (works.first(), plain.first()) {
        return Err(CliError::Usage(format!(
            "the input mixes ManifestWork documents ({}) with plain Kubernetes manifests ({}); \
             apply them separately: plain manifests with --name become one work",
            w.source, p.source
        )));
    }
    if !plain.is_empty() {
        let Some(name) = name else {
            return Err(CliError::Usage(format!(
                "the input holds plain Kubernetes manifests ({} of them, first {}): \
                 pass --name NAME to apply them as one ManifestWork",
                plain.len(),
                plain[0].source
            )));
        };
        validate_dns_subdomain(name)
            .map_err(|m| CliError::Usage(format!("--name {name:?}: {m}")))?;
        let manifests = plain.into_iter().map(|d| d.value).collect();
        return Ok(vec![ManifestWork::new(
            cluster.unwrap_or_default(),
            name,
            manifests,
        )]);
    }
    if let Some(name) = name {
        return Err(CliError::Usage(format!(
            "--name {name:?} is for plain manifests; ManifestWork documents carry their own metadata.name"
        )));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for doc in works {
        let work: ManifestWork = serde_path_to_error::deserialize(doc.value).map_err(|e| {
            CliError::Usage(format!("{}: {} at {}", doc.source, e.inner(), e.path()))
        })?;
        if work.metadata.name.is_empty() {
            return Err(CliError::Usage(format!(
                "{}: the ManifestWork has no metadata.name",
                doc.source
            )));
        }
        if let (Some(cluster), Some(ns)) = (cluster, work.metadata.namespace.as_deref())
            && !ns.is_empty()
            && ns != cluster
        {
            return Err(CliError::Usage(format!(
                "{}: the namespace of manifestwork {:?} is {ns:?}, which does not match --cluster {cluster:?} \
                 (a ManifestWork's namespace is its cluster)",
                doc.source, work.metadata.name
            )));
        }
        if !seen.insert(work.metadata.name.clone()) {
            return Err(CliError::Usage(format!(
                "{}: manifestwork {:?} appears twice in the input",
                doc.source, work.metadata.name
            )));
        }
        out.push(work);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs(text: &str) -> Vec<Document> {
        parse_documents("in.yaml", text).unwrap()
    }

    #[test]
    fn an_object_without_kind_is_caught_here() {
        let d = docs("apiVersion: v1\nmetadata: {name: a}\ndata: {a: b}\n");
        let err = plan_works(d, Some("x"), Some("c1")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .ends_with(": no kind: every object needs apiVersion, kind and metadata.name"),
            "{err}"
        );
    }

    #[test]
    fn yaml_streams_skip_empty_documents_and_expand_lists() {
        let d = docs(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n\
             - {apiVersion: v1, kind: Secret, metadata: {name: c}}\n",
        );
        let names: Vec<&str> = d
            .iter()
            .map(|d| d.value["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(d[0].source.contains("document"), "{}", d[0].source);
    }

    #[test]
    fn json_streams_keep_big_integers() {
        let d = parse_documents(
            "in.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"n":12345678901234567890}
               {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}"#,
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].value["n"], json!(12345678901234567890u64));
    }

    #[test]
    fn bad_yaml_is_a_usage_error_naming_the_file() {
        let err = parse_documents("bad.yaml", "a: [1, 2\n").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().starts_with("bad.yaml: invalid YAML"),
            "{err}"
        );
    }

    #[test]
    fn plain_manifests_become_one_work_and_need_a_name() {
        let d = docs("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n");
        let err = plan_works(d.clone(), None, Some("c1")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--name"), "{err}");
        let works = plan_works(d, Some("bundle"), Some("c1")).unwrap();
        assert_eq!(works.len(), 1);
        assert_eq!(works[0].metadata.name, "bundle");
        assert_eq!(works[0].spec.workload.manifests[0]["kind"], "ConfigMap");
        assert!(plan_works(docs("kind: ConfigMap\n"), Some("Bad_Name"), None).is_err());
    }

    #[test]
    fn mixing_and_namespace_mismatch_are_refused_before_sending() {
        let work = format!(
            "apiVersion: {WORK_API_VERSION}\nkind: ManifestWork\nmetadata: {{name: w, namespace: c2}}\n"
        );
        let mixed = docs(&format!(
            "{work}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\n"
        ));
        let err = plan_works(mixed, Some("n"), Some("c2")).unwrap_err();
        assert!(err.to_string().contains("mixes"), "{err}");
        let err = plan_works(docs(&work), None, Some("c1")).unwrap_err();
        assert!(
            err.to_string().contains("does not match --cluster"),
            "{err}"
        );
        // With a selector (no --cluster) the namespace is set per cluster later.
        assert_eq!(plan_works(docs(&work), None, None).unwrap().len(), 1);
        let err = plan_works(docs(&work), Some("other"), Some("c2")).unwrap_err();
        assert!(err.to_string().contains("--name"), "{err}");
        let twice = docs(&format!("{work}---\n{work}"));
        assert!(plan_works(twice, None, None).is_err());
        let wrong_version = docs("apiVersion: v1\nkind: ManifestWork\nmetadata: {name: w}\n");
        assert!(plan_works(wrong_version, None, None).is_err());
    }
}
