//! Choosing `numberOfClusters` from the candidates, best first, under spread constraints:
//! greedy by score, each pick checked against every constraint's skew (the difference of
//! decisions between the most and the least used domain that has feasible clusters).

use std::collections::HashMap;

use api::ManagedCluster;

/// A checked spread constraint.
#[derive(Debug, Clone)]
pub(crate) struct SpreadRule {
    pub(crate) key: String,
    /// The key names a claim rather than a label.
    pub(crate) claim: bool,
    pub(crate) max_skew: i64,
    /// `DoNotSchedule`: a pick that would exceed `max_skew` is not made.
    pub(crate) hard: bool,
}

impl SpreadRule {
    fn value_of<'c>(&self, cluster: &'c ManagedCluster) -> Option<&'c str> {
        if self.claim {
            cluster
                .status
                .claims
                .iter()
                .find(|c| c.name == self.key)
                .map(|c| c.value.as_str())
        } else {
            cluster.metadata.labels.get(&self.key).map(String::as_str)
        }
    }

    fn mode(&self) -> &'static str {
        if self.hard {
            "DoNotSchedule"
        } else {
            "ScheduleAnyway"
        }
    }
}

/// One constraint's domains over the candidates and the decisions in each.
struct Domains<'c> {
    names: Vec<&'c str>,
    /// Each candidate's domain.
    of: Vec<Option<usize>>,
    counts: Vec<i64>,
    /// The lowest count, the highest, and how many domains are at the lowest.
    stats: (i64, i64, usize),
}

impl Domains<'_> {
    /// The skew if one more decision went to `domain`.
    fn skew_with(&self, domain: usize) -> i64 {
        let (min, max, at_min) = self.stats;
        let mine = self.counts[domain];
        let new_max = max.max(mine + 1);
        // Counts are integers: if this was the only domain at the minimum, it rises by one
        // and every other domain is at least that.
        let new_min = if mine == min && at_min == 1 {
            min + 1
        } else {
            min
        };
        new_max - new_min
    }

    /// One more decision in `domain`.
    fn add(&mut self, domain: usize) {
        self.counts[domain] += 1;
        let min = self.counts.iter().copied().min().unwrap_or(0);
        let max = self.counts.iter().copied().max().unwrap_or(0);
        let at_min = self.counts.iter().filter(|&&c| c == min).count();
        self.stats = (min, max, at_min);
    }

    /// `domain eu has 2, us has 0` (the given domain first).
    fn describe(&self, first: Option<usize>) -> String {
        const SHOWN: usize = 8;
        let mut order: Vec<usize> = (0..self.names.len()).collect();
        order.sort_by_key(|&d| (Some(d) != first, self.names[d]));
        let mut parts: Vec<String> = order
            .iter()
            .take(SHOWN)
            .map(|&d| format!("{} has {}", self.names[d], self.counts[d]))
            .collect();
        if order.len() > SHOWN {
            parts.push(format!("and {} more", order.len() - SHOWN));
        }
        format!("domain {}", parts.join(", "))
    }
}

/// The outcome: which candidates were chosen, and for the others whether a constraint
/// stands in their way.
pub(crate) struct Picked {
    /// Positions in the candidate order, in the order chosen.
    pub(crate) chosen: Vec<usize>,
    /// Per candidate: a sentence about the spread (why it was skipped, or chosen against
    /// a ScheduleAnyway constraint).
    pub(crate) notes: Vec<Option<String>>,
}

