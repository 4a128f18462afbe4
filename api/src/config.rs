//! The client configuration file (`client.yaml`) and durations as users write them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a client finds the hub: what `hub serve` writes to `<data-dir>/client.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    /// Base URL, e.g. `https://127.0.0.1:8443`.
    pub server: String,
    /// PEM of the CA that signed the hub's serving certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_data: Option<String>,
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Errors reading or writing a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid client configuration.
    #[error("{path}: not a valid client configuration: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl ClientConfig {
    /// Reads a `client.yaml` (YAML or JSON).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        read_config(path)
    }

    /// Writes the file with mode 0600: it holds a credential.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        write_config(path, self)
    }
}

/// A client config file as written by hand or by `hub config use-context`: one hub at the
/// top level (today's `client.yaml`, what `hub serve` writes), or several named contexts
/// and the current one, as kubeconfig has them. Both may be in one file: the top level is
/// used when no context is chosen.
///
/// ```yaml
/// currentContext: prod
/// contexts:
/// - name: prod
///   server: https://hub.example.com:8443
///   caData: "-----BEGIN CERTIFICATE-----\n..."
///   token: ...
/// - name: staging
///   server: https://staging.example.com:8443
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfigFile {
    /// The hub of a one-hub file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    /// Its CA (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_data: Option<String>,
    /// Its bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The context used when none is named (`--context`, `HUB_CONTEXT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Named hubs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<Context>,
}

/// One named hub of a client config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    /// The context's name (`--context NAME`).
    pub name: String,
    /// Base URL of the hub.
    #[serde(default)]
    pub server: String,
    /// PEM of the CA that signed the hub's serving certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_data: Option<String>,
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A context name the file does not have.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no context named {name:?} (contexts: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
pub struct UnknownContext {
    /// The name asked for.
    pub name: String,
    /// The names the file has.
    pub known: Vec<String>,
}

impl ClientConfigFile {
    /// Reads a client config file (YAML or JSON) in either form.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        read_config(path)
    }

    /// Writes the file with mode 0600: it holds credentials.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        write_config(path, self)
    }

    /// The names of the contexts, in the file's order.
    pub fn context_names(&self) -> Vec<String> {
        self.contexts.iter().map(|c| c.name.clone()).collect()
    }

    /// The context of this name.
    pub fn context(&self, name: &str) -> Result<&Context, UnknownContext> {
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| UnknownContext {
                name: name.to_string(),
                known: self.context_names(),
            })
    }

    /// The hub to use: the context `name`, else the current context, else the top level
    /// (`server` may then be empty: the file names no hub).
    pub fn select(&self, name: Option<&str>) -> Result<ClientConfig, UnknownContext> {
        match name.or(self.current_context.as_deref()) {
            Some(name) => {
                let c = self.context(name)?;
                Ok(ClientConfig {
                    server: c.server.clone(),
                    ca_data: c.ca_data.clone(),
                    token: c.token.clone(),
                })
            }
            None => Ok(ClientConfig {
                server: self.server.clone(),
                ca_data: self.ca_data.clone(),
                token: self.token.clone(),
            }),
        }
    }
}

/// Writes a file readable by its owner only (0600 on Unix), replacing it atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Reads a config file (YAML or JSON) of either form.
fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes a config file with mode 0600 (it holds credentials), whole or not at all.
fn write_config<T: Serialize>(path: &Path, value: &T) -> Result<(), ConfigError> {
    let text = serde_saphyr::to_string(value).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_private(path, text.as_bytes()).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The default data directory of the hub: `$XDG_DATA_HOME/hub` or `~/.local/share/hub`.
pub fn default_hub_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("hub");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/hub")
}

/// Parses a duration as users write it: `30s`, `5m`, `1h`, `250ms`, or a bare number of
/// seconds. Compound forms like `1m30s` work too.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("duration {text:?} lacks a unit (s, m, h, ms)"))?;
        if digits == 0 {
            return Err(format!("invalid duration {text:?}: expected a number"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        rest = &rest[unit_len..];
        let secs = value * factor;
        if !secs.is_finite() || secs > 1e12 {
            return Err(format!("invalid duration {text:?}: too large"));
        }
        total += Duration::from_secs_f64(secs);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "s", "5x", "-1", "1e999999s", "m5"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn config_round_trip_is_private() {
        let dir = std::env::temp_dir().join(format!("cfgtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.yaml");
        let cfg = ClientConfig {
            server: "https://127.0.0.1:1".into(),
            ca_data: Some("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n".into()),
            token: Some("t".into()),
        };
        cfg.save(&path).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap(), cfg);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn contexts_are_chosen_by_name_then_current_then_the_top_level() {
        let one: ClientConfigFile =
            serde_saphyr::from_str("server: https://one:1\ntoken: t1\n").unwrap();
        assert_eq!(one.select(None).unwrap().server, "https://one:1");
        assert_eq!(one.select(None).unwrap().token.as_deref(), Some("t1"));
        let err = one.select(Some("prod")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no context named \"prod\" (contexts: none)"
        );

        let many: ClientConfigFile = serde_saphyr::from_str(
            "currentContext: b\ncontexts:\n- name: a\n  server: https://a:1\n- name: b\n  server: https://b:1\n  token: tb\n",
        )
        .unwrap();
        assert_eq!(many.select(None).unwrap().server, "https://b:1");
        assert_eq!(many.select(Some("a")).unwrap().server, "https://a:1");
        assert_eq!(
            many.select(Some("c")).unwrap_err().to_string(),
            "no context named \"c\" (contexts: a, b)"
        );
        // A current context that is gone is an error, not a silent fallback.
        let mut stale = many.clone();
        stale.current_context = Some("gone".into());
        assert!(stale.select(None).is_err());
    }
}
