//! `hub accept`, `hub deny` and `hub get registrations`: deciding join requests, by
//! cluster name when only one request of that name is pending, otherwise by request id.

use std::time::{Duration, Instant};

use api::{HubClient, Indexed, List, ListOptions, Registration, RegistrationState};
use chrono::Utc;
use clap::Args;

use super::support::connection::ConnectionArgs;
use super::support::error::{CliError, describe_client_error};
use super::support::output::{self, DocumentFormat, OutputFormat, Table};
use super::support::watch::{block_for, humantime};

/// The flags of `hub accept` (its help text is on [`super::ClientCommand::Accept`]).
#[derive(Debug, Args)]
pub struct AcceptArgs {
    /// The clusters whose pending join request to accept.
    #[arg(value_name = "NAME", required_unless_present = "request")]
    pub names: Vec<String>,
    /// Accept this join request (its id, from `hub get registrations`) instead of the one
    /// pending request of NAME; at most one NAME goes with it, and must be the request's.
    #[arg(long, value_name = "ID", conflicts_with = "wait")]
    pub request: Option<String>,
    /// When a NAME has no join request yet, wait for one (blocking queries) and accept it.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 30s, 5m (exit code 3 when it runs out).
    #[arg(long, default_value = "5m", value_parser = api::parse_duration, requires = "wait")]
    pub timeout: Duration,
    /// Print the decided join requests as the API returns them, as JSON or YAML: the one
    /// request itself, or a `RegistrationList` when several were decided (as kubectl does).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The flags of `hub deny` (its help text is on [`super::ClientCommand::Deny`]).
#[derive(Debug, Args)]
pub struct DenyArgs {
    /// The clusters whose pending join request to deny.
    #[arg(value_name = "NAME", required_unless_present = "request")]
    pub names: Vec<String>,
    /// Deny this join request (its id, from `hub get registrations`) instead of the one
    /// pending request of NAME; at most one NAME goes with it, and must be the request's.
    #[arg(long, value_name = "ID")]
    pub request: Option<String>,
    /// Print the decided join requests as JSON or YAML, as `hub accept -o` does.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `hub get registrations`.
#[derive(Debug, Args)]
pub struct GetRegistrationsArgs {
    /// Show only this join request (its id).
    #[arg(value_name = "ID", conflicts_with = "cluster")]
    pub id: Option<String>,
    /// Show only the join requests of this cluster name.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Output format: wide, name, json, yaml, or jsonpath=TEMPLATE as kubectl's
    /// (e.g. 'jsonpath={.items[*].metadata.name}') [default: a table].
    #[arg(short = 'o', long, value_name = "FORMAT", value_parser = OutputFormat::parser())]
    pub output: Option<OutputFormat>,
}

/// Accept or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Accept,
    Deny,
}

impl Decision {
    fn past(self) -> &'static str {
        match self {
            Decision::Accept => "accepted",
            Decision::Deny => "denied",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::Deny => "deny",
        }
    }

    async fn apply(self, client: &HubClient, id: &str) -> Result<Registration, api::ClientError> {
        match self {
            Decision::Accept => client.accept_registration(id).await,
            Decision::Deny => client.deny_registration(id).await,
        }
    }
}

/// Runs `hub accept`.
pub async fn accept(args: AcceptArgs) -> Result<(), CliError> {
    let AcceptArgs {
        names,
        request,
        wait,
        timeout,
        output,
        connection,
    } = args;
    let deadline = Instant::now() + timeout;
    let wait = wait.then_some((deadline, timeout));
    let mut report = Report::new(Decision::Accept, output);
    let result = decide(&mut report, names, request, wait, &connection).await;
    report.finish()?;
    result
}

/// Runs `hub deny`.
pub async fn deny(args: DenyArgs) -> Result<(), CliError> {
    let DenyArgs {
        names,
        request,
        output,
        connection,
    } = args;
    let mut report = Report::new(Decision::Deny, output);
    let result = decide(&mut report, names, request, None, &connection).await;
    report.finish()?;
    result
}

/// What `hub accept` and `hub deny` print on stdout: a line per decided request, or with
/// `-o` the decided requests themselves, once all are decided.
struct Report {
    decision: Decision,
    format: Option<DocumentFormat>,
    decided: Vec<Registration>,
}

impl Report {
    fn new(decision: Decision, format: Option<DocumentFormat>) -> Self {
        Report {
            decision,
            format,
            decided: Vec::new(),
        }
    }

    fn decided(&mut self, reg: Registration) {
        match self.format {
            Some(_) => self.decided.push(reg),
            None => output::print(&decided_line(self.decision, &reg)),
        }
    }

    /// A line about a name that needed no decision; kept off stdout under `-o`, where
    /// only documents go.
    fn note(&self, line: &str) {
        match self.format {
            Some(_) => eprint!("{line}"),
            None => output::print(line),
        }
    }

    fn finish(self) -> Result<(), CliError> {
        let Some(format) = self.format else {
            return Ok(());
        };
        let text = match self.decided.as_slice() {
            [] => return Ok(()),
            [one] => output::document(one, format)?,
            _ => output::document(
                &List::new("RegistrationList", self.decided, 0, None),
                format,
            )?,
        };
        output::print(&text);
        Ok(())
    }
}

