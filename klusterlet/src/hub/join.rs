//! `klusterlet join`: pin the hub's CA, ask to join, wait for the admin's decision.
//!
//! 1. `GET /api/v1/cluster-info` without trusting anything yet, then keep exactly the CAs
//!    of its bundle whose SubjectPublicKeyInfo SHA-256 is a `--ca-hash` (repeatable, for a
//!    CA rotation); none is a mismatch that stops here (exit 4). From then on only those
//!    CAs are trusted, and the same request is made again through them, so a server whose
//!    certificate no pinned CA signed (a man in the middle serving the real CA next to
//!    its own) is refused before the token or anything else is sent.
//! 2. Read the claims from the managed cluster.
//! 3. Generate the agent's key pair (the private half goes to `<data-dir>/agent.key`,
//!    0600), send `POST /api/v1/registrations` with the bootstrap token, and save the state.
//! 4. With `--wait`, block on the request with assertions signed by the agent's key (not
//!    the bootstrap token, so an acceptance after the token expired still completes).
//!
//! Running `join` again with the same data dir, hub and cluster name resumes the saved
//! request instead of making a new one (to keep waiting after a `--timeout`, say).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use api::{
    ClientConfig, HubClient, ListOptions, Registration, RegistrationRequest, RegistrationState,
};
use chrono::Utc;
use clap::Args;

use super::claims;
use super::identity::{self, AgentKey, Identity, JoinState};
use crate::Error;
use api::retry::Backoff;

pub mod manifests;

use manifests::ManifestArgs;

/// How long one blocking read of the join request may wait on the hub.
const BLOCKING_WAIT: Duration = Duration::from_secs(30);

/// `klusterlet join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The hub's URL, e.g. https://hub.example.com:8443.
    #[arg(long, env = "KLUSTERLET_HUB", value_name = "URL")]
    pub hub: String,
    /// The bootstrap token `hub token create` printed (ID.SECRET).
    #[arg(
        long,
        env = "KLUSTERLET_TOKEN",
        hide_env_values = true,
        value_name = "ID.SECRET"
    )]
    pub token: String,
    /// The SHA-256 of the SubjectPublicKeyInfo of a hub CA to trust (sha256:HEX). Repeat
    /// it (or separate with commas) to pin the old and the new CA during a rotation. Join
    /// trusts exactly the CAs that match and refuses any other hub.
    #[arg(
        long,
        env = "KLUSTERLET_CA_HASH",
        value_name = "sha256:HEX",
        required = true,
        value_delimiter = ','
    )]
    pub ca_hash: Vec<String>,
    /// This managed cluster's name on the hub (a DNS-1123 label).
    #[arg(long, env = "KLUSTERLET_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: String,
    /// Kubeconfig of the managed cluster (default: KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Where the agent keeps its key and state.
    #[arg(long, env = "KLUSTERLET_DATA_DIR", default_value_os_t = identity::default_data_dir())]
    pub data_dir: PathBuf,
    /// A label to ask for (repeatable); the bootstrap token's labels are added by the hub.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Wait until the hub accepts or denies the request.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (30s, 5m, 1h).
    #[arg(long, default_value = "5m", value_parser = api::parse_duration)]
    pub timeout: Duration,
    /// After joining (with --wait: once accepted), print the manifests that run the agent
    /// inside the managed cluster on stdout (messages go to stderr then), e.g. to pipe into
    /// `kubectl apply -f -`. They carry the agent's key, so the join happens first.
    #[arg(long)]
    pub print_manifests: bool,
    #[command(flatten)]
    pub manifests: ManifestArgs,
}

/// Where messages for people go: stdout, or stderr when stdout carries manifests.
struct Messages {
    to_stderr: bool,
}

