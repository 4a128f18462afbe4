//! The `hub` CLI verbs other than `serve`: kubectl/clusteradm style, talking REST to a hub.
//!
//! Every verb returns `Result<(), CliError>`; [`run`] turns the error into one line on
//! stderr and the exit code of DESIGN.md (0 ok, 1 refused, 2 usage or bad local input,
//! 3 timed out, 4 hub unreachable, 5xx, 401 or 403).

use clap::Subcommand;

pub mod apply;
pub mod audit;
pub mod backup;
pub mod completion;
pub mod config;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod fleet;
pub mod get;
pub mod label;
pub mod registration;
pub mod revoke;
pub mod support;
pub mod token;
pub mod version;
pub mod wait;

pub use support::connection::{self, ConnectionArgs};
pub use support::error::{CliError, describe_client_error};
pub use support::output::{CLUSTER_RESOURCE, WORK_RESOURCE};

/// Client commands (they talk to a running hub).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Apply ManifestWorks, or plain Kubernetes manifests as one work, to clusters; and
    /// Placements and ManifestWorkReplicaSets to the hub.
    ///
    /// The input is a stream of YAML or JSON documents. Placement
    /// (cluster.open-cluster-management.io/v1beta1) and ManifestWorkReplicaSet
    /// (work.open-cluster-management.io/v1alpha1) documents are applied first, in input
    /// order, each to its metadata.namespace, else --namespace, else `default`; they need
    /// no --cluster. ManifestWork documents (work.open-cluster-management.io/v1) are
    /// applied as they are; a stream of plain Kubernetes manifests becomes one work named
    /// --name; both need --cluster or --cluster-selector, and mixing them is an error.
    /// Applying replaces the object: manifests no longer in a work are removed from the
    /// cluster. Each object prints `created`, `configured` or `unchanged`.
    ///
    /// With --wait it then waits until every work is --for (default Ready) on every
    /// cluster, on blocking queries, printing one line per cluster and per unready
    /// resource (redrawn in place on a terminal, appended when they change otherwise) and
    /// a summary; then likewise for every ManifestWorkReplicaSet applied (as `hub wait
    /// mwrs`). A cluster whose lease expired is reported as unavailable and never counts
    /// as done; a hub restart during the wait is retried until --timeout.
    ///
    /// Exit codes: 0 every object applied (and, with --wait, done everywhere); 1 the hub
    /// refused an object (each refusal is printed, the others are still applied), no
    /// cluster matches --cluster-selector, or with --wait a work failed (Degraded at its
    /// current generation: the cluster, the resource and Kubernetes' reason are printed);
    /// 2 usage error or bad input (unreadable file, invalid YAML, mixed documents, a
    /// namespace that differs from --cluster or --namespace, works without --cluster;
    /// nothing is sent then); 3 --wait ran out of --timeout (what is still pending is
    /// printed); 4 the hub is unreachable or answered 5xx, 401 or 403.
    Apply(Box<apply::ApplyArgs>),
    /// Show what `hub apply` would change: the work's spec as a unified diff and the
    /// manifests added, changed and removed.
    ///
    /// Compares the works the input makes (exactly as `hub apply` would send them) with
    /// what the hub holds. Secret data is compared by keyed hashes and printed only as
    /// `hmac-sha256:<hex>` placeholders, never in clear.
    ///
    /// Exit codes (like kubectl diff): 0 no differences; 1 differences; 2 usage error,
    /// bad input, or the hub refused (e.g. no cluster matches the selector); 4 the hub is
    /// unreachable or answered 5xx, 401 or 403.
    Diff(Box<diff::DiffArgs>),
    /// Wait until a work is Ready, Applied, Available or deleted on its clusters, or a
    /// ManifestWorkReplicaSet's works are (`hub wait mwrs NAME`).
    ///
    /// Blocking queries only (no polling). A work is done on a cluster when its
    /// condition is True at the work's current generation and the cluster is available;
    /// Degraded at the current generation fails at once. Progress: one line per cluster
    /// and per unready resource, redrawn in place on a terminal, appended when they change
    /// otherwise; then a summary line.
    ///
    /// Exit codes: 0 done on every cluster; 1 the work failed (cluster, resource and
    /// Kubernetes' reason are printed) or does not exist; 2 usage error; 3 --timeout ran
    /// out (what is still pending is printed); 4 the hub is unreachable, answered 5xx,
    /// 401 or 403 when the wait starts (during the wait it is retried until --timeout).
    Wait(Box<wait::WaitArgs>),
    /// Show a work (conditions, per-resource status and feedback, recent changes), a
    /// cluster (labels, claims, conditions, lease, taints, works), a Placement (spec,
    /// status, and why each cluster was chosen or not) or a ManifestWorkReplicaSet (its
    /// works per cluster) in detail.
    ///
    /// Exit codes: 0 shown; 1 the hub refused, e.g. NAME does not exist; 2 usage error; 4
    /// the hub is unreachable or answered 5xx, 401 or 403.
    Describe(Box<describe::DescribeArgs>),
    /// Print a shell completion script: `source <(hub completion bash)`, `hub completion
    /// zsh > "${fpath[1]}/_hub"`, `hub completion fish | source`.
    ///
    /// Exit codes: 0 printed; 2 usage error.
    Completion(completion::CompletionArgs),
    /// Show the contexts (named hubs) of the client config file, or choose the current one,
    /// as `kubectl config` does with kubeconfig.
    ///
    /// A client config file names one hub at its top level (what `hub serve` writes), or
    /// several under `contexts:` with a `currentContext:`; `--context NAME` (or
    /// HUB_CONTEXT) picks one for any command.
    ///
    /// Exit codes: 0 done; 1 no current context (current-context); 2 usage error, no
    /// context of that name, or the file cannot be read or written.
    Config(Box<config::ConfigArgs>),
    /// Print the client's version and the hub's (the hub's needs the connection).
    ///
    /// Exit codes: 0 both shown; 4 the hub could not be reached (the client's version is
    /// printed first).
    Version(Box<version::VersionArgs>),
    /// Show works, clusters, join requests, tokens, the audit log, Placements, their
    /// decisions or ManifestWorkReplicaSets as a table, JSON or YAML.
    ///
    /// Exit codes: 0 shown (an empty list too); 1 the hub refused, e.g. NAME does not
    /// exist; 2 usage error; 4 the hub is unreachable or answered 5xx, 401 or 403.
    Get(Box<get::GetArgs>),
    /// Delete a work, a cluster, a Placement or a ManifestWorkReplicaSet and wait until
    /// it is gone.
    ///
    /// Like kubectl, waits by default until the object is gone, which for a work means its
    /// agent removed its resources from the cluster, and for a set with
    /// cascadeDeletionPolicy Foreground that its works are gone.
    ///
    /// Exit codes: 0 deleted (gone, or asked for with --wait=false); 1 the hub refused
    /// (for example the object does not exist); 2 usage error; 3 --timeout ran out while
    /// the object was still deleting (what is pending is printed); 4 the hub is
    /// unreachable or answered 5xx, 401 or 403.
    Delete(Box<delete::DeleteArgs>),
    /// Set or remove labels of a cluster.
    ///
    /// Exit codes: 0 done; 1 the hub refused (e.g. no such cluster); 2 usage error or a bad
    /// label; 4 the hub is unreachable or answered 5xx, 401 or 403.
    Label(Box<label::LabelArgs>),
    /// Create, list and revoke bootstrap tokens (for joining clusters) and api tokens (for
    /// CI).
    ///
    /// Exit codes: 0 done; 1 the hub refused (e.g. no such token); 2 usage error; 4 the
    /// hub is unreachable or answered 5xx, 401 or 403.
    Token(Box<token::TokenArgs>),
    /// Accept the join request of each cluster NAME, so its agent gets credentials.
    ///
    /// By name when exactly one request of that name is pending; when several are
    /// (agents with different keys ask for one name), pick one with --request ID
    /// (`hub get registrations` lists them). A cluster that is already accepted and has
    /// no pending request is reported as such. With --wait, a NAME that has not asked yet
    /// is waited for (also one accepted meanwhile by an auto-accept token counts). Each
    /// accepted cluster prints `cluster NAME accepted (request ID)`.
    ///
    /// Exit codes: 0 every NAME accepted; 1 the hub refused, or a NAME has no pending
    /// request or several (the others are still accepted); 2 usage error; 3 --timeout
    /// ran out before every NAME asked to join (they are named); 4 the hub is unreachable
    /// or answered 5xx, 401 or 403.
    Accept(Box<registration::AcceptArgs>),
    /// Deny the pending join request of each cluster NAME (or --request ID).
    ///
    /// Exit codes: 0 every NAME denied; 1 the hub refused, or a NAME has no pending
    /// request or several (pick one with --request); 2 usage error; 4 the hub is
    /// unreachable or answered 5xx, 401 or 403.
    Deny(Box<registration::DenyArgs>),
    /// Cut a cluster's agent off at once: its credentials stop working, nothing is
    /// deleted (`hub delete cluster` removes it).
    ///
    /// Exit codes: 0 revoked; 1 the hub refused (e.g. no such cluster); 2 usage error; 4
    /// the hub is unreachable or answered 5xx, 401 or 403.
    Revoke(Box<revoke::RevokeArgs>),
    /// Back up the hub's database while it serves: a consistent copy, written to --to.
    ///
    /// The running hub copies its SQLite database (one read transaction: writers go on)
    /// and streams it; the file is written with mode 0600 and put in place only once
    /// complete. It holds every work (Secret data included), token hashes and the hub's
    /// keys. Admin token only. A hub on Postgres answers that pg_dump or pg_basebackup
    /// are the tools (docs/operations.md). Restore with `hub restore --from FILE`, the
    /// hub stopped.
    ///
    /// Exit codes: 0 written; 1 the hub refused (e.g. it runs on Postgres); 2 usage error,
    /// FILE exists (without --force) or cannot be written; 4 the hub is unreachable,
    /// answered 5xx, 401 or 403, or the copy arrived incomplete.
    Backup(Box<backup::BackupArgs>),
    /// Placements beyond get/describe/delete: `hub placement preview -f FILE` shows
    /// what a Placement would choose, and why, without storing it.
    ///
    /// Exit codes: 0 shown; 1 the hub refused the Placement (the invalid fields are
    /// named); 2 usage error or unreadable input; 4 the hub is unreachable or answered
    /// 5xx, 401 or 403.
    Placement(Box<fleet::PlacementArgs>),
}

