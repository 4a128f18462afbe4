//! Cluster selectors compiled once: label and claim requirements with Kubernetes semantics,
//! and CEL programs over the ManagedCluster document. Used by predicates, decision groups
//! and (through the lead's code) a set's overrides and weights.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock};

use api::fleet::{ClusterSelector, SelectorRequirement};
use api::selector::{validate_label_key, validate_label_value};
use api::{FieldError, ManagedCluster};

/// Most CEL expressions in one selector (OCM's limit).
pub const MAX_CEL_EXPRESSIONS: usize = 64;
/// Longest CEL expression, in bytes.
pub const MAX_CEL_LENGTH: usize = api::cel::MAX_CEL_LENGTH;
/// Most requirements in one label or claim selector.
const MAX_REQUIREMENTS: usize = 64;

/// The name CEL expressions see the cluster under (OCM's).
const CEL_VARIABLE: &str = "managedCluster";

/// One CEL environment for every program: building the standard library is not free.
static CEL_ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));

/// What a requirement looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Label,
    Claim,
}

impl Source {
    fn noun(self) -> &'static str {
        match self {
            Source::Label => "label",
            Source::Claim => "claim",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One checked requirement (a `matchLabels` pair is an `In` with one value).
#[derive(Debug, Clone)]
struct Term {
    source: Source,
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Term {
    fn value_in<'c>(&self, cluster: &'c ManagedCluster) -> Option<&'c str> {
        match self.source {
            Source::Label => cluster.metadata.labels.get(&self.key).map(String::as_str),
            Source::Claim => cluster
                .status
                .claims
                .iter()
                .find(|c| c.name == self.key)
                .map(|c| c.value.as_str()),
        }
    }

    /// As [`Term::check`] without the sentence (the decision path formats nothing).
    fn holds(&self, cluster: &ManagedCluster) -> bool {
        let value = self.value_in(cluster);
        let listed = |v: &str| self.values.iter().any(|w| w == v);
        match self.operator {
            Operator::In => value.is_some_and(listed),
            Operator::NotIn => !value.is_some_and(listed),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }

    fn check(&self, cluster: &ManagedCluster) -> Result<(), String> {
        let noun = self.source.noun();
        let key = &self.key;
        let value = self.value_in(cluster);
        let listed = |v: &str| self.values.iter().any(|w| w == v);
        let list = || format!("[{}]", self.values.join(", "));
        match (self.operator, value) {
            (Operator::In, Some(v)) if listed(v) => Ok(()),
            (Operator::In, Some(v)) => Err(format!("{noun} {key}={v} not in {}", list())),
            (Operator::In, None) => Err(format!("{noun} {key} missing (wanted in {})", list())),
            (Operator::NotIn, Some(v)) if listed(v) => {
                Err(format!("{noun} {key}={v} is in {} (NotIn)", list()))
            }
            (Operator::NotIn, _) => Ok(()),
            (Operator::Exists, Some(_)) => Ok(()),
            (Operator::Exists, None) => Err(format!("{noun} {key} missing")),
            (Operator::DoesNotExist, None) => Ok(()),
            (Operator::DoesNotExist, Some(v)) => {
                Err(format!("{noun} {key}={v} present (DoesNotExist)"))
            }
        }
    }
}

/// A compiled CEL expression and its text (for reasons).
struct CelExpression {
    index: usize,
    text: String,
    program: cel::Program,
}

impl std::fmt::Debug for CelExpression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CelExpression")
            .field("index", &self.index)
            .field("text", &self.text)
            .finish()
    }
}

