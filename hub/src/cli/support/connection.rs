//! Where the CLI finds the hub: flags, then environment, then `--config`/`HUB_CONFIG`,
//! then `client.yaml` in the hub's data dir (what `hub serve` writes).

use std::path::{Path, PathBuf};

use api::config::ClientConfigFile;
use api::{ClientConfig, HubClient};
use clap::Args;

use super::error::CliError;

/// How to reach the hub. Each setting is taken from the first of: its flag, its
/// environment variable, the client config file.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// The hub's URL, e.g. https://hub.example.com:8443 [default: `server` of the client
    /// config]
    #[arg(long, env = "HUB_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token [default: `token` of the client config]
    #[arg(
        long,
        env = "HUB_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// PEM file of the CA that signed the hub's certificate [default: `caData` of the
    /// client config; without either, the system's trusted roots]
    #[arg(long, env = "HUB_CA_FILE", global = true, value_name = "FILE", value_parser = any_path)]
    pub ca_file: Option<PathBuf>,
    /// Client config file (YAML with server, caData, token) [default: client.yaml in
    /// $HUB_DATA_DIR, else in ~/.local/share/hub, as `hub serve` writes it]
    #[arg(long, env = "HUB_CONFIG", global = true, value_name = "FILE", value_parser = any_path)]
    pub config: Option<PathBuf>,
    /// The context (named hub) of the client config file to use [default: its
    /// `currentContext`, else its top-level server]
    #[arg(long, env = "HUB_CONTEXT", global = true, value_name = "NAME")]
    pub context: Option<String>,
}

/// A path, empty allowed: `HUB_CA_FILE=` in a CI environment means "unset", as an empty
/// `HUB_SERVER` does, instead of clap's "a value is required".
fn any_path(text: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(text))
}

/// The connection flags, which kubectl users put before the verb (`hub --server URL get
/// works`): moved after the verb's words, where clap takes them. Everything else stays in
/// place. `args[0]` is the program.
pub fn hoist_connection_flags(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const WITH_VALUE: [&str; 5] = ["--server", "--token", "--ca-file", "--config", "--context"];
    let mut iter = args.into_iter();
    let mut out: Vec<std::ffi::OsString> = iter.next().into_iter().collect();
    let mut hoisted = Vec::new();
    let mut rest: Vec<std::ffi::OsString> = iter.collect();
    while let Some(first) = rest.first().and_then(|a| a.to_str()).map(str::to_string) {
        let name = first.split('=').next().unwrap_or_default();
        if !WITH_VALUE.contains(&name) {
            break;
        }
        hoisted.push(rest.remove(0));
        if !first.contains('=') && !rest.is_empty() {
            hoisted.push(rest.remove(0));
        }
    }
    // After the verb's own words but before a `--`, which ends the flags.
    let end = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
    let tail = rest.split_off(end);
    out.extend(rest);
    out.extend(hoisted);
    out.extend(tail);
    out
}

/// The default client config: `client.yaml` in `HUB_DATA_DIR` or the default data dir.
pub fn default_config_path() -> PathBuf {
    let dir = std::env::var_os("HUB_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(api::config::default_hub_data_dir);
    dir.join("client.yaml")
}

impl ConnectionArgs {
    /// Resolves the settings into a client configuration. The config file is read only
    /// when a setting is missing; an explicitly named file must exist, the default one
    /// may be absent.
    pub fn resolve(&self) -> Result<ClientConfig, CliError> {
        let ConnectionArgs {
            server,
            token,
            ca_file,
            config,
            context,
        } = self;
        let context = context.as_deref().filter(|c| !c.is_empty());
        // An empty variable (`HUB_CA_FILE=`) or flag means unset, as for the other settings.
        let ca_file = ca_file.as_ref().filter(|p| !p.as_os_str().is_empty());
        let config = config.as_ref().filter(|p| !p.as_os_str().is_empty());
        let ca_data = match ca_file {
            Some(path) => Some(read_ca(path)?),
            None => None,
        };
        // A named context must exist, even when the flags say everything else.
        let complete =
            server.is_some() && token.is_some() && ca_data.is_some() && context.is_none();
        let file = if complete {
            None
        } else {
            match config {
                Some(path) => Some((path.clone(), load(path, context)?)),
                None => {
                    let path = default_config_path();
                    if path.exists() {
                        Some((path.clone(), load(&path, context)?))
                    } else if let Some(name) = context {
                        return Err(CliError::Usage(format!(
                            "--context {name}: no client config at {} (pass --config FILE or \
                             HUB_CONFIG)",
                            path.display()
                        )));
                    } else {
                        None
                    }
                }
            }
        };
        let from_file = file.as_ref().map(|(_, c)| c);
        let Some(server) = server.clone().filter(|s| !s.is_empty()).or_else(|| {
            from_file
                .map(|c| c.server.clone())
                .filter(|s| !s.is_empty())
        }) else {
            let why = match &file {
                Some((path, _)) => format!("{} names no server", path.display()),
                None => format!(
                    "no --server, no HUB_SERVER, and no client config at {}",
                    default_config_path().display()
                ),
            };
            return Err(CliError::Usage(format!(
                "no hub to talk to: {why}. On the hub's machine `hub serve` writes that file \
                 (set HUB_DATA_DIR if it used --data-dir); elsewhere copy it and pass \
                 --config FILE (or HUB_CONFIG), or pass --server URL --token TOKEN --ca-file CA.pem"
            )));
        };
        Ok(ClientConfig {
            server,
            ca_data: ca_data.or_else(|| from_file.and_then(|c| c.ca_data.clone())),
            token: token
                .clone()
                .filter(|t| !t.is_empty())
                .or_else(|| from_file.and_then(|c| c.token.clone())),
        })
    }

    /// The client config file these settings name: `--config`/`HUB_CONFIG`, else the
    /// default one.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(default_config_path)
    }

    /// A client of the resolved hub.
    pub fn client(&self) -> Result<HubClient, CliError> {
        let config = self.resolve()?;
        HubClient::new(&config).map_err(|e| CliError::Usage(e.to_string()))
    }
}

