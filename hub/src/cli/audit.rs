//! `hub get audit`: who did what, when, from where (admins only).

use api::{AuditEntry, List};
use chrono::SecondsFormat;
use clap::Args;

use super::support::connection::ConnectionArgs;
use super::support::error::CliError;
use super::support::output::{self, OutputFormat, Table};

/// `hub get audit`.
#[derive(Debug, Args)]
pub struct GetAuditArgs {
    /// Only entries about this target and what is below it, e.g. clusters/c1,
    /// tokens/ID, registrations/ID.
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
    /// Show at most this many entries, newest first [default: the hub's, 100].
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Output format: wide, name, json, yaml, or jsonpath=TEMPLATE as kubectl's
    /// (e.g. 'jsonpath={.items[*].metadata.name}') [default: a table].
    #[arg(short = 'o', long, value_name = "FORMAT", value_parser = OutputFormat::parser())]
    pub output: Option<OutputFormat>,
}

/// Runs `hub get audit`.
pub async fn get(args: GetAuditArgs, connection: &ConnectionArgs) -> Result<(), CliError> {
    let GetAuditArgs {
        target,
        limit,
        output,
    } = args;
    let client = connection.client()?;
    let list = client.list_audit(target.as_deref(), limit).await?;
    print_audit(&list, output)
}

fn print_audit(list: &List<AuditEntry>, output: Option<OutputFormat>) -> Result<(), CliError> {
    let Some(wide) = output::table_or_print(list, output)? else {
        return Ok(());
    };
    if list.items.is_empty() {
        eprintln!("No resources found.");
        return Ok(());
    }
    output::print(&audit_table(&list.items, wide).render());
    Ok(())
}

fn audit_table(entries: &[AuditEntry], wide: bool) -> Table {
    let mut header = vec!["TIME", "ACTOR", "ACTION", "TARGET", "SOURCE"];
    if wide {
        header.push("DETAILS");
    }
    let mut table = Table::new(&header);
    for e in entries {
        let mut row = vec![
            e.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            if e.source.is_empty() {
                "-".into()
            } else {
                e.source.clone()
            },
        ];
        if wide {
            row.push(match &e.details {
                serde_json::Value::Null => "-".into(),
                serde_json::Value::Object(m) if m.is_empty() => "-".into(),
                d => d.to_string(),
            });
        }
        table.row(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_as_a_table() {
        let at = chrono::DateTime::parse_from_rfc3339("2025-01-02T03:04:05.678Z")
            .unwrap()
            .to_utc();
        let e = AuditEntry {
            id: 1,
            at,
            actor: "admin".into(),
            action: "token.create".into(),
            target: "tokens/ab12".into(),
            source: "127.0.0.1:5000".into(),
            details: serde_json::json!({"kind": "api"}),
        };
        assert_eq!(
            audit_table(std::slice::from_ref(&e), true).render(),
            "TIME                   ACTOR   ACTION         TARGET        SOURCE           DETAILS\n\
             2025-01-02T03:04:05Z   admin   token.create   tokens/ab12   127.0.0.1:5000   {\"kind\":\"api\"}\n"
        );
    }
}
