//! Optimistic concurrency, one rule for every object the hub stores: `If-Match` against the
//! ETag, and `metadata.resourceVersion` in the body against the stored version.

use super::error::{Error, Result};

/// The ETag of an object at this resourceVersion.
pub fn etag(resource_version: &str) -> String {
    format!("\"{resource_version}\"")
}

/// What a write asserts about the version it replaces.
#[derive(Debug, Clone, Copy)]
pub struct Preconditions<'a> {
    /// The object as messages name it: `manifestwork "web"`, `placement "p"`.
    pub what: &'a str,
    /// The `If-Match` header, if any.
    pub if_match: Option<&'a str>,
    /// `metadata.resourceVersion` of the body, if any (empty counts as none).
    pub body_rv: Option<&'a str>,
    /// Whether the caller may read the object: a refusal names the current version only
    /// then.
    pub caller_reads: bool,
}

impl Preconditions<'_> {
    /// The object does not exist: a write that names a version of it cannot create it.
    pub fn for_create(&self) -> Result<()> {
        if self.if_match.is_some() {
            return Err(Error::PreconditionFailed(format!(
                "If-Match given but {} does not exist",
                self.what
            )));
        }
        if self.body_rv().is_some() {
            return Err(Error::NotFound(format!(
                "{} does not exist; drop metadata.resourceVersion to create it",
                self.what
            )));
        }
        Ok(())
    }

    /// The object exists at `current`: the write must name that version or none.
    pub fn for_replace(&self, current: &str) -> Result<()> {
        if let Some(tag) = self.if_match
            && tag.trim() != "*"
            && tag.trim() != etag(current)
        {
            return Err(Error::PreconditionFailed(if self.caller_reads {
                format!(
                    "If-Match {tag} does not match the current ETag {}",
                    etag(current)
                )
            } else {
                format!("If-Match {tag} does not match the current ETag")
            }));
        }
        if let Some(v) = self.body_rv()
            && v != current
        {
            return Err(Error::Conflict(if self.caller_reads {
                format!(
                    "{} was changed: metadata.resourceVersion {v} is stale, the current one is {current}; read it again and retry",
                    self.what
                )
            } else {
                format!(
                    "{} was changed: metadata.resourceVersion {v} is stale",
                    self.what
                )
            }));
        }
        Ok(())
    }

    fn body_rv(&self) -> Option<&str> {
        self.body_rv.filter(|v| !v.is_empty())
    }
}