impl CelExpression {
    fn check(&self, cluster: &ManagedCluster, scope: &mut CelScope) -> Result<(), String> {
        let context = scope.bind(cluster)?;
        let shown = shorten(&self.text);
        // The interpreter is third-party code run on user input: a panic in it must fail
        // this cluster, not the hub.
        let result = catch_unwind(AssertUnwindSafe(|| self.program.execute(context)));
        match result {
            Ok(Ok(cel::Value::Bool(true))) => Ok(()),
            Ok(Ok(cel::Value::Bool(false))) => {
                Err(format!("CEL expression {} `{shown}` was false", self.index))
            }
            Ok(Ok(other)) => Err(format!(
                "CEL expression {} `{shown}` returned {}, not a boolean",
                self.index,
                other.type_of()
            )),
            Ok(Err(e)) => Err(format!(
                "CEL expression {} `{shown}` failed: {e}",
                self.index
            )),
            Err(_) => Err(format!(
                "CEL expression {} `{shown}` failed: the interpreter panicked",
                self.index
            )),
        }
    }
}

/// Long expressions are cut in reasons; the placement has the full text.
fn shorten(text: &str) -> String {
    const MAX: usize = 120;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The CEL context of one evaluation, with the cluster last bound: a cluster is turned into
/// a CEL value once, and only when an expression needs it.
pub(crate) struct CelScope {
    context: cel::Context<'static, 'static>,
    bound: Option<String>,
    bind_error: Option<String>,
}

impl CelScope {
    pub(crate) fn new() -> Self {
        CelScope {
            context: cel::Context::with_env(CEL_ENV.clone()),
            bound: None,
            bind_error: None,
        }
    }

    fn bind(
        &mut self,
        cluster: &ManagedCluster,
    ) -> Result<&cel::Context<'static, 'static>, String> {
        let name = &cluster.metadata.name;
        if self.bound.as_ref() != Some(name) {
            self.bind_error = match cel::to_value(cluster) {
                Ok(value) => {
                    self.context.add_variable_from_value(CEL_VARIABLE, value);
                    None
                }
                Err(e) => Some(format!("the cluster could not be given to CEL: {e}")),
            };
            self.bound = Some(name.clone());
        }
        match &self.bind_error {
            Some(e) => Err(e.clone()),
            None => Ok(&self.context),
        }
    }
}

/// A compiled cluster selector: label, claim and CEL parts, all of which must hold.
#[derive(Debug, Default)]
pub struct ClusterMatcher {
    terms: Vec<Term>,
    cel: Vec<CelExpression>,
}

impl ClusterMatcher {
    /// Whether the cluster passes; if not, the first part that failed, in one sentence.
    pub fn matches(&self, cluster: &ManagedCluster) -> Result<(), String> {
        self.matches_in(cluster, &mut CelScope::new())
    }

    /// As [`ClusterMatcher::matches`], reusing an evaluation's CEL context.
    pub(crate) fn matches_in(
        &self,
        cluster: &ManagedCluster,
        scope: &mut CelScope,
    ) -> Result<(), String> {
        for term in &self.terms {
            term.check(cluster)?;
        }
        for expression in &self.cel {
            expression.check(cluster, scope)?;
        }
        Ok(())
    }

    /// Whether the cluster passes, without saying why not.
    pub fn accepts(&self, cluster: &ManagedCluster) -> bool {
        self.accepts_in(cluster, &mut CelScope::new())
    }

    /// As [`ClusterMatcher::accepts`], reusing an evaluation's CEL context.
    pub(crate) fn accepts_in(&self, cluster: &ManagedCluster, scope: &mut CelScope) -> bool {
        self.terms.iter().all(|t| t.holds(cluster))
            && self.cel.iter().all(|e| e.check(cluster, scope).is_ok())
    }

    /// Whether it has CEL expressions (callers then share one [`CelScope`] per cluster).
    pub fn uses_cel(&self) -> bool {
        !self.cel.is_empty()
    }
}

/// Checks and compiles a selector; `path` is where it sits in the request (errors carry
/// `path.labelSelector.matchExpressions[0].values` and the like).
pub fn compile_selector(
    selector: &ClusterSelector,
    path: &str,
) -> Result<ClusterMatcher, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut matcher = ClusterMatcher::default();
    if let Some(labels) = &selector.label_selector {
        let at = format!("{path}.labelSelector");
        for (key, value) in &labels.match_labels {
            let field = format!("{at}.matchLabels[{key}]");
            if let Err(m) = validate_label_key(key) {
                errors.push(error(&field, format!("label key {key:?}: {m}")));
            }
            if let Err(m) = validate_label_value(value) {
                errors.push(error(&field, format!("label value {value:?}: {m}")));
            }
            matcher.terms.push(Term {
                source: Source::Label,
                key: key.clone(),
                operator: Operator::In,
                values: vec![value.clone()],
            });
        }
        compile_requirements(
            &labels.match_expressions,
            Source::Label,
            &format!("{at}.matchExpressions"),
            &mut matcher.terms,
            &mut errors,
        );
    }
    if let Some(claims) = &selector.claim_selector {
        compile_requirements(
            &claims.match_expressions,
            Source::Claim,
            &format!("{path}.claimSelector.matchExpressions"),
            &mut matcher.terms,
            &mut errors,
        );
    }
    if let Some(cel) = &selector.cel_selector {
        let at = format!("{path}.celSelector.celExpressions");
        if cel.cel_expressions.len() > MAX_CEL_EXPRESSIONS {
            errors.push(error(
                &at,
                format!(
                    "{} expressions; at most {MAX_CEL_EXPRESSIONS} are allowed",
                    cel.cel_expressions.len()
                ),
            ));
        }
        for (index, text) in cel.cel_expressions.iter().enumerate() {
            let field = format!("{at}[{index}]");
            match compile_cel(text) {
                Ok(program) => matcher.cel.push(CelExpression {
                    index,
                    text: text.clone(),
                    program,
                }),
                Err(m) => errors.push(error(&field, m)),
            }
        }
    }
    if errors.is_empty() {
        Ok(matcher)
    } else {
        Err(errors)
    }
}

