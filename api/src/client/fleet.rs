//! Typed calls of fleet placement: Placements, their decisions and explanations, and
//! ManifestWorkReplicaSets (DESIGN.md "Fleet placement").

use reqwest::Method;
use serde_json::Value;

use super::{ClientError, HubClient, Indexed, ListOptions, seg};
use crate::fleet::{ManifestWorkReplicaSet, Placement, PlacementDecision, PlacementExplanation};
use crate::types::List;

/// The path of a namespaced fleet resource (`placements`, `manifestworkreplicasets`): one
/// object with `name`, the namespace's list without, every namespace's list with neither.
fn fleet_path(resource: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    match (namespace, name) {
        (Some(ns), Some(n)) => format!("/api/v1/namespaces/{}/{resource}/{}", seg(ns), seg(n)),
        (Some(ns), None) => format!("/api/v1/namespaces/{}/{resource}", seg(ns)),
        (None, _) => format!("/api/v1/{resource}"),
    }
}

const PLACEMENTS: &str = "placements";
const SETS: &str = "manifestworkreplicasets";

impl HubClient {
    /// A blocking-aware GET of `path` with the list options' query.
    async fn get_with<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        opts: &ListOptions,
    ) -> Result<Indexed<T>, ClientError> {
        let mut rb = self.request(Method::GET, path).query(&self.query(opts));
        if let Some(t) = opts.blocking_timeout() {
            rb = rb.timeout(t);
        }
        self.send(rb).await
    }

    /// A DELETE that answers the object while it is being deleted; `None` when the
    /// answer is not the object (it is gone already).
    async fn delete_object<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        let r: Indexed<Value> = self.send(self.request(Method::DELETE, path)).await?;
        Ok(serde_json::from_value(r.value).ok())
    }

    /// Creates or replaces a Placement in `namespace`.
    pub async fn put_placement(
        &self,
        namespace: &str,
        placement: &Placement,
    ) -> Result<Indexed<Placement>, ClientError> {
        let path = fleet_path(PLACEMENTS, Some(namespace), Some(&placement.metadata.name));
        self.json(Method::PUT, &path, placement).await
    }

    /// Reads one Placement; with `opts.index`, blocks until it changed past that index.
    pub async fn get_placement(
        &self,
        namespace: &str,
        name: &str,
        opts: &ListOptions,
    ) -> Result<Indexed<Placement>, ClientError> {
        self.get_with(&fleet_path(PLACEMENTS, Some(namespace), Some(name)), opts)
            .await
    }

    /// Lists the Placements of `namespace`, or of every namespace with `None`.
    pub async fn list_placements(
        &self,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Indexed<List<Placement>>, ClientError> {
        self.get_with(&fleet_path(PLACEMENTS, namespace, None), opts)
            .await
    }

    /// Asks for a Placement's deletion; the Placement as it is now, or `None` when gone.
    pub async fn delete_placement(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Placement>, ClientError> {
        self.delete_object(&fleet_path(PLACEMENTS, Some(namespace), Some(name)))
            .await
    }

    /// A Placement's decisions, as OCM's PlacementDecisionList.
    pub async fn placement_decisions(
        &self,
        namespace: &str,
        name: &str,
        opts: &ListOptions,
    ) -> Result<Indexed<List<PlacementDecision>>, ClientError> {
        let path = format!(
            "{}/decisions",
            fleet_path(PLACEMENTS, Some(namespace), Some(name))
        );
        self.get_with(&path, opts).await
    }

    /// Every cluster the caller may read, with why a stored Placement chose it or not.
    pub async fn explain_placement(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Indexed<PlacementExplanation>, ClientError> {
        let path = format!(
            "{}/explain",
            fleet_path(PLACEMENTS, Some(namespace), Some(name))
        );
        self.get_with(&path, &ListOptions::default()).await
    }

    /// What a Placement would choose, and why, without storing it.
    pub async fn preview_placement(
        &self,
        placement: &Placement,
    ) -> Result<Indexed<PlacementExplanation>, ClientError> {
        self.json(Method::POST, "/api/v1/placements/preview", placement)
            .await
    }

    /// Creates or replaces a ManifestWorkReplicaSet in `namespace`.
    pub async fn put_set(
        &self,
        namespace: &str,
        set: &ManifestWorkReplicaSet,
    ) -> Result<Indexed<ManifestWorkReplicaSet>, ClientError> {
        let path = fleet_path(SETS, Some(namespace), Some(&set.metadata.name));
        self.json(Method::PUT, &path, set).await
    }

    /// Reads one ManifestWorkReplicaSet; with `opts.index`, blocks until it changed past
    /// that index (a set that is gone answers 404).
    pub async fn get_set(
        &self,
        namespace: &str,
        name: &str,
        opts: &ListOptions,
    ) -> Result<Indexed<ManifestWorkReplicaSet>, ClientError> {
        self.get_with(&fleet_path(SETS, Some(namespace), Some(name)), opts)
            .await
    }

    /// Lists the ManifestWorkReplicaSets of `namespace`, or of every namespace with `None`.
    pub async fn list_sets(
        &self,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Indexed<List<ManifestWorkReplicaSet>>, ClientError> {
        self.get_with(&fleet_path(SETS, namespace, None), opts)
            .await
    }

    /// Asks for a set's deletion; the set as it is now (with `deletionTimestamp` while its
    /// works are removed), or `None` when gone.
    pub async fn delete_set(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ManifestWorkReplicaSet>, ClientError> {
        self.delete_object(&fleet_path(SETS, Some(namespace), Some(name)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_rest_contract() {
        assert_eq!(
            fleet_path(PLACEMENTS, Some("team a"), Some("p/1")),
            "/api/v1/namespaces/team%20a/placements/p%2F1"
        );
        assert_eq!(
            fleet_path(SETS, Some("default"), None),
            "/api/v1/namespaces/default/manifestworkreplicasets"
        );
        assert_eq!(fleet_path(PLACEMENTS, None, None), "/api/v1/placements");
    }
}
