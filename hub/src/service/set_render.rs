//! A set's per-cluster work: merge patches, overrides and the replica split (in progress).
