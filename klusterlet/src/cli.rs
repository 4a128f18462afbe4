//! The `klusterlet` command line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::Error;
use crate::hub::identity::{self, JoinState};
use crate::hub::join::{self, JoinArgs};
use crate::hub::session::{self, TokenArgs};
use crate::run::{self, RunArgs};

/// The fleethub agent: joins a hub, then keeps its managed cluster's lease (and applies its
/// works).
///
/// Exit codes: 0 success; 1 refused (the join was denied, a 4xx answer other than 401/403,
/// a data dir holding another identity, the managed cluster unreadable); 2 usage error;
/// 3 timed out; 4 the hub is unreachable, is not the hub --ca-hash pins, or answered 5xx,
/// 401 or 403.
///
/// Logs go to stderr; KLUSTERLET_LOG sets the filter (e.g. `debug`). Tokens, keys and
/// assertions are never logged.
#[derive(Debug, Parser)]
#[command(name = "klusterlet", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a hub to let this managed cluster join, pinning the hub's CA.
    ///
    /// Checks the hub's CA against --ca-hash (refusing any other hub), reads claims from
    /// the managed cluster (Kubernetes version, platform, node count, allocatable CPU and
    /// memory), generates the agent's key pair (the private key stays in --data-dir, mode
    /// 0600) and sends the join request. With --wait, waits until an admin accepts (exit 0)
    /// or denies (exit 1) it, or --timeout runs out (exit 3; the request stays pending).
    /// Waiting proves the agent's identity with its key, so an acceptance after the
    /// bootstrap token expired still completes.
    ///
    /// Running join again with the same data dir, hub and cluster name resumes the saved
    /// request; a data dir holding another identity is refused (exit 1).
    Join(JoinArgs),
    /// Run the agent: keep the access token and the lease fresh until SIGTERM or SIGINT.
    ///
    /// An unreachable hub and 5xx answers are retried with backoff, so an agent comes back
    /// by itself after an outage of any length. When the hub refuses the agent's key for
    /// good (the cluster was deleted, its agent revoked, or another key accepted for it)
    /// the agent stops with exit code 1 and says so; it never deletes the workloads
    /// because of that.
    ///
    /// Exit codes: 0 stopped by SIGTERM or SIGINT; 1 refused for good by the hub, or the
    /// managed cluster could not be used at start; 2 usage error.
    Run(RunArgs),
    /// Print a fresh access JWT for this cluster's agent (for debugging and scripts, like
    /// `kubectl create token`).
    Token(TokenArgs),
    /// Remove this agent's local identity (agent.key, state.yaml), and with
    /// --remove-ledger its ledger on the managed cluster.
    ///
    /// The resources the works applied stay on the managed cluster (delete the works on
    /// the hub first, while the agent runs, to remove them).
    ///
    /// The hub keeps the cluster: remove it there with `hub delete cluster NAME`, or cut
    /// the agent off with `hub revoke cluster NAME`.
    Unjoin(UnjoinArgs),
}

/// `klusterlet unjoin`.
#[derive(Debug, Args)]
pub struct UnjoinArgs {
    /// Where `klusterlet join` left the agent's key and state.
    #[arg(long, env = "KLUSTERLET_DATA_DIR", default_value_os_t = identity::default_data_dir())]
    pub data_dir: PathBuf,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Also remove what the agent installed on the managed cluster for itself: its ledger
    /// records (ConfigMaps labelled fleethub.io/ledger in --namespace) and the namespace,
    /// when the agent created it and nothing else is left in it.
    #[arg(long)]
    pub remove_ledger: bool,
    /// Kubeconfig of the managed cluster, for --remove-ledger (default: KUBECONFIG,
    /// ~/.kube/config, or the in-cluster service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The agent's ledger namespace, as given to `klusterlet run --namespace`.
    #[arg(
        long,
        env = "KLUSTERLET_NAMESPACE",
        default_value = "open-cluster-management-agent"
    )]
    pub namespace: String,
}

impl Command {
    /// The default log filter: the agent reports what it does; one-shot commands only
    /// warn.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Run(_) => "info",
            _ => "warn",
        }
    }
}

