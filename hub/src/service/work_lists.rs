//! Lists of works: one cluster's or across clusters (by cluster selector, in the caller's
//! scope), a page at a time, blocking on the first page; and the summary per work name.

use api::selector::Selector;
use api::{List, ManifestWork, WorkSummary};
use base64::Engine;

use super::Hub;
use super::error::{Error, Result};
use super::leases::with_lease;
use super::query::{self, Block, Indexed, Watch};
use super::summary;
use super::validate::validate_cluster_name;
use super::works::{labels, present};
use crate::store::{ChangeKind, StoredWork};

/// Largest page of a list.
pub const MAX_PAGE: u32 = 10_000;

/// What a list of works asks for.
#[derive(Debug, Clone, Default)]
pub struct WorkQuery {
    /// One cluster, or all.
    pub cluster: Option<String>,
    /// Label selector on works.
    pub selector: Selector,
    /// Label selector on clusters (lists across clusters).
    pub cluster_selector: Selector,
    /// Page size (0: all).
    pub limit: u32,
    /// Continue token.
    pub continue_: Option<String>,
    /// Blocking.
    pub block: Option<Block>,
    /// Status-only changes do not wake this query (the cluster's agent: status is its own
    /// output).
    pub ignore_status_changes: bool,
    /// Only these clusters (the caller's scope); `None`: all.
    pub scope: Option<Vec<String>>,
}

/// One page of works as stored, from [`Hub::list_stored_works`].
#[derive(Debug)]
pub struct StoredWorks {
    /// The works, ordered by (cluster, name).
    pub items: Vec<StoredWork>,
    /// The change index the page is current to.
    pub index: u64,
    /// Where the next page starts, when there is one.
    pub continue_: Option<String>,
}

impl Hub {
    /// Lists works of one cluster or across clusters, a page at a time; with `block`, the
    /// first page waits until something it would return changed past the index.
    pub async fn list_works(&self, q: WorkQuery) -> Result<List<ManifestWork>> {
        let page = self.list_stored_works(q).await?;
        let items = page
            .items
            .iter()
            .map(|w| w.decode().map(present))
            .collect::<Result<_, _>>()?;
        Ok(List::new(
            "ManifestWorkList",
            items,
            page.index,
            page.continue_,
        ))
    }

    /// The same list as [`Hub::list_works`], with each work as stored: a large list is served
    /// without parsing and serializing every document again (see [`super::works::listed_json`]).
    #[tracing::instrument(level = "debug", skip(self, q), fields(cluster = q.cluster.as_deref(), blocking = q.block.is_some(), limit = q.limit))]
    pub async fn list_stored_works(&self, q: WorkQuery) -> Result<StoredWorks> {
        if let Some(c) = &q.cluster {
            validate_cluster_name(c)?;
        }
        let after = q.continue_.as_deref().map(decode_continue).transpose()?;
        // Only a first page blocks: the next ones continue what it answered.
        let block = q.block.filter(|_| after.is_none());
        let watch = || {
            let (cluster, sel, ignore_status, scope) = (
                q.cluster.clone(),
                q.selector.clone(),
                q.ignore_status_changes,
                q.scope.clone(),
            );
            let cross_cluster = q.cluster.is_none() && !q.cluster_selector.is_empty();
            Watch::changes(move |ch| match ch.kind {
                ChangeKind::Registration
                | ChangeKind::Placement
                | ChangeKind::PlacementDecisions
                | ChangeKind::ManifestWorkReplicaSet => false,
                ChangeKind::Cluster => cross_cluster,
                ChangeKind::Work => {
                    !(ignore_status && ch.status_only)
                        && cluster.as_deref().is_none_or(|c| c == ch.cluster)
                        && scope.as_ref().is_none_or(|s| s.contains(&ch.cluster))
                        && (sel.matches(&ch.labels)
                            || ch.prev_labels.as_ref().is_some_and(|l| sel.matches(l)))
                }
            })
            .of_cluster(q.cluster.as_deref())
        };
        let Indexed {
            data: (items, continue_),
            index,
        } = query::run(&self.feed, block, watch, || self.read_works(&q, after)).await?;
        Ok(StoredWorks {
            items,
            index,
            continue_,
        })
    }