/// The hub a client config file names: the context `context`, else its current one, else
/// its top level.
fn load(path: &Path, context: Option<&str>) -> Result<ClientConfig, CliError> {
    let file =
        ClientConfigFile::load(path).map_err(|e| CliError::Usage(format!("client config {e}")))?;
    file.select(context)
        .map_err(|e| CliError::Usage(format!("client config {}: {e}", path.display())))
}

fn read_ca(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("--ca-file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_flags_before_the_verb_move_after_it() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            hoist_connection_flags(args(&[
                "hub",
                "--server",
                "https://h:1",
                "--token=t",
                "get",
                "works",
                "-A"
            ])),
            args(&[
                "hub",
                "get",
                "works",
                "-A",
                "--server",
                "https://h:1",
                "--token=t"
            ])
        );
        // Nothing to move; a flag of the verb is left alone.
        assert_eq!(
            hoist_connection_flags(args(&["hub", "get", "works", "--server", "x"])),
            args(&["hub", "get", "works", "--server", "x"])
        );
        assert_eq!(
            hoist_connection_flags(args(&[
                "hub", "--config", "c.yaml", "apply", "-f", "-", "--", "x"
            ])),
            args(&["hub", "apply", "-f", "-", "--config", "c.yaml", "--", "x"])
        );
        assert_eq!(hoist_connection_flags(args(&["hub"])), args(&["hub"]));
    }

    /// A client config file naming server `https://file:1`, CA `FILE CA`, token
    /// `file-token`.
    fn file_config(dir: &Path) -> PathBuf {
        let path = dir.join("c.yaml");
        ClientConfig {
            server: "https://file:1".into(),
            ca_data: Some("FILE CA".into()),
            token: Some("file-token".into()),
        }
        .save(&path)
        .unwrap();
        path
    }

    #[test]
    fn an_empty_ca_file_or_config_setting_counts_as_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_config(dir.path());
        // `HUB_CA_FILE=` in the environment: read as no CA file, not as a file named "".
        let args = ConnectionArgs {
            ca_file: Some(PathBuf::new()),
            config: Some(path),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.ca_data.as_deref(), Some("FILE CA"));
        let args = ConnectionArgs {
            server: Some("https://flag:2".into()),
            config: Some(PathBuf::new()),
            ..Default::default()
        };
        assert_eq!(args.resolve().unwrap().server, "https://flag:2");
    }

    #[test]
    fn flags_win_over_the_file_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_config(dir.path());
        let args = ConnectionArgs {
            server: Some("https://flag:2".into()),
            config: Some(path.clone()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.server, "https://flag:2");
        assert_eq!(c.token.as_deref(), Some("file-token"));
        assert_eq!(c.ca_data.as_deref(), Some("FILE CA"));

        let args = ConnectionArgs {
            token: Some("flag-token".into()),
            config: Some(path),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.server, "https://file:1");
        assert_eq!(c.token.as_deref(), Some("flag-token"));
    }

    #[test]
    fn a_named_config_that_is_missing_is_a_usage_error() {
        let args = ConnectionArgs {
            config: Some("/nonexistent/client.yaml".into()),
            ..Default::default()
        };
        let err = args.resolve().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("/nonexistent/client.yaml"),
            "{err}"
        );
    }
}
