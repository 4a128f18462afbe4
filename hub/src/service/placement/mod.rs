//! Placement engine (wip).
