//! Everything between the agent and the hub.
//!
//! * [`identity`]: the agent's key, the assertions it signs, the state `join` leaves.
//! * [`join`]: the join handshake (CA pinning, registration, waiting for acceptance), and
//!   the manifests `join --print-manifests` prints.
//! * [`session`]: the access token every loop uses, minted and renewed with the key.
//! * [`lease`]: the lease loop.
//! * [`claims`]: facts read from the managed cluster and sent with the lease.

pub mod claims;
pub mod identity;
pub mod join;
pub mod lease;
pub mod session;
