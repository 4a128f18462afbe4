//! `hub label cluster NAME k=v... k-...`.

use std::collections::BTreeMap;

use api::selector::{validate_label_key, validate_label_value};
use clap::{Args, Subcommand};

use super::support::connection::ConnectionArgs;
use super::support::error::CliError;
use super::support::output::{self, CLUSTER_RESOURCE};

/// `hub label`.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// What to label.
    #[command(subcommand)]
    pub what: LabelCommand,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The kinds `hub label` labels.
#[derive(Debug, Subcommand)]
pub enum LabelCommand {
    /// Set (`key=value`) and remove (`key-`) labels of a cluster; other labels stay.
    #[command(
        visible_alias = "clusters",
        aliases = ["managedcluster", "managedclusters", "mcl"]
    )]
    Cluster(LabelClusterArgs),
}

/// `hub label cluster`.
#[derive(Debug, Args)]
pub struct LabelClusterArgs {
    /// The cluster's name.
    pub name: String,
    /// `key=value` to set a label, `key-` to remove one.
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    pub labels: Vec<String>,
    /// Print the cluster as the API returns it, as JSON or YAML.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<output::DocumentFormat>,
}

/// Runs `hub label`.
pub async fn run(args: LabelArgs) -> Result<(), CliError> {
    let LabelArgs { what, connection } = args;
    let LabelCommand::Cluster(LabelClusterArgs {
        name,
        labels,
        output: format,
    }) = what;
    let patch = parse_label_changes(&labels)?;
    let client = connection.client()?;
    let cluster = client.set_cluster_labels(&name, &patch).await?.value;
    if let Some(format) = format {
        output::print(&output::document(&cluster, format)?);
        return Ok(());
    }
    let verb = if patch.values().any(Option::is_some) {
        "labeled"
    } else {
        "unlabeled"
    };
    output::print(&format!("{CLUSTER_RESOURCE}/{name} {verb}\n"));
    Ok(())
}

/// `k=v` → set, `k-` → remove; each key once.
pub fn parse_label_changes(args: &[String]) -> Result<BTreeMap<String, Option<String>>, CliError> {
    let mut patch = BTreeMap::new();
    for arg in args {
        let (key, value) = if let Some((k, v)) = arg.split_once('=') {
            validate_label_value(v)
                .map_err(|m| CliError::Usage(format!("label {arg:?}: value: {m}")))?;
            (k, Some(v.to_string()))
        } else if let Some(k) = arg.strip_suffix('-') {
            (k, None)
        } else {
            return Err(CliError::Usage(format!(
                "{arg:?} is neither key=value (set) nor key- (remove)"
            )));
        };
        validate_label_key(key).map_err(|m| CliError::Usage(format!("label {arg:?}: key: {m}")))?;
        if patch.insert(key.to_string(), value).is_some() {
            return Err(CliError::Usage(format!(
                "label {key:?} is given more than once"
            )));
        }
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sets_and_removals() {
        let p = parse_label_changes(&args(&["env=prod", "example.com/tier-", "empty="])).unwrap();
        assert_eq!(p["env"].as_deref(), Some("prod"));
        assert_eq!(p["example.com/tier"], None);
        assert_eq!(p["empty"].as_deref(), Some(""));
        for bad in [
            &["env"][..],
            &["env=a", "env-"],
            &["bad key=x"],
            &["k=bad value"],
        ] {
            let err = parse_label_changes(&args(bad)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
