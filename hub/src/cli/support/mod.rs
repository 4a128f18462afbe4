//! What the verbs share: how to reach the hub, reading input, printing output, progress
//! of long waits, blocking-query helpers, and errors with their exit codes. Nothing here
//! uses a verb, so the verbs depend on `support` and never on each other in a circle.

pub mod connection;
pub mod error;
pub mod input;
pub mod output;
pub mod progress;
pub mod query;
pub mod secrets;
pub mod text;
pub mod wait_for;
pub mod watch;