/// Runs a verb and returns the process exit code, printing a failure as one line on stderr.
pub async fn run(command: Command) -> i32 {
    let result = match command {
        Command::Join(args) => join::join(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Token(args) => session::token(args).await,
        Command::Unjoin(args) => unjoin(args).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", crate::Chain(&e));
            e.exit_code()
        }
    }
}

async fn remove_the_ledger(
    kubeconfig: Option<&std::path::Path>,
    namespace: &str,
) -> Result<(), Error> {
    let kube = crate::hub::claims::kube_client(kubeconfig).await?;
    let removed = crate::work::ledger::Ledger::existing(kube, namespace)
        .remove_all()
        .await?;
    println!("{removed}");
    Ok(())
}

/// Removes the local identity after confirming.
async fn unjoin(args: UnjoinArgs) -> Result<(), Error> {
    let UnjoinArgs {
        data_dir,
        yes,
        remove_ledger,
        kubeconfig,
        namespace,
    } = args;
    let state = match JoinState::load(&data_dir) {
        Ok(s) => Some(s),
        Err(identity::IdentityError::NotJoined(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let has_key = data_dir.join(identity::KEY_FILE).exists();
    if state.is_none() && !has_key {
        println!("no klusterlet identity in {}", data_dir.display());
        if remove_ledger {
            // A second try after the cluster could not be reached the first time.
            remove_the_ledger(kubeconfig.as_deref(), &namespace).await?;
        }
        return Ok(());
    }
    let who = match &state {
        Some(s) => format!("cluster {} on hub {}", s.cluster_name, s.server),
        None => "an unfinished join".to_string(),
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::Usage(format!(
                "unjoin removes the identity of {who} from {}; pass --yes to confirm when not on a terminal",
                data_dir.display()
            )));
        }
        eprint!(
            "Remove the identity of {who} from {}? This agent can no longer talk to the hub afterwards. [y/N] ",
            data_dir.display()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| Error::Usage(format!("reading the confirmation: {e}")))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            return Err(Error::Refused("not confirmed; nothing removed".into()));
        }
    }
    let removed = identity::remove(&data_dir)?;
    let names: Vec<String> = removed
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    println!(
        "removed the identity of {who} from {} ({})",
        data_dir.display(),
        names.join(", ")
    );
    if let Some(s) = state {
        println!(
            "the hub still has cluster {0}: remove it with `hub delete cluster {0}`, or cut this agent off with `hub revoke cluster {0}`",
            s.cluster_name
        );
    }
    if remove_ledger {
        remove_the_ledger(kubeconfig.as_deref(), &namespace).await?;
    } else {
        println!(
            "left on the managed cluster: the agent's ledger in namespace {namespace} \
             (`klusterlet unjoin --remove-ledger` removes it) and every resource its works \
             applied"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn join_flags_parse() {
        let cli = Cli::try_parse_from([
            "klusterlet",
            "join",
            "--hub",
            "https://h:8443",
            "--token",
            "abc.def",
            "--ca-hash",
            "sha256:00",
            "--cluster-name",
            "c1",
            "--label",
            "env=ci",
            "--label",
            "tier=web",
            "--wait",
            "--timeout",
            "90s",
        ])
        .unwrap();
        let Command::Join(args) = cli.command else {
            panic!("not join")
        };
        assert_eq!(args.labels, ["env=ci", "tier=web"]);
        assert!(args.wait);
        assert_eq!(args.timeout, std::time::Duration::from_secs(90));
        assert_eq!(args.manifests.namespace, "open-cluster-management-agent");
    }

    #[tokio::test]
    async fn unjoin_without_identity_is_a_no_op_and_with_one_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let args = |yes| UnjoinArgs {
            data_dir: dir.path().to_path_buf(),
            yes,
            remove_ledger: false,
            kubeconfig: None,
            namespace: "open-cluster-management-agent".into(),
        };
        unjoin(args(false)).await.unwrap();
        let key = identity::AgentKey::generate().unwrap();
        key.save(dir.path()).unwrap();
        unjoin(args(true)).await.unwrap();
        assert!(!dir.path().join(identity::KEY_FILE).exists());
    }
}
