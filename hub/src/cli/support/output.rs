//! Output like kubectl's: aligned tables, ages, `-o json|yaml`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use api::jsonpath::Template;
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use serde::Serialize;

use super::error::CliError;

/// The resource name kubectl would print for a ManifestWork.
pub const WORK_RESOURCE: &str = "manifestwork.work.open-cluster-management.io";
/// The resource name kubectl would print for a ManagedCluster.
pub const CLUSTER_RESOURCE: &str = "managedcluster.cluster.open-cluster-management.io";
/// The resource name kubectl would print for a Placement.
pub const PLACEMENT_RESOURCE: &str = "placement.cluster.open-cluster-management.io";
/// The resource name kubectl would print for a ManifestWorkReplicaSet.
pub const SET_RESOURCE: &str = "manifestworkreplicaset.work.open-cluster-management.io";

/// `-o` formats.
#[derive(Debug, Clone)]
pub enum OutputFormat {
    /// The table with more columns.
    Wide,
    /// `kind/name` per object, one a line (as `kubectl get -o name`), for scripts.
    Name,
    /// The object or list exactly as the API returns it, as JSON.
    Json,
    /// The same as YAML.
    Yaml,
    /// `jsonpath=TEMPLATE`: kubectl's JSONPath template applied to what `-o json` prints.
    JsonPath(Arc<Template>),
}

impl OutputFormat {
    /// clap's parser of `-o`: `wide`, `name`, `json`, `yaml` or `jsonpath=TEMPLATE` (a
    /// bad template is a usage error, exit 2, naming what is wrong).
    pub fn parser() -> OutputParser {
        OutputParser
    }
}

/// Parses `-o` and lists its values for `--help` and shell completion.
#[derive(Debug, Clone, Copy)]
pub struct OutputParser;

impl clap::builder::TypedValueParser for OutputParser {
    type Value = OutputFormat;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<OutputFormat, clap::Error> {
        let invalid = |message: String| {
            let flag = arg.map_or("--output".to_string(), |a| a.to_string());
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value for '{flag}': {message}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| invalid("not UTF-8".into()))?;
        match text {
            "wide" => Ok(OutputFormat::Wide),
            "name" => Ok(OutputFormat::Name),
            "json" => Ok(OutputFormat::Json),
            "yaml" => Ok(OutputFormat::Yaml),
            _ => match text.split_once('=') {
                Some(("jsonpath", template)) => Template::parse(template)
                    .map(|t| OutputFormat::JsonPath(Arc::new(t)))
                    .map_err(|e| invalid(format!("{e}"))),
                _ => Err(invalid(format!(
                    "{text:?}: expected wide, name, json, yaml or jsonpath=TEMPLATE"
                ))),
            },
        }
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        use clap::builder::PossibleValue;
        Some(Box::new(
            [
                PossibleValue::new("wide").help("The table with more columns"),
                PossibleValue::new("name").help("kind/name per object, one a line"),
                PossibleValue::new("json").help("As the API returns it, as JSON"),
                PossibleValue::new("yaml").help("The same as YAML"),
                PossibleValue::new("jsonpath=TEMPLATE")
                    .help("kubectl's JSONPath template, e.g. jsonpath={.items[*].metadata.name}"),
            ]
            .into_iter(),
        ))
    }
}

/// Applies a JSONPath template to what `-o json` would print.
pub fn jsonpath<T: Serialize>(template: &Template, value: &T) -> Result<String, CliError> {
    let value = serde_json::to_value(value)
        .map_err(|e| CliError::Usage(format!("cannot print as JSON: {e}")))?;
    Ok(template.render(&value))
}

/// `-o` formats of commands that print one object and no table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocumentFormat {
    /// The object exactly as the API returns it, as JSON.
    Json,
    /// The same as YAML.
    Yaml,
}

/// The object as JSON or YAML.
pub fn document<T: Serialize>(value: &T, format: DocumentFormat) -> Result<String, CliError> {
    match format {
        DocumentFormat::Json => to_json(value),
        DocumentFormat::Yaml => to_yaml(value),
    }
}

/// For `-o json|yaml` prints `value` and returns `None`; otherwise returns whether the
/// table is the wide one.
pub fn table_or_print<T: Serialize>(
    value: &T,
    format: Option<OutputFormat>,
) -> Result<Option<bool>, CliError> {
    match format {
        Some(OutputFormat::Json) => print(&to_json(value)?),
        Some(OutputFormat::Yaml) => print(&to_yaml(value)?),
        Some(OutputFormat::JsonPath(t)) => print(&jsonpath(&t, value)?),
        Some(OutputFormat::Wide) => return Ok(Some(true)),
        Some(OutputFormat::Name) => {
            return Err(CliError::Usage(
                "-o name is for `hub get works` and `hub get clusters`".into(),
            ));
        }
        None => return Ok(Some(false)),
    }
    Ok(None)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Pretty JSON with a final newline.
pub fn to_json<T: Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| CliError::Usage(format!("cannot render JSON: {e}")))
}

/// YAML (one document).
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, CliError> {
    serde_saphyr::to_string(value).map_err(|e| CliError::Usage(format!("cannot render YAML: {e}")))
}

/// A table whose columns are padded to their widest cell, three spaces apart.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with this header.
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether only the header is there.
    pub fn is_empty(&self) -> bool {
        self.rows.len() <= 1
    }

    /// The rendered rows without the header line (`--no-headers`), aligned as with it.
    pub fn render_rows(&self) -> String {
        let text = self.render();
        match text.split_once('\n') {
            Some((_, rows)) => rows.to_string(),
            None => String::new(),
        }
    }

    /// The rendered table, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `k=v,k2=v2`, or `<none>`.
pub fn labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The age of an object created at `created`, as kubectl prints it.
pub fn age(created: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match created {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

/// kubectl's `HumanDuration`: `45s`, `3m10s`, `45m`, `3h10m`, `30h`, `5d4h`, `200d`, `2y`.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (TimeDelta::seconds(-5), "<invalid>"),
            (TimeDelta::milliseconds(-500), "0s"),
            (TimeDelta::seconds(45), "45s"),
            (TimeDelta::seconds(119), "119s"),
            (TimeDelta::seconds(180), "3m"),
            (TimeDelta::seconds(190), "3m10s"),
            (TimeDelta::minutes(45), "45m"),
            (TimeDelta::minutes(190), "3h10m"),
            (TimeDelta::hours(2) + TimeDelta::minutes(59), "179m"),
            (TimeDelta::hours(30), "30h"),
            (TimeDelta::days(5), "5d"),
            (TimeDelta::days(5) + TimeDelta::hours(4), "5d4h"),
            (TimeDelta::days(200), "200d"),
            (TimeDelta::days(365 * 3 + 10), "3y10d"),
            (TimeDelta::days(365 * 9), "9y"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "AGE"]);
        t.row(vec!["a-long-name".into(), "5s".into()]);
        t.row(vec!["b".into(), "".into()]);
        assert_eq!(t.render(), "NAME          AGE\na-long-name   5s\nb\n");
    }
}