async fn decide(
    report: &mut Report,
    mut names: Vec<String>,
    request: Option<String>,
    wait: Option<(Instant, Duration)>,
    connection: &ConnectionArgs,
) -> Result<(), CliError> {
    let decision = report.decision;
    if let Some(id) = request {
        if names.len() > 1 {
            return Err(CliError::Usage(format!(
                "--request names one join request, so at most one NAME goes with it (got {})",
                names.join(", ")
            )));
        }
        let client = connection.client()?;
        return decide_request(&client, report, &id, names.first().map(String::as_str)).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let client = connection.client()?;
    let Indexed {
        value: list, index, ..
    } = client.list_registrations(&ListOptions::default()).await?;
    let start = index;
    let mut code = 0;
    let mut waiting = Vec::new();
    for name in names {
        match find(&list.items, &name) {
            Found::Pending(reg) => code = code.max(decide_one(&client, report, reg).await),
            Found::Ambiguous(regs) => code = code.max(ambiguous(decision, &name, &regs)),
            Found::None => {
                if decision == Decision::Accept && already_accepted(&client, &name).await? {
                    report.note(&format!("cluster {name} is already accepted\n"));
                } else if wait.is_some() {
                    waiting.push(name);
                } else {
                    eprintln!(
                        "error: cluster {name} has no pending join request (`hub get registrations` lists them{})",
                        if decision == Decision::Accept {
                            "; --wait waits for one"
                        } else {
                            ""
                        }
                    );
                    code = code.max(1);
                }
            }
        }
    }
    if let Some((deadline, timeout)) = wait
        && !waiting.is_empty()
    {
        eprintln!(
            "waiting up to {} for join requests from: {}",
            humantime(timeout),
            waiting.join(", ")
        );
        let mut index = index;
        while !waiting.is_empty() {
            let Some(wait) = block_for(deadline) else {
                break;
            };
            let opts = ListOptions {
                index: Some(index),
                wait: Some(wait),
                ..Default::default()
            };
            let Indexed {
                value: list,
                index: now,
                ..
            } = client.list_registrations(&opts).await?;
            // Never go back: a missing header must not turn into a busy loop at 0.
            index = index.max(now);
            let mut still = Vec::new();
            for name in waiting {
                match find(&list.items, &name) {
                    Found::Pending(reg) => {
                        code = code.max(decide_one(&client, report, reg).await);
                    }
                    Found::Ambiguous(regs) => code = code.max(ambiguous(decision, &name, &regs)),
                    Found::None => match accepted_since(&list.items, &name, start) {
                        // Accepted meanwhile without us: by an auto-accept token or
                        // another admin.
                        Some(reg) => report.note(&format!(
                            "cluster {name} is already accepted (request {})\n",
                            reg.id
                        )),
                        None => still.push(name),
                    },
                }
            }
            waiting = still;
        }
        if !waiting.is_empty() {
            eprintln!(
                "error: timed out after {} waiting for a join request from: {}",
                humantime(timeout),
                waiting.join(", ")
            );
            code = code.max(3);
        }
    }
    match code {
        0 => Ok(()),
        c => Err(CliError::Reported(c)),
    }
}

/// The pending join requests of one cluster name.
enum Found<'a> {
    None,
    Pending(&'a Registration),
    Ambiguous(Vec<&'a Registration>),
}

fn find<'a>(regs: &'a [Registration], name: &str) -> Found<'a> {
    let pending: Vec<&Registration> = regs
        .iter()
        .filter(|r| r.cluster_name == name && r.state == RegistrationState::Pending)
        .collect();
    match pending.as_slice() {
        [] => Found::None,
        [one] => Found::Pending(one),
        _ => Found::Ambiguous(pending),
    }
}

/// A request of `name` accepted after `start`, the index the command began at.
fn accepted_since<'a>(
    regs: &'a [Registration],
    name: &str,
    start: u64,
) -> Option<&'a Registration> {
    regs.iter().find(|r| {
        r.cluster_name == name
            && r.state == RegistrationState::Accepted
            && r.resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|v| v > start)
    })
}

