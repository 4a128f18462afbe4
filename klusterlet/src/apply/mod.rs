//! The apply engine: resolves each manifest's GVK through discovery, applies the manifests
//! of a work in a safe order with server-side apply per its update strategy, reads and
//! deletes what was applied.
//!
//! INTERFACE CONTRACT (used by `work::reconcile`, `work::controller` and `work::ledger`;
//! keep these signatures):
//! * [`Applier::new`], [`Applier::apply_work`], [`Applier::get`], [`Applier::delete`].
//! * [`ResourceRef`], [`ManifestOutcome`], [`ApplyError`], [`DeleteOutcome`].
//!
//! # Order
//! Namespaces first, then CustomResourceDefinitions (each waited on until `Established`,
//! then discovery is refreshed so the work's custom resources resolve), then everything
//! else. Within a step manifests are applied concurrently (at most
//! [`DEFAULT_CONCURRENCY`] at once); outcomes always come back in manifest order.
//!
//! # Update strategies (`manifestConfigs[].updateStrategy`, matched by `resourceIdentifier`)
//! * `Update` (the default): server-side apply as field manager `klusterlet`, forced, so the
//!   work's fields win and fields it never set are left alone.
//! * `ServerSideApply`: server-side apply as `serverSideApply.fieldManager` (default
//!   `klusterlet`), forced only with `serverSideApply.force`; a conflict with another field
//!   manager is reported (reason `Conflict`, each field and its manager: [`conflict`]) and
//!   not retried. `serverSideApply.ignoreFields` leave fields another controller owns out
//!   of the apply ([`ignore`]).
//! * `CreateOnly`: created (POST) when absent; an existing object is never written.
//! * `ReadOnly`: only read; absent is `NotFound`.
//!
//! # Executor (`spec.executor`)
//! A work naming a ServiceAccount is written (and its objects deleted) impersonating it,
//! each write first allowed by a SubjectAccessReview; see [`executor`].
//!
//! # Errors
//! Failures keep Kubernetes' own reason and message (`Forbidden`: `deployments.apps "x" is
//! forbidden: User "y" cannot patch resource "deployments" in API group "apps" ...`). Ours
//! are `UnknownKind`, `CrdNotEstablished`, `Invalid` (a manifest that is not an object),
//! `Unreachable` and `Timeout`.

pub mod conflict;
mod engine;
mod error;
pub mod executor;
pub mod ignore;
mod resource;
mod strategy;

use std::time::Duration;

pub use engine::Applier;
pub use error::ApplyError;
pub use resource::{DeleteOutcome, ManifestId, ManifestOutcome, ResourceRef};
pub use strategy::{ManifestConfig, ManifestConfigs, manifest_config};

/// The field manager of `Update` (and of `ServerSideApply` without a `fieldManager`).
pub const FIELD_MANAGER: &str = "klusterlet";
/// How many manifests of one work are applied at once.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// How long a CRD of a work may take to become Established before the rest is applied.
pub const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of one call to the managed cluster's apiserver.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An unknown kind refreshes discovery at most this often: a work naming a kind that does
/// not exist must not turn every pass into a full discovery.
const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);
/// The API group of CustomResourceDefinitions.
const CRD_GROUP: &str = "apiextensions.k8s.io";