/// Chooses up to `want` of `candidates` (best first).
pub(crate) fn pick(rules: &[SpreadRule], candidates: &[&ManagedCluster], want: usize) -> Picked {
    let n = candidates.len();
    let mut notes = vec![None; n];
    if rules.is_empty() {
        return Picked {
            chosen: (0..want.min(n)).collect(),
            notes,
        };
    }
    let mut domains: Vec<Domains<'_>> = rules
        .iter()
        .map(|rule| {
            let mut index: HashMap<&str, usize> = HashMap::new();
            let mut names = Vec::new();
            let of = candidates
                .iter()
                .map(|c| {
                    rule.value_of(c).map(|v| {
                        *index.entry(v).or_insert_with(|| {
                            names.push(v);
                            names.len() - 1
                        })
                    })
                })
                .collect();
            let counts = vec![0; names.len()];
            let stats = (0, 0, names.len());
            Domains {
                names,
                of,
                counts,
                stats,
            }
        })
        .collect();
    let mut taken = vec![false; n];
    let mut chosen = Vec::new();
    while chosen.len() < want {
        let fits = |c: usize, hard: bool, domains: &[Domains<'_>]| {
            rules
                .iter()
                .zip(domains)
                .filter(|(r, _)| r.hard == hard)
                .all(|(r, d)| match d.of[c] {
                    Some(domain) => d.skew_with(domain) <= r.max_skew,
                    // Without the key a cluster cannot count toward a domain: not eligible
                    // under DoNotSchedule, neutral under ScheduleAnyway.
                    None => !hard,
                })
        };
        let mut first_allowed = None;
        let mut fitting = None;
        for c in (0..n).filter(|&c| !taken[c] && fits(c, true, &domains)) {
            first_allowed.get_or_insert(c);
            if fits(c, false, &domains) {
                fitting = Some(c);
                break;
            }
        }
        let Some(first_allowed) = first_allowed else {
            for c in (0..n).filter(|&c| !taken[c]) {
                notes[c] = violation(rules, &domains, c, true);
            }
            break;
        };
        let (choice, note) = match fitting {
            Some(c) => (c, None),
            None => {
                let allowed: Vec<usize> = (first_allowed..n)
                    .filter(|&c| !taken[c] && fits(c, true, &domains))
                    .collect();
                // No pick keeps every ScheduleAnyway constraint: the best of the least used
                // domain of the first such constraint (there is one, or every allowed pick
                // would have fit).
                let soft = rules.iter().zip(&domains).find(|(r, _)| !r.hard);
                let Some((r, d)) = soft else {
                    break;
                };
                let least = allowed
                    .iter()
                    .filter_map(|&c| d.of[c].map(|x| d.counts[x]))
                    .min()
                    .and_then(|min| {
                        allowed
                            .iter()
                            .copied()
                            .find(|&c| d.of[c].is_some_and(|x| d.counts[x] == min))
                    });
                let c = least.unwrap_or(first_allowed);
                let note = format!(
                    "spread {}: chosen though it exceeds maxSkew {} ({}); before it, {}",
                    r.key,
                    r.max_skew,
                    r.mode(),
                    d.describe(d.of[c]),
                );
                (c, Some(note))
            }
        };
        // Better-ranked clusters passed over in this step: say which constraint, with the
        // counts that ruled them out.
        for c in (0..choice).filter(|&c| !taken[c]) {
            notes[c] = violation(rules, &domains, c, false);
        }
        taken[choice] = true;
        notes[choice] = note;
        chosen.push(choice);
        for d in &mut domains {
            if let Some(x) = d.of[choice] {
                d.add(x);
            }
        }
    }
    // A hard constraint that rules a cluster out in the end is the reason that matters.
    for c in (0..n).filter(|&c| !taken[c]) {
        if let Some(note) = violation(rules, &domains, c, true) {
            notes[c] = Some(note);
        }
    }
    Picked { chosen, notes }
}

/// The first constraint (hard ones first) that one more decision for candidate `c` would
/// break, as a sentence.
fn violation(
    rules: &[SpreadRule],
    domains: &[Domains<'_>],
    c: usize,
    hard_only: bool,
) -> Option<String> {
    let hard = rules.iter().zip(domains).filter(|(r, _)| r.hard);
    let soft = rules
        .iter()
        .zip(domains)
        .filter(|(r, _)| !r.hard && !hard_only);
    hard.chain(soft).find_map(|(rule, d)| match d.of[c] {
        None if rule.hard => Some(format!(
            "spread {}: no {} {} (DoNotSchedule needs one)",
            rule.key,
            if rule.claim { "claim" } else { "label" },
            rule.key
        )),
        None => None,
        Some(x) if d.skew_with(x) > rule.max_skew => Some(format!(
            "spread {}: {}, maxSkew {} ({})",
            rule.key,
            d.describe(Some(x)),
            rule.max_skew,
            rule.mode()
        )),
        Some(_) => None,
    })
}
