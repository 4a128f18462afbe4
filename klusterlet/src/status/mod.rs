//! What the klusterlet reports about a work: readiness of the applied objects, status
//! feedback, and the manifest and work conditions. Pure functions of their inputs (the
//! clock comes in as `now`), so the same state always gives the same status and the
//! controller pushes only what changed.
//!
//! * [`readiness`]: kstatus-like rules: Deployment, StatefulSet, DaemonSet (replicas
//!   updated and available), Job (succeeded), Pod (Ready), PersistentVolumeClaim (Bound),
//!   CustomResourceDefinition (Established); anything else is ready once it exists.
//! * [`feedback`]: `WellKnownStatus` (OCM's names) and `JSONPaths` rules, with OCM's value
//!   types `Integer`, `String`, `Boolean` and `JsonRaw`.
//! * [`manifest_condition`]: `resourceMeta`, `Applied`, `Available`, `Ready`,
//!   `StatusFeedbackSynced`, `statusFeedback` of one manifest, with OCM's reasons
//!   (`ocm`).
//! * [`work_conditions`]: `Applied`, `Available`, `Ready`, `Progressing`, `Degraded` of the
//!   work, with messages naming the manifests at fault.
//! * [`rules`]: `conditionRules` (CEL and OCM's well-known `Complete`) on each manifest,
//!   aggregated on the work.

mod conditions;
mod feedback;
mod jsonpath;
mod ocm;
mod readiness;
pub mod rules;
#[cfg(test)]
mod testing;

pub use conditions::{
    APPLIED, AVAILABLE, DEGRADED, PROGRESSING, READY, describe, manifest_condition,
    manifest_condition_with, work_conditions,
};
pub use feedback::{MAX_JSON_RAW_LENGTH, feedback, well_known_paths};
pub use ocm::{APPLIED_MANIFEST_FAILED, RESOURCE_NOT_AVAILABLE, STATUS_FEEDBACK_SYNCED};
pub use readiness::readiness;
