//! `hub token create|list|revoke`: bootstrap tokens for joining clusters, api tokens for
//! CI. A token's secret is shown once, in the answer to its creation.

use std::collections::BTreeMap;

use api::selector::{validate_dns_label, validate_label_key, validate_label_value};
use api::{List, Token, TokenKind, TokenRequest, Verb};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};

use super::support::connection::ConnectionArgs;
use super::support::error::{CliError, describe_client_error};
use super::support::output::{self, DocumentFormat, OutputFormat, Table};
use super::support::query::check_selector;

/// `hub token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: TokenCommand,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The verbs of `hub token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token (prints the `klusterlet join` line to run next to the
    /// managed cluster) or an api token for CI (prints the token).
    ///
    /// The secret is shown only here; the hub keeps its hash. Without -o, stdout carries
    /// only the join line (bootstrap) or the token (api), so scripts can capture it;
    /// what the token allows is said on stderr.
    ///
    /// Exit codes: 0 created; 1 the hub refused; 2 usage error; 4 the hub is unreachable
    /// or answered 5xx, 401 or 403.
    Create(Box<TokenCreateArgs>),
    /// List tokens: ID, KIND, USES, MAX, EXPIRES, AUTO-ACCEPT, LABELS/SCOPE, AGE (never
    /// their secrets).
    ///
    /// Exit codes: 0 shown; 2 usage error; 4 the hub is unreachable or answered 5xx, 401
    /// or 403.
    #[command(visible_alias = "ls")]
    List(TokenListArgs),
    /// Revoke a token: it stops working at once. Clusters that joined with a bootstrap
    /// token stay joined (`hub revoke cluster` cuts a cluster off).
    ///
    /// Exit codes: 0 revoked; 1 no such token; 2 usage error; 4 the hub is unreachable or
    /// answered 5xx, 401 or 403.
    #[command(visible_alias = "delete")]
    Revoke(TokenRevokeArgs),
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Lets a klusterlet ask to join.
    Bootstrap,
    /// Lets CI read or write the works of the clusters in its scope.
    Api,
}

/// `--verbs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerbArg {
    /// Read works and clusters.
    Read,
    /// Create, replace and delete works.
    Write,
    /// See the data of Secret manifests (otherwise replaced by hmac-sha256:<hex> placeholders).
    Secrets,
    /// Set, change or remove a work's spec.executor (the ServiceAccount the agent applies
    /// it as); with write.
    Executor,
}

impl From<VerbArg> for Verb {
    fn from(v: VerbArg) -> Self {
        match v {
            VerbArg::Read => Verb::Read,
            VerbArg::Write => Verb::Write,
            VerbArg::Secrets => Verb::Secrets,
            VerbArg::Executor => Verb::Executor,
        }
    }
}

/// `hub token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// What the token is for.
    #[arg(long, value_enum, default_value_t = KindArg::Bootstrap)]
    pub kind: KindArg,
    /// How long the token works, e.g. 30m, 1h, 168h [default: the hub's
    /// --bootstrap-token-ttl (24h) for bootstrap tokens, forever for api tokens].
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<String>,
    /// Bootstrap: accept the clusters that join with this token without `hub accept` (a
    /// name another agent already owns still waits for an admin).
    #[arg(long)]
    pub auto_accept: bool,
    /// Bootstrap: a label stamped on the clusters that join with this token; repeat for
    /// more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Bootstrap: how many joins the token allows [default: any number until it expires].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_uses: Option<u64>,
    /// Api: the clusters the token may touch, by name (comma-separated).
    #[arg(
        long,
        value_name = "NAME,...",
        value_delimiter = ',',
        conflicts_with = "cluster_selector"
    )]
    pub clusters: Vec<String>,
    /// Api: the clusters the token may touch, by label selector, e.g. env=ci.
    #[arg(long, value_name = "SELECTOR")]
    pub cluster_selector: Option<String>,
    /// Api: what the token may do (comma-separated) [default: read].
    #[arg(long, value_enum, value_name = "VERB,...", value_delimiter = ',')]
    pub verbs: Vec<VerbArg>,
    /// A note for people: who or what the token is for.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Print the created token object (with its secret in `token`) as JSON or YAML
    /// instead of the join line or the bare token.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
}