impl Messages {
    fn say(&self, line: &str) {
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn progress(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// Runs `klusterlet join`.
pub async fn join(args: JoinArgs) -> Result<(), Error> {
    let JoinArgs {
        hub,
        token,
        ca_hash,
        cluster_name,
        kubeconfig,
        data_dir,
        labels,
        wait,
        timeout,
        print_manifests,
        manifests: manifest_args,
    } = args;
    let deadline = Instant::now() + timeout;
    let mut pins = ca_hash
        .iter()
        .map(|h| identity::normalize_ca_hash(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Usage)?;
    pins.sort();
    pins.dedup();
    api::selector::validate_dns_label(&cluster_name)
        .map_err(|m| Error::Usage(format!("--cluster-name: {m}")))?;
    let labels = parse_labels(&labels)?;
    let hub = hub.trim_end_matches('/').to_string();
    let messages = Messages {
        to_stderr: print_manifests,
    };

    let (identity, registration) = match JoinState::load(&data_dir) {
        Ok(existing) => resume(existing, &data_dir, &hub, &cluster_name, &pins).await?,
        Err(identity::IdentityError::NotJoined(_)) => {
            let request = Request {
                hub: &hub,
                token: &token,
                pins: &pins,
                cluster_name: &cluster_name,
                kubeconfig: kubeconfig.as_deref(),
                labels,
            };
            register(request, &data_dir).await?
        }
        Err(e) => return Err(e.into()),
    };
    let JoinState {
        registration_id: id,
        ..
    } = identity.state.clone();

    let decided = match registration.state {
        RegistrationState::Pending if wait => {
            messages.progress(&format!(
                "waiting for the hub to accept cluster {cluster_name} (request {id}); run: hub accept {cluster_name}"
            ));
            wait_for_decision(&identity, deadline, &messages).await?
        }
        _ => registration,
    };
    match decided.state {
        RegistrationState::Pending => {
            messages.say(&format!(
                "join request {id} for cluster {cluster_name} sent to {hub}; it waits for an admin: hub accept {cluster_name}"
            ));
            messages.say(&format!(
                "once accepted, start the agent with: klusterlet run --data-dir {}",
                data_dir.display()
            ));
        }
        RegistrationState::Denied => {
            let why = if decided.message.is_empty() {
                String::new()
            } else {
                format!(": {}", decided.message)
            };
            return Err(Error::Refused(format!(
                "the hub denied cluster {cluster_name} (request {id}){why}; clear the local identity with `klusterlet unjoin --data-dir {}` before joining again",
                data_dir.display()
            )));
        }
        RegistrationState::Accepted => {
            // Prove the new identity works end to end before saying so.
            let hub_client = HubClient::new(&identity.state.client_config())?;
            let assertion = identity.key.cluster_assertion(&cluster_name)?;
            hub_client.credentials(&cluster_name, &assertion).await?;
            messages.say(&format!(
                "cluster {cluster_name} joined hub {hub} (request {id} accepted)"
            ));
            if !print_manifests {
                messages.say(&format!(
                    "start the agent with: klusterlet run --data-dir {}",
                    data_dir.display()
                ));
            }
        }
    }
    if print_manifests {
        print!("{}", manifests::render(&identity, &manifest_args));
    }
    Ok(())
}

/// What a fresh join sends.
struct Request<'a> {
    hub: &'a str,
    token: &'a str,
    pins: &'a [String],
    cluster_name: &'a str,
    kubeconfig: Option<&'a std::path::Path>,
    labels: BTreeMap<String, String>,
}

/// Pins the CA, reads the claims, makes the key, sends the request and saves the state.
#[tracing::instrument(skip_all, fields(hub = %request.hub, cluster = %request.cluster_name))]
async fn register(
    request: Request<'_>,
    data_dir: &std::path::Path,
) -> Result<(Identity, Registration), Error> {
    let Request {
        hub,
        token,
        pins,
        cluster_name,
        kubeconfig,
        labels,
    } = request;
    let ca = pinned_ca(hub, pins).await?;
    let bootstrap = HubClient::new(&ClientConfig {
        server: hub.to_string(),
        ca_data: Some(ca.clone()),
        token: Some(token.to_string()),
    })?;

    let kube = claims::kube_client(kubeconfig).await?;
    let claims = claims::read(&kube).await?;
    tracing::debug!(claims = %claims::display(&claims), "read the managed cluster's claims");

    // The key is on disk before the hub hears of it, so a request the hub knows about
    // always has its private half here.
    let key = AgentKey::generate()?;
    key.save(data_dir)?;
    let registration = match bootstrap
        .register(&RegistrationRequest {
            cluster_name: cluster_name.to_string(),
            labels,
            claims,
            public_key: key.public_key_pem().to_string(),
        })
        .await
    {
        Ok(r) => r,
        Err(e) => {
            // The hub knows nothing of this key: leave no half-made identity behind.
            let _ = identity::remove(data_dir);
            return Err(e.into());
        }
    };
    tracing::info!(
        request = %registration.id,
        cluster = cluster_name,
        state = ?registration.state,
        "join request sent"
    );
    let state = JoinState {
        server: hub.to_string(),
        certificate_authority_data: ca,
        ca_hash: pins.join(","),
        cluster_name: cluster_name.to_string(),
        registration_id: registration.id.clone(),
        requested_at: Utc::now(),
    };
    state.save(data_dir)?;
    Ok((Identity { state, key }, registration))
}

/// Fetches the hub's CA bundle without trusting anything and returns exactly its
/// certificates that `pins` name, once the hub has proven, through a connection trusting
/// only them, that a pinned CA signed its serving certificate.
#[tracing::instrument(skip(pins))]
pub async fn pinned_ca(hub: &str, pins: &[String]) -> Result<String, Error> {
    let info = HubClient::for_discovery(hub)?.cluster_info().await?;
    // The hub's own `caHash` is not trusted: the hashes are computed here.
    let pinned =
        identity::pinned_certificates(&info.certificate_authority_data, pins).map_err(|found| {
            Error::CaMismatch {
                server: hub.to_string(),
                expected: pins.join(", "),
                actual: if found.is_empty() {
                    "no usable CA certificate".to_string()
                } else {
                    found.join(", ")
                },
            }
        })?;
    let verified = HubClient::new(&ClientConfig {
        server: hub.to_string(),
        ca_data: Some(pinned.clone()),
        token: None,
    })?;
    match verified.cluster_info().await {
        Ok(_) => Ok(pinned),
        Err(e @ api::ClientError::Transport { .. }) => Err(Error::CaMismatch {
            server: hub.to_string(),
            expected: pins.join(", "),
            actual: format!(
                "a pinned CA in its bundle, but a serving certificate no pinned CA accepts ({})",
                crate::Chain(&e)
            ),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The data dir already holds a request: keep going with it when it is for the same hub
/// and cluster, refuse otherwise.
#[tracing::instrument(skip(state, data_dir, pins))]
async fn resume(
    state: JoinState,
    data_dir: &std::path::Path,
    hub: &str,
    cluster_name: &str,
    pins: &[String],
) -> Result<(Identity, Registration), Error> {
    if state.server != hub || state.cluster_name != cluster_name {
        return Err(Error::Refused(format!(
            "{} already holds the identity of cluster {} on hub {}; run `klusterlet unjoin --data-dir {}` first, or use another --data-dir",
            data_dir.display(),
            state.cluster_name,
            state.server,
            data_dir.display()
        )));
    }
    // The saved CAs are what is trusted; the pins given now must name one of them.
    if !state
        .ca_hash
        .split(',')
        .any(|h| pins.iter().any(|p| p == h))
    {
        return Err(Error::CaMismatch {
            server: hub.to_string(),
            expected: pins.join(", "),
            actual: format!(
                "{} (pinned at the earlier join in {})",
                state.ca_hash,
                data_dir.display()
            ),
        });
    }
    let key = AgentKey::load(data_dir)?;
    let identity = Identity { state, key };
    eprintln!(
        "resuming join request {} for cluster {cluster_name} (saved in {})",
        identity.state.registration_id,
        data_dir.display()
    );
    let registration = identity_registration(&identity).await?;
    Ok((identity, registration))
}

/// Reads the saved request, proving the agent's identity with its key.
async fn identity_registration(identity: &Identity) -> Result<Registration, Error> {
    let client = HubClient::new(&identity.state.client_config())?;
    let assertion = identity
        .key
        .registration_assertion(&identity.state.registration_id)?;
    Ok(client
        .with_token(Some(assertion))
        .get_registration(&identity.state.registration_id, &ListOptions::default())
        .await?
        .value)
}

/// Blocks on the join request until it is decided or the deadline passes. Transient
/// failures (hub restarting, 5xx) are retried until the deadline.
#[tracing::instrument(skip_all, fields(cluster = %identity.state.cluster_name, registration = %identity.state.registration_id))]
async fn wait_for_decision(
    identity: &Identity,
    deadline: Instant,
    messages: &Messages,
) -> Result<Registration, Error> {
    let JoinState {
        registration_id: id,
        cluster_name,
        ..
    } = &identity.state;
    let client = HubClient::new(&identity.state.client_config())?;
    let started = Instant::now();
    let mut index: Option<u64> = None;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::TimedOut(format!(
                "timed out after {}s waiting for the hub to accept cluster {cluster_name} (request {id}); the request stays pending: once `hub accept {cluster_name}` is done, `klusterlet run` works without joining again",
                started.elapsed().as_secs()
            )));
        }
        let remaining = deadline - now;
        let assertion = identity.key.registration_assertion(id)?;
        let opts = ListOptions {
            index,
            wait: index.map(|_| BLOCKING_WAIT.min(remaining)),
            ..ListOptions::default()
        };
        let asked = Instant::now();
        let answer = tokio::time::timeout(
            remaining,
            client
                .with_token(Some(assertion))
                .get_registration(id, &opts),
        )
        .await;
        match answer {
            Err(_elapsed) => continue,
            Ok(Ok(r)) => {
                backoff.reset();
                if r.value.state != RegistrationState::Pending {
                    return Ok(r.value);
                }
                if index.is_some() && Some(r.index) == index {
                    messages.progress(&format!(
                        "still waiting for the hub to accept cluster {cluster_name} (request {id}, {}s); run: hub accept {cluster_name}",
                        started.elapsed().as_secs()
                    ));
                    // A hub that answers at once without blocking must not make this spin.
                    if asked.elapsed() < Duration::from_millis(200) {
                        tokio::time::sleep(Duration::from_secs(1).min(remaining)).await;
                    }
                }
                index = Some(r.index);
            }
            Ok(Err(e)) if api::retry::is_transient(&e) => {
                tracing::warn!(error = %crate::Chain(&e), "reading the join request failed; retrying");
                let delay = backoff
                    .next_delay()
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(delay).await;
            }
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// Parses repeated `--label KEY=VALUE` flags.
pub fn parse_labels(flags: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut labels = BTreeMap::new();
    for flag in flags {
        let (key, value) = flag
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--label {flag:?}: expected KEY=VALUE")))?;
        api::selector::validate_label_key(key)
            .map_err(|m| Error::Usage(format!("--label {flag:?}: key {m}")))?;
        api::selector::validate_label_value(value)
            .map_err(|m| Error::Usage(format!("--label {flag:?}: value {m}")))?;
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let parsed = parse_labels(&["env=ci".into(), "example.com/tier=web".into()]).unwrap();
        assert_eq!(parsed["env"], "ci");
        assert_eq!(parsed["example.com/tier"], "web");
        assert!(parse_labels(&["noequals".into()]).is_err());
        assert!(parse_labels(&["bad key=v".into()]).is_err());
        let err = parse_labels(&["k=has space".into()]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
