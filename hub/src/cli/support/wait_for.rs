//! `--for`: what a wait waits for (works and ManifestWorkReplicaSets alike).

use serde::Serialize;

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WaitFor {
    /// Every manifest applied.
    Applied,
    /// Every resource exists on the cluster.
    Available,
    /// Every resource is ready (workloads up, jobs done, ...).
    Ready,
    /// The work is gone from the hub (its agent removed its resources).
    Deleted,
}

impl WaitFor {
    /// Parses `--for`: `Ready`, `Applied`, `Available`, `Deleted`, and kubectl's forms
    /// `condition=Ready`, `condition=Ready=True` and `delete`. Case does not matter.
    pub fn parse(text: &str) -> Result<WaitFor, String> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        if matches!(lower.as_str(), "delete" | "deleted") {
            return Ok(WaitFor::Deleted);
        }
        let expected = "expected Ready, Applied, Available, Deleted, delete, or \
                        condition=NAME[=True] with NAME one of Ready, Applied, Available";
        if lower.starts_with("jsonpath=") || lower.starts_with("create") {
            return Err(format!("{t:?} is not supported: {expected}"));
        }
        let condition = match lower.strip_prefix("condition=") {
            Some(_) => &t["condition=".len()..],
            None => t,
        };
        let name = match condition.split_once('=') {
            Some((name, value)) if value.eq_ignore_ascii_case("true") => name,
            Some((name, value)) => {
                return Err(format!(
                    "{t:?}: only {name}=True can be waited for, not {name}={value}"
                ));
            }
            None => condition,
        };
        match name.to_ascii_lowercase().as_str() {
            "applied" => Ok(WaitFor::Applied),
            "available" => Ok(WaitFor::Available),
            "ready" => Ok(WaitFor::Ready),
            _ => Err(format!("{t:?}: {expected}")),
        }
    }

    /// Parses `--for` of `hub apply`: a condition, not deletion.
    pub fn parse_condition(text: &str) -> Result<WaitFor, String> {
        match WaitFor::parse(text)? {
            WaitFor::Deleted => Err(format!(
                "{text:?}: apply waits for Ready, Applied or Available (hub wait --for delete waits for a deletion)"
            )),
            other => Ok(other),
        }
    }

    /// The name as written on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitFor::Applied => "Applied",
            WaitFor::Available => "Available",
            WaitFor::Ready => "Ready",
            WaitFor::Deleted => "Deleted",
        }
    }

    /// The work condition awaited, if any.
    pub(crate) fn condition(self) -> Option<&'static str> {
        match self {
            WaitFor::Deleted => None,
            other => Some(other.as_str()),
        }
    }
}

impl std::fmt::Display for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