/// `hub token list`.
#[derive(Debug, Args)]
pub struct TokenListArgs {
    /// Output format: wide, name, json, yaml, or jsonpath=TEMPLATE as kubectl's
    /// (e.g. 'jsonpath={.items[*].metadata.name}') [default: a table].
    #[arg(short = 'o', long, value_name = "FORMAT", value_parser = OutputFormat::parser())]
    pub output: Option<OutputFormat>,
}

/// `hub token revoke`.
#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id (the part before the dot of ID.SECRET, as `hub token list` shows it).
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
}

/// Runs `hub token`.
pub async fn run(args: TokenArgs) -> Result<(), CliError> {
    let TokenArgs { what, connection } = args;
    match what {
        TokenCommand::Create(a) => create(*a, &connection).await,
        TokenCommand::List(TokenListArgs { output }) => list(output, &connection).await,
        TokenCommand::Revoke(TokenRevokeArgs { ids }) => revoke(&ids, &connection).await,
    }
}

fn parse_ttl(text: &str) -> Result<String, String> {
    match api::parse_duration(text)? {
        d if d.is_zero() => Err("must be longer than 0s".into()),
        _ => Ok(text.trim().to_string()),
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    validate_label_key(key).map_err(|m| format!("key {key:?}: {m}"))?;
    validate_label_value(value).map_err(|m| format!("value {value:?}: {m}"))?;
    Ok((key.to_string(), value.to_string()))
}

/// Builds the request, refusing here (exit 2) what the hub would refuse for the kind.
fn token_request(args: &TokenCreateArgs) -> Result<TokenRequest, CliError> {
    let TokenCreateArgs {
        kind,
        ttl,
        auto_accept,
        labels,
        max_uses,
        clusters,
        cluster_selector,
        verbs,
        description,
        output: _,
    } = args;
    let usage = |m: &str| Err(CliError::Usage(m.to_string()));
    match kind {
        KindArg::Bootstrap => {
            if !clusters.is_empty() || cluster_selector.is_some() || !verbs.is_empty() {
                return usage(
                    "--clusters, --cluster-selector and --verbs are for api tokens (--kind api)",
                );
            }
        }
        KindArg::Api => {
            if *auto_accept || !labels.is_empty() || max_uses.is_some() {
                return usage(
                    "--auto-accept, --label and --max-uses are for bootstrap tokens (--kind bootstrap)",
                );
            }
            if clusters.is_empty() && cluster_selector.is_none() {
                return usage(
                    "an api token needs a scope: --clusters a,b or --cluster-selector env=ci",
                );
            }
        }
    }
    for c in clusters {
        validate_dns_label(c).map_err(|m| CliError::Usage(format!("--clusters {c:?}: {m}")))?;
    }
    check_selector("--cluster-selector", cluster_selector.as_deref())?;
    let mut label_map = BTreeMap::new();
    for (k, v) in labels {
        if label_map.insert(k.clone(), v.clone()).is_some() {
            return Err(CliError::Usage(format!(
                "--label {k:?} is given more than once"
            )));
        }
    }
    Ok(TokenRequest {
        kind: match kind {
            KindArg::Bootstrap => TokenKind::Bootstrap,
            KindArg::Api => TokenKind::Api,
        },
        ttl: ttl.clone(),
        max_uses: *max_uses,
        auto_accept: *auto_accept,
        labels: label_map,
        clusters: clusters.clone(),
        cluster_selector: cluster_selector.clone(),
        verbs: verbs.iter().map(|v| Verb::from(*v)).collect(),
        description: description.clone().unwrap_or_default(),
    })
}

/// The line to run next to the managed cluster (`<name>` is for the user to fill in).
pub fn join_line(server: &str, token: &str, ca_hash: &str) -> String {
    format!(
        "klusterlet join --hub {server} --token {token} --ca-hash {ca_hash} --cluster-name <name>"
    )
}

async fn create(args: TokenCreateArgs, connection: &ConnectionArgs) -> Result<(), CliError> {
    let request = token_request(&args)?;
    let client = connection.client()?;
    // Asked before the token exists, so a hub that cannot say where it is leaves no
    // unused token behind.
    let info = match request.kind {
        TokenKind::Bootstrap if args.output.is_none() => Some(client.cluster_info().await?),
        _ => None,
    };
    let token = client.create_token(&request).await?;
    if let Some(format) = args.output {
        output::print(&output::document(&token, format)?);
        return Ok(());
    }
    let Some(secret) = token.token.as_deref() else {
        return Err(CliError::Refused(format!(
            "the hub created token {} but did not return its secret; revoke it with `hub token revoke {}`",
            token.id, token.id
        )));
    };
    let now = Utc::now();
    match info {
        Some(info) => {
            eprintln!(
                "bootstrap token {} created: {}. Run this next to the managed cluster, with its name for <name>:",
                token.id,
                summary(&token, now)
            );
            output::print(&(join_line(&info.server, secret, &info.ca_hash) + "\n"));
        }
        None => {
            eprintln!(
                "api token {} created: {}. Use it with: export HUB_TOKEN=<the token above>",
                token.id,
                summary(&token, now)
            );
            output::print(&format!("{secret}\n"));
        }
    }
    Ok(())
}

/// What a token allows, in words, for the line that announces it.
fn summary(token: &Token, now: DateTime<Utc>) -> String {
    let mut parts = Vec::new();
    match token.kind {
        TokenKind::Bootstrap => {
            parts.push(match token.max_uses {
                Some(1) => "1 join".to_string(),
                Some(n) => format!("up to {n} joins"),
                None => "any number of joins".to_string(),
            });
            parts.push(if token.auto_accept {
                "accepted automatically".to_string()
            } else {
                "each to be accepted with `hub accept NAME`".to_string()
            });
            if !token.labels.is_empty() {
                parts.push(format!("labels {}", output::labels(&token.labels)));
            }
        }
        TokenKind::Api => {
            parts.push(scope(token));
        }
    }
    parts.push(match token.expires_at {
        // From its creation, so `--ttl 1h` reads as 1h, not 59m.
        Some(at) => format!(
            "expires in {} ({})",
            output::human_duration(at - token.created_at.min(now)),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => "never expires".to_string(),
    });
    parts.join(", ")
}

/// `clusters=a,b;verbs=read` or `selector=env=ci;verbs=read,write`.
fn scope(token: &Token) -> String {
    let target = match &token.cluster_selector {
        Some(s) => format!("selector={s}"),
        None => format!("clusters={}", token.clusters.join(",")),
    };
    let verbs: Vec<&str> = token
        .verbs
        .iter()
        .map(|v| match v {
            Verb::Read => "read",
            Verb::Write => "write",
            Verb::Secrets => "secrets",
            Verb::Executor => "executor",
        })
        .collect();
    format!("{target};verbs={}", verbs.join(","))
}

/// Lists the tokens (`hub token list`, `hub get tokens`).
pub async fn list(
    output: Option<OutputFormat>,
    connection: &ConnectionArgs,
) -> Result<(), CliError> {
    let client = connection.client()?;
    let list = client.list_tokens().await?;
    print_tokens(&list, output)
}

fn print_tokens(list: &List<Token>, output: Option<OutputFormat>) -> Result<(), CliError> {
    let Some(wide) = output::table_or_print(list, output)? else {
        return Ok(());
    };
    if list.items.is_empty() {
        eprintln!("No resources found.");
        return Ok(());
    }
    let mut tokens: Vec<&Token> = list.items.iter().collect();
    tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    output::print(&token_table(&tokens, wide, Utc::now()).render());
    Ok(())
}

fn token_table(tokens: &[&Token], wide: bool, now: DateTime<Utc>) -> Table {
    let mut header = vec![
        "ID",
        "KIND",
        "USES",
        "MAX",
        "EXPIRES",
        "AUTO-ACCEPT",
        "LABELS/SCOPE",
        "AGE",
    ];
    if wide {
        header.extend(["EXPIRES-AT", "DESCRIPTION"]);
    }
    let mut table = Table::new(&header);
    for t in tokens {
        let bootstrap = t.kind == TokenKind::Bootstrap;
        let expires = match t.expires_at {
            Some(at) if at <= now => "expired".to_string(),
            Some(at) => output::human_duration(at - now),
            None => "<never>".to_string(),
        };
        let mut row = vec![
            t.id.clone(),
            if bootstrap { "bootstrap" } else { "api" }.to_string(),
            if bootstrap {
                t.uses.to_string()
            } else {
                "-".into()
            },
            t.max_uses.map_or_else(|| "-".into(), |m| m.to_string()),
            expires,
            if bootstrap {
                t.auto_accept.to_string()
            } else {
                "-".into()
            },
            if bootstrap {
                output::labels(&t.labels)
            } else {
                scope(t)
            },
            output::age(Some(t.created_at), now),
        ];
        if wide {
            row.extend([
                t.expires_at.map_or_else(
                    || "-".into(),
                    |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
                t.description.clone(),
            ]);
        }
        table.row(row);
    }
    table
}

async fn revoke(ids: &[String], connection: &ConnectionArgs) -> Result<(), CliError> {
    let client = connection.client()?;
    let mut code = 0;
    for id in ids {
        match client.revoke_token(id).await {
            Ok(()) => output::print(&format!("token {id} revoked\n")),
            Err(e) => {
                eprintln!(
                    "{}",
                    describe_client_error(&e, Some(&format!("token {id}")))
                );
                code = code.max(e.exit_code());
            }
        }
    }
    match code {
        0 => Ok(()),
        c => Err(CliError::Reported(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: TokenCreateArgs,
    }

    fn request(args: &[&str]) -> Result<TokenRequest, CliError> {
        let cmd = Cmd::try_parse_from(std::iter::once("create").chain(args.iter().copied()))
            .map_err(|e| CliError::Usage(e.to_string()))?;
        token_request(&cmd.args)
    }

    #[test]
    fn flags_become_the_request() {
        let r = request(&[
            "--ttl",
            "1h",
            "--auto-accept",
            "--label",
            "env=ci",
            "--label",
            "tier=edge",
            "--max-uses",
            "3",
        ])
        .unwrap();
        assert_eq!(r.kind, TokenKind::Bootstrap);
        assert_eq!(r.ttl.as_deref(), Some("1h"));
        assert!(r.auto_accept);
        assert_eq!(r.max_uses, Some(3));
        assert_eq!(r.labels.len(), 2);

        let r = request(&[
            "--kind",
            "api",
            "--clusters",
            "a,b",
            "--verbs",
            "read,write,secrets,executor",
        ])
        .unwrap();
        assert_eq!(r.kind, TokenKind::Api);
        assert_eq!(r.clusters, ["a", "b"]);
        assert_eq!(
            r.verbs,
            [Verb::Read, Verb::Write, Verb::Secrets, Verb::Executor]
        );
    }

    #[test]
    fn flags_of_the_other_kind_are_usage_errors() {
        for bad in [
            &["--clusters", "a"][..],
            &["--verbs", "read"],
            &["--kind", "api"],
            &["--kind", "api", "--clusters", "a", "--auto-accept"],
            &[
                "--kind",
                "api",
                "--clusters",
                "a",
                "--cluster-selector",
                "e=1",
            ],
            &["--kind", "api", "--cluster-selector", "bad key"],
            &["--label", "k=v", "--label", "k=w"],
            &["--label", "novalue"],
            &["--ttl", "0s"],
            &["--ttl", "soon"],
            &["--max-uses", "0"],
        ] {
            let err = request(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn token_table_never_shows_a_secret_and_says_what_a_token_allows() {
        let now = Utc::now();
        let bootstrap = Token {
            id: "b1".into(),
            kind: TokenKind::Bootstrap,
            expires_at: Some(now + chrono::Duration::minutes(59)),
            max_uses: Some(2),
            uses: 1,
            labels: [("env".to_string(), "ci".to_string())].into(),
            created_at: now,
            token: Some("b1.secret".into()),
            ..Default::default()
        };
        let api = Token {
            id: "a1".into(),
            kind: TokenKind::Api,
            clusters: vec!["a".into(), "b".into()],
            verbs: vec![Verb::Read],
            created_at: now,
            ..Default::default()
        };
        let text = token_table(&[&bootstrap, &api], false, now).render();
        assert!(!text.contains("secret"), "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[1],
            ["b1", "bootstrap", "1", "2", "59m", "false", "env=ci", "0s"]
        );
        assert_eq!(
            rows[2],
            [
                "a1",
                "api",
                "-",
                "-",
                "<never>",
                "-",
                "clusters=a,b;verbs=read",
                "0s"
            ]
        );
    }
}