    /// One page of works from the store, from `after` on (see [`Hub::list_stored_works`]).
    async fn read_works(
        &self,
        q: &WorkQuery,
        after: Option<(String, String)>,
    ) -> Result<(Vec<StoredWork>, Option<String>)> {
        let clusters: Option<Vec<String>> = if q.cluster.is_none() && !q.cluster_selector.is_empty()
        {
            Some(
                self.store
                    .list_clusters()
                    .await?
                    .into_iter()
                    .filter(|c| q.cluster_selector.matches(&c.metadata.labels))
                    .map(|c| c.metadata.name)
                    .collect(),
            )
        } else {
            None
        };
        let limit = if q.limit == 0 {
            u32::MAX
        } else {
            q.limit.min(MAX_PAGE)
        };
        let mut items = Vec::new();
        let mut cursor = after;
        let mut more = false;
        'pages: loop {
            // Up to a full page and one row in one query: a cluster of 10,000 works is read
            // in one round trip (with chunks of 5,000 it took three, the last one empty).
            let chunk = limit
                .saturating_sub(items.len() as u32)
                .saturating_mul(2)
                .clamp(100, MAX_PAGE + 1);
            let page = self
                .store
                .list_works(
                    q.cluster.as_deref(),
                    cursor.as_ref().map(|(c, n)| (c.as_str(), n.as_str())),
                    chunk,
                )
                .await?;
            let exhausted = (page.len() as u32) < chunk;
            for w in page {
                let in_scope = clusters.as_ref().is_none_or(|cs| cs.contains(&w.cluster))
                    && q.scope.as_ref().is_none_or(|cs| cs.contains(&w.cluster));
                // Only a selector needs the labels, so only then is the document parsed.
                if in_scope && (q.selector.is_empty() || q.selector.matches(&labels(&w)?)) {
                    if items.len() as u32 >= limit {
                        more = true;
                        break 'pages;
                    }
                    cursor = Some((w.cluster.clone(), w.name.clone()));
                    items.push(w);
                } else {
                    cursor = Some((w.cluster, w.name));
                }
            }
            if exhausted {
                break;
            }
        }
        let continue_ = if more {
            items
                .last()
                .map(|w: &StoredWork| encode_continue(&w.cluster, &w.name))
        } else {
            None
        };
        Ok((items, continue_))
    }

    /// Per work name across the clusters of `q` (the caller's scope), how many clusters
    /// applied, made available and made ready it; blocking like a list of works.
    #[tracing::instrument(level = "debug", skip(self, q))]
    pub async fn summarize_works(
        &self,
        q: WorkQuery,
        name: Option<&str>,
    ) -> Result<List<WorkSummary>> {
        let list = self.list_works(q).await?;
        let works: Vec<ManifestWork> = list
            .items
            .into_iter()
            .filter(|w| name.is_none_or(|n| n == w.metadata.name))
            .collect();
        let leases = self.leases().await?;
        let clusters = self
            .store
            .list_clusters()
            .await?
            .into_iter()
            .map(|c| (c.metadata.name.clone(), with_lease(c, &leases)))
            .collect();
        let items = summary::summarize(&works, &clusters);
        Ok(List::new(
            "ManifestWorkSummaryList",
            items,
            list.metadata.index,
            None,
        ))
    }
}

fn encode_continue(cluster: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{cluster}/{name}"))
}

fn decode_continue(token: &str) -> Result<(String, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| {
            Error::Malformed(format!(
                "continue token {token:?} is not one this hub issued"
            ))
        })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Malformed("continue token is not valid".into()))?;
    let (c, n) = text
        .split_once('/')
        .ok_or_else(|| Error::Malformed("continue token is not valid".into()))?;
    Ok((c.to_string(), n.to_string()))
}