async fn already_accepted(client: &HubClient, name: &str) -> Result<bool, CliError> {
    match client.get_cluster(name).await {
        Ok(c) => Ok(c.value.spec.hub_accepts_client),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Prints why the name is ambiguous; returns the exit code.
fn ambiguous(decision: Decision, name: &str, regs: &[&Registration]) -> i32 {
    let now = Utc::now();
    let list: Vec<String> = regs
        .iter()
        .map(|r| {
            format!(
                "{} (key {}, {} old)",
                r.id,
                short_key(&r.public_key_hash),
                output::age(Some(r.created_at), now)
            )
        })
        .collect();
    eprintln!(
        "error: cluster {name} has {} pending join requests: {}; pick one with `hub {} {name} --request ID`",
        regs.len(),
        list.join(", "),
        decision.verb()
    );
    1
}

/// Decides one request found by name; prints the outcome and returns the exit code.
async fn decide_one(client: &HubClient, report: &mut Report, reg: &Registration) -> i32 {
    match report.decision.apply(client, &reg.id).await {
        Ok(reg) => {
            report.decided(reg);
            0
        }
        Err(e) => {
            let about = format!("cluster {} (request {})", reg.cluster_name, reg.id);
            eprintln!("{}", describe_client_error(&e, Some(&about)));
            e.exit_code()
        }
    }
}

fn decided_line(decision: Decision, reg: &Registration) -> String {
    format!(
        "cluster {} {} (request {})\n",
        reg.cluster_name,
        decision.past(),
        reg.id
    )
}

/// `--request ID`: decides that request, after checking it is NAME's when NAME is given.
async fn decide_request(
    client: &HubClient,
    report: &mut Report,
    id: &str,
    name: Option<&str>,
) -> Result<(), CliError> {
    let reg = client
        .get_registration(id, &ListOptions::default())
        .await?
        .value;
    if let Some(name) = name
        && reg.cluster_name != name
    {
        return Err(CliError::Refused(format!(
            "join request {id} is from cluster {}, not {name}",
            reg.cluster_name
        )));
    }
    let reg = report.decision.apply(client, id).await?;
    report.decided(reg);
    Ok(())
}

/// The first 12 hex digits of a `sha256:<hex>` key hash, enough to tell keys apart by eye.
pub fn short_key(hash: &str) -> String {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    hex.chars().take(12).collect()
}

/// Runs `hub get registrations`.
pub async fn get(args: GetRegistrationsArgs, connection: &ConnectionArgs) -> Result<(), CliError> {
    let GetRegistrationsArgs {
        id,
        cluster,
        output,
    } = args;
    let client = connection.client()?;
    if let Some(id) = id {
        let reg = client
            .get_registration(&id, &ListOptions::default())
            .await?
            .value;
        return print_registrations(std::slice::from_ref(&reg), &reg, output);
    }
    let mut list: List<Registration> = client
        .list_registrations(&ListOptions::default())
        .await?
        .value;
    if let Some(name) = &cluster {
        list.items.retain(|r| &r.cluster_name == name);
    }
    list.items
        .sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    print_registrations(&list.items, &list, output)
}

fn print_registrations<T: serde::Serialize>(
    regs: &[Registration],
    raw: &T,
    output: Option<OutputFormat>,
) -> Result<(), CliError> {
    let Some(wide) = output::table_or_print(raw, output)? else {
        return Ok(());
    };
    if regs.is_empty() {
        eprintln!("No resources found.");
        return Ok(());
    }
    output::print(&registration_table(regs, wide, Utc::now()).render());
    Ok(())
}

fn registration_table(regs: &[Registration], wide: bool, now: chrono::DateTime<Utc>) -> Table {
    let mut header = vec!["ID", "CLUSTER", "STATE", "KEY", "LABELS", "AGE"];
    if wide {
        header.extend(["TOKEN", "DECIDED"]);
    }
    let mut table = Table::new(&header);
    for r in regs {
        let mut row = vec![
            r.id.clone(),
            r.cluster_name.clone(),
            format!("{:?}", r.state),
            short_key(&r.public_key_hash),
            output::labels(&r.labels),
            output::age(Some(r.created_at), now),
        ];
        if wide {
            row.extend([
                r.token_id.clone(),
                r.decided_at
                    .map_or_else(|| "-".into(), |t| output::age(Some(t), now)),
            ]);
        }
        table.row(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: &str, name: &str, state: RegistrationState, rv: u64) -> Registration {
        Registration {
            id: id.into(),
            cluster_name: name.into(),
            state,
            public_key_hash: "sha256:0123456789abcdef0123".into(),
            resource_version: Some(rv.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn a_name_is_found_only_when_one_request_is_pending() {
        let regs = [
            reg("r1", "a", RegistrationState::Pending, 1),
            reg("r2", "b", RegistrationState::Pending, 2),
            reg("r3", "b", RegistrationState::Pending, 3),
            reg("r4", "c", RegistrationState::Denied, 4),
            reg("r5", "a", RegistrationState::Accepted, 5),
        ];
        assert!(matches!(find(&regs, "a"), Found::Pending(r) if r.id == "r1"));
        assert!(matches!(find(&regs, "b"), Found::Ambiguous(v) if v.len() == 2));
        assert!(matches!(find(&regs, "c"), Found::None));
        assert_eq!(
            accepted_since(&regs, "a", 4).map(|r| r.id.as_str()),
            Some("r5")
        );
        assert!(accepted_since(&regs, "a", 5).is_none());
    }

    #[test]
    fn the_table_shows_a_short_key() {
        let now = Utc::now();
        let mut r = reg("r1", "a", RegistrationState::Pending, 1);
        r.created_at = now;
        let text = registration_table(&[r], false, now).render();
        assert_eq!(
            text,
            "ID   CLUSTER   STATE     KEY            LABELS   AGE\nr1   a         Pending   0123456789ab   <none>   0s\n"
        );
    }
}