/// Runs a client command; returns the process exit code (DESIGN.md: 0 ok, 1 failed or
/// refused, 2 usage, 3 timed out, 4 hub unreachable, 5xx, 401/403).
pub async fn run(command: ClientCommand) -> i32 {
    let result = match command {
        ClientCommand::Apply(args) => apply::run(*args).await,
        ClientCommand::Diff(args) => diff::run(*args).await,
        ClientCommand::Wait(args) => wait::run(*args).await,
        ClientCommand::Describe(args) => describe::run(*args).await,
        ClientCommand::Completion(args) => completion::run(args),
        ClientCommand::Config(args) => config::run(*args),
        ClientCommand::Version(args) => version::run(*args).await,
        ClientCommand::Get(args) => get::run(*args).await,
        ClientCommand::Delete(args) => delete::run(*args).await,
        ClientCommand::Label(args) => label::run(*args).await,
        ClientCommand::Token(args) => token::run(*args).await,
        ClientCommand::Accept(args) => registration::accept(*args).await,
        ClientCommand::Deny(args) => registration::deny(*args).await,
        ClientCommand::Revoke(args) => revoke::run(*args).await,
        ClientCommand::Backup(args) => backup::run(*args).await,
        ClientCommand::Placement(args) => fleet::run(*args).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => e.report(),
    }
}