fn compile_requirements(
    requirements: &[SelectorRequirement],
    source: Source,
    at: &str,
    terms: &mut Vec<Term>,
    errors: &mut Vec<FieldError>,
) {
    if requirements.len() > MAX_REQUIREMENTS {
        errors.push(error(
            at,
            format!(
                "{} requirements; at most {MAX_REQUIREMENTS} are allowed",
                requirements.len()
            ),
        ));
    }
    for (j, requirement) in requirements.iter().enumerate() {
        let field = format!("{at}[{j}]");
        let key = &requirement.key;
        if let Err(m) = validate_label_key(key) {
            errors.push(error(
                &format!("{field}.key"),
                format!("{} name {key:?}: {m}", source.noun()),
            ));
        }
        let operator = match requirement.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                errors.push(error(
                    &format!("{field}.operator"),
                    format!("unknown operator {other:?}: one of In, NotIn, Exists, DoesNotExist"),
                ));
                continue;
            }
        };
        let values_field = format!("{field}.values");
        match operator {
            Operator::In | Operator::NotIn if requirement.values.is_empty() => {
                errors.push(error(
                    &values_field,
                    format!("{} needs at least one value", requirement.operator),
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !requirement.values.is_empty() => {
                errors.push(error(
                    &values_field,
                    format!("{} takes no values", requirement.operator),
                ));
            }
            _ => {}
        }
        // Claim values are free text (OCM allows any string); label values are checked.
        if source == Source::Label {
            for (k, value) in requirement.values.iter().enumerate() {
                if let Err(m) = validate_label_value(value) {
                    errors.push(error(
                        &format!("{values_field}[{k}]"),
                        format!("label value {value:?}: {m}"),
                    ));
                }
            }
        }
        terms.push(Term {
            source,
            key: key.clone(),
            operator,
            values: requirement.values.clone(),
        });
    }
}

/// Compiles one expression; the error names the line and column (one format for every
/// CEL the hub checks, in [`api::cel::compile`]).
fn compile_cel(text: &str) -> Result<cel::Program, String> {
    api::cel::compile(&CEL_ENV, text)
}

pub(crate) fn error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}
