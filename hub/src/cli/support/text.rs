//! Text of `hub describe`: aligned fields, times, indented blocks, condition tables.

use api::Condition;
use chrono::{DateTime, SecondsFormat, Utc};

use super::output::{self, Table};

/// One `Name:  value` line of a description, values aligned.
pub fn field(out: &mut String, name: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("{:<18}{value}\n", format!("{name}:")));
}

/// A time as RFC 3339 and how long ago it was.
pub fn time(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => format!(
            "{} ({} ago)",
            t.to_rfc3339_opts(SecondsFormat::Secs, true),
            output::human_duration(now - t)
        ),
        None => "<unknown>".into(),
    }
}

/// Every line indented by two spaces.
pub fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Conditions as an indented table (TYPE, STATUS, GENERATION, REASON, AGE, MESSAGE);
/// GENERATION says `(stale)` when older than `generation`.
pub fn conditions_table(
    conditions: &[Condition],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> String {
    if conditions.is_empty() {
        return "  <none>\n".into();
    }
    let mut t = Table::new(&["TYPE", "STATUS", "GENERATION", "REASON", "AGE", "MESSAGE"]);
    for c in conditions {
        let gen_cell = match (c.observed_generation, generation) {
            (Some(seen), Some(current)) if seen < current => format!("{seen} (stale)"),
            (Some(seen), _) => seen.to_string(),
            (None, _) => "-".into(),
        };
        t.row(vec![
            c.type_.clone(),
            c.status.clone(),
            gen_cell,
            if c.reason.is_empty() {
                "-".into()
            } else {
                c.reason.clone()
            },
            c.last_transition_time
                .map_or_else(|| "-".into(), |t| output::human_duration(now - t)),
            c.message.clone(),
        ]);
    }
    indent(&t.render())
}
