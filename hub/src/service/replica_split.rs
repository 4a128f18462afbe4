//! A set's `replicaSplit`: one workload's total replicas divided over its decided clusters.
//!
//! The rules, each tested below:
//! * **Exact and fair.** Every share is ≥ 0 and the shares sum exactly to the total. A
//!   cluster's *quota* is `total × weight / sum of weights`; its share is always its quota
//!   rounded down or up (Hamilton's largest remainder method). 10 over weights 2:1:1 gives
//!   5, 3 and 2: quotas 5, 2.5 and 2.5, the one replica left after rounding down going to
//!   the tied cluster whose name sorts first.
//! * **Weights.** `Equal` is every weight 1. When every weight is 0 (no `Weighted` entry
//!   matched, or no cluster reports CPU) the split falls back to `Equal` rather than giving
//!   nobody anything: the user asked for replicas to run. No clusters: no shares. A total
//!   below 0 counts as 0 (the validator refuses it earlier).
//! * **Deterministic.** The same inputs give the same shares. Replicas left over after
//!   rounding down go to the largest remainders first, ties by cluster name ascending; when
//!   replicas must be taken back, they come from the smallest remainders first, ties by name
//!   descending (the reverse order, so taking back undoes giving).
//! * **Minimal movement.** Shares last written (`previous`) are kept wherever the rule
//!   above allows: each cluster starts from its previous share clamped to its quota's floor
//!   and ceiling (a new cluster starts at the floor), then single replicas are added or taken
//!   back in the order above until the sum is the total. So when a cluster joins, leaves or
//!   the total changes, only the difference moves: 3, 3, 3 plus a fourth cluster becomes
//!   3, 2, 2, 2 (two replicas move, the fewest that can); removing that cluster gives its two
//!   back. Each replica added or taken back after the clamping is one the quotas force, so
//!   no split within the quotas moves fewer. Without `previous` the result is plain largest
//!   remainder.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Divides `total` over the clusters of `weights` by weight (largest remainder; all weights
/// 0 counts as `Equal`), keeping each cluster's share in `previous` (the shares last
/// written) where its quota allows, so that only the difference moves. See the module doc
/// for the rules.
pub fn split(
    total: i32,
    weights: &BTreeMap<String, u64>,
    previous: &BTreeMap<String, i32>,
) -> BTreeMap<String, i32> {
    if weights.is_empty() {
        return BTreeMap::new();
    }
    let total = u128::from(total.max(0).unsigned_abs());
    let all_zero = weights.values().all(|w| *w == 0);
    // u128 holds total × weight (< 2^31 × 2^64) and the sum of any number of u64 weights a
    // map can hold, so nothing below can overflow.
    let weight_of = |w: u64| if all_zero { 1 } else { u128::from(w) };
    let sum: u128 = weights.values().map(|w| weight_of(*w)).sum();

    let mut quotas: Vec<Quota> = weights
        .iter()
        .map(|(name, w)| {
            let scaled = total * weight_of(*w);
            let floor = scaled / sum;
            let remainder = scaled % sum;
            let ceil = floor + u128::from(remainder > 0);
            let start = previous.get(name).map_or(floor, |p| {
                u128::from(p.max(&0).unsigned_abs()).clamp(floor, ceil)
            });
            Quota {
                name,
                floor,
                remainder,
                share: start,
            }
        })
        .collect();

    // Remainders share the denominator `sum`, so comparing numerators is exact.
    let giving_order = |a: &Quota, b: &Quota| -> Ordering {
        b.remainder
            .cmp(&a.remainder)
            .then_with(|| a.name.cmp(b.name))
    };
    let mut assigned: u128 = quotas.iter().map(|q| q.share).sum();
    if assigned < total {
        let mut order: Vec<usize> = (0..quotas.len()).collect();
        order.sort_by(|&a, &b| giving_order(&quotas[a], &quotas[b]));
        for i in order {
            if assigned == total {
                break;
            }
            let q = &mut quotas[i];
            if q.share == q.floor && q.remainder > 0 {
                q.share += 1;
                assigned += 1;
            }
        }
    } else if assigned > total {
        let mut order: Vec<usize> = (0..quotas.len()).collect();
        order.sort_by(|&a, &b| giving_order(&quotas[b], &quotas[a]));
        for i in order {
            if assigned == total {
                break;
            }
            let q = &mut quotas[i];
            if q.share > q.floor {
                q.share -= 1;
                assigned -= 1;
            }
        }
    }

    quotas
        .into_iter()
        .map(|q| {
            // A share is at most the total, which came from an i32.
            let share = i32::try_from(q.share).unwrap_or(i32::MAX);
            (q.name.clone(), share)
        })
        .collect()
}

/// One cluster's quota `floor + remainder / sum` and its share being settled.
struct Quota<'a> {
    name: &'a String,
    floor: u128,
    remainder: u128,
    share: u128,
}

/// Millicores from a Kubernetes cpu quantity (`500m`, `4`, `2.5`, `1e3`, `2k`, `1Ki`), for
/// `AllocatableCPU` weights; a fraction of a millicore rounds up, as Kubernetes's
/// `MilliValue` does. `None` for text that is not a quantity, a negative one, or one beyond
/// `u64` millicores.
pub fn cpu_millis(q: &str) -> Option<u64> {
    let q = q.trim();
    let q = q.strip_prefix('+').unwrap_or(q);
    let number_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    // Leading zeros carry no value; dropping them keeps long zero-padded text in range.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let fraction_len = i64::try_from(fraction.len()).ok()?;
    let (exp10, exp2) = suffix_exponents(suffix)?;
    // value in millicores = mantissa × 10^(3 + exp10 − fraction digits) × 2^exp2
    let exp10 = exp10.checked_add(3)?.checked_sub(fraction_len)?;
    let scaled = mantissa.checked_mul(2u128.checked_pow(u32::try_from(exp2).ok()?)?)?;
    let millis = if exp10 >= 0 {
        scaled.checked_mul(10u128.checked_pow(u32::try_from(exp10).ok()?)?)?
    } else {
        match u32::try_from(-exp10)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
        {
            Some(divisor) => scaled.div_ceil(divisor),
            // A divisor beyond u128 exceeds any mantissa: a sliver of a millicore.
            None => u128::from(scaled > 0),
        }
    };
    u64::try_from(millis).ok()
}

/// The powers of 10 and of 2 a quantity suffix stands for: SI (`n` … `E`), binary (`Ki` …
/// `Ei`) or a decimal exponent (`e3`, `E-2`).
fn suffix_exponents(suffix: &str) -> Option<(i64, i64)> {
    let si = match suffix {
        "" => Some(0),
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(e) = si {
        return Some((e, 0));
    }
    let binary = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(e) = binary {
        return Some((0, e));
    }
    let exponent = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if unsigned.is_empty() || !unsigned.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((exponent.parse().ok()?, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }

    fn equal(names: &[&str]) -> BTreeMap<String, u64> {
        names.iter().map(|n| (n.to_string(), 1)).collect()
    }

    fn shares(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
        pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    fn none() -> BTreeMap<String, i32> {
        BTreeMap::new()
    }

    /// Replicas that changed cluster: the sum of the increases.
    fn moved(before: &BTreeMap<String, i32>, after: &BTreeMap<String, i32>) -> i32 {
        after
            .iter()
            .map(|(n, s)| (s - before.get(n).copied().unwrap_or(0)).max(0))
            .sum()
    }

    #[test]
    fn weighted_ten_over_two_one_one_is_five_three_two() {
        let got = split(10, &weights(&[("a", 2), ("b", 1), ("c", 1)]), &none());
        assert_eq!(got, shares(&[("a", 5), ("b", 3), ("c", 2)]));
        // The tie goes by name, not by position in a map the caller built.
        let got = split(10, &weights(&[("x", 1), ("m", 2), ("b", 1)]), &none());
        assert_eq!(got, shares(&[("b", 3), ("m", 5), ("x", 2)]));
    }

    #[test]
    fn equal_split_with_leftovers_goes_to_the_first_names() {
        let got = split(10, &equal(&["c", "a", "b"]), &none());
        assert_eq!(got, shares(&[("a", 4), ("b", 3), ("c", 3)]));
        let got = split(2, &equal(&["a", "b", "c", "d"]), &none());
        assert_eq!(got, shares(&[("a", 1), ("b", 1), ("c", 0), ("d", 0)]));
    }

    #[test]
    fn largest_remainder_beats_name_order() {
        // Quotas 7×1/7=1, 7×2/7=2, 7×4/7=4 are exact; with 8: 8/7, 16/7, 32/7 →
        // floors 1, 2, 4 and remainders 1/7, 2/7, 4/7: the leftover goes to "c".
        let got = split(8, &weights(&[("a", 1), ("b", 2), ("c", 4)]), &none());
        assert_eq!(got, shares(&[("a", 1), ("b", 2), ("c", 5)]));
    }

    #[test]
    fn shares_are_never_negative_and_always_sum_to_the_total() {
        let cases: Vec<BTreeMap<String, u64>> = vec![
            weights(&[("a", 3), ("b", 0), ("c", 7), ("d", 1)]),
            weights(&[("a", u64::MAX), ("b", u64::MAX), ("c", 1)]),
            equal(&["a", "b", "c", "d", "e", "f", "g"]),
        ];
        let previous = shares(&[("a", 50), ("b", -4), ("c", 0), ("z", 9)]);
        for w in &cases {
            for total in [0, 1, 2, 5, 13, 99, 100_000, i32::MAX] {
                for prev in [&none(), &previous] {
                    let got = split(total, w, prev);
                    assert_eq!(got.len(), w.len());
                    assert!(got.values().all(|s| *s >= 0), "{got:?}");
                    let sum: i64 = got.values().map(|s| i64::from(*s)).sum();
                    assert_eq!(sum, i64::from(total), "{w:?} {total} {prev:?} → {got:?}");
                }
            }
        }
    }

    #[test]
    fn no_clusters_no_shares() {
        assert!(split(5, &BTreeMap::new(), &shares(&[("a", 5)])).is_empty());
    }

    #[test]
    fn all_weights_zero_split_equally() {
        let got = split(6, &weights(&[("a", 0), ("b", 0), ("c", 0)]), &none());
        assert_eq!(got, shares(&[("a", 2), ("b", 2), ("c", 2)]));
    }

    #[test]
    fn a_zero_weight_cluster_gets_nothing_when_others_weigh() {
        let got = split(5, &weights(&[("a", 0), ("b", 1)]), &none());
        assert_eq!(got, shares(&[("a", 0), ("b", 5)]));
    }

    #[test]
    fn a_negative_total_counts_as_zero() {
        let got = split(-3, &equal(&["a", "b"]), &none());
        assert_eq!(got, shares(&[("a", 0), ("b", 0)]));
    }

    #[test]
    fn adding_a_cluster_moves_only_what_it_must() {
        let before = split(9, &equal(&["a", "b", "c"]), &none());
        assert_eq!(before, shares(&[("a", 3), ("b", 3), ("c", 3)]));
        let after = split(9, &equal(&["a", "b", "c", "d"]), &before);
        assert_eq!(after, shares(&[("a", 3), ("b", 2), ("c", 2), ("d", 2)]));
        // d's quota is 2.25: it needs at least 2, and exactly 2 moved.
        assert_eq!(moved(&before, &after), 2);
    }

    #[test]
    fn removing_a_cluster_spreads_only_its_share() {
        let before = shares(&[("a", 3), ("b", 2), ("c", 2), ("d", 2)]);
        let after = split(9, &equal(&["a", "b", "c"]), &before);
        assert_eq!(after, shares(&[("a", 3), ("b", 3), ("c", 3)]));
        assert_eq!(moved(&before, &after), 2);

        // With an uneven rest, clusters keep their shares and the gone one's are added.
        let before = shares(&[("a", 2), ("b", 3), ("c", 2), ("d", 3)]);
        let after = split(10, &equal(&["a", "b", "c"]), &before);
        assert_eq!(after.values().sum::<i32>(), 10);
        assert_eq!(after["b"], 3, "b keeps its share: {after:?}");
        assert_eq!(moved(&before, &after), 3, "only d's 3 moved: {after:?}");
    }

    #[test]
    fn a_previous_split_within_its_quotas_is_kept_as_is() {
        // Not what a fresh split would choose (a would get the leftover), but as fair: kept.
        let previous = shares(&[("a", 2), ("b", 3), ("c", 2), ("d", 2)]);
        let got = split(9, &equal(&["a", "b", "c", "d"]), &previous);
        assert_eq!(got, previous);
    }

    #[test]
    fn changing_the_total_moves_only_the_difference() {
        let before = shares(&[("a", 3), ("b", 3), ("c", 3)]);
        let up = split(10, &equal(&["a", "b", "c"]), &before);
        assert_eq!(up, shares(&[("a", 4), ("b", 3), ("c", 3)]));
        let down = split(8, &equal(&["a", "b", "c"]), &up);
        // Quotas 2.67: a gives back the one it got, then c (the last name) one more.
        assert_eq!(down, shares(&[("a", 3), ("b", 3), ("c", 2)]));
        let b_kept = split(
            7,
            &equal(&["a", "b", "c"]),
            &shares(&[("a", 2), ("b", 3), ("c", 3)]),
        );
        assert_eq!(b_kept, shares(&[("a", 2), ("b", 3), ("c", 2)]));
    }

    #[test]
    fn a_previous_share_outside_the_new_quota_is_brought_into_it() {
        // a had everything; its weight dropped to a third.
        let got = split(
            9,
            &weights(&[("a", 1), ("b", 1), ("c", 1)]),
            &shares(&[("a", 9), ("b", 0), ("c", 0)]),
        );
        assert_eq!(got, shares(&[("a", 3), ("b", 3), ("c", 3)]));
    }

    #[test]
    fn the_same_inputs_give_the_same_shares() {
        let w = weights(&[("east", 3), ("west", 5), ("north", 2), ("south", 5)]);
        let prev = shares(&[("east", 1), ("west", 7)]);
        assert_eq!(split(17, &w, &prev), split(17, &w, &prev));
    }

    proptest::proptest! {
        /// Any input: exact sum, every share within 1 of its quota (floor or ceiling), and
        /// a split fed back as `previous` moves nothing.
        #[test]
        fn shares_are_exact_fair_and_stable(
            total in proptest::prop_oneof![0..=100_000i32, proptest::num::i32::ANY],
            weights in proptest::collection::btree_map(
                "[a-e]{1,2}",
                proptest::prop_oneof![0..=1000u64, proptest::num::u64::ANY],
                0..8,
            ),
            previous in proptest::collection::btree_map("[a-f]{1,2}", -5..60i32, 0..8),
        ) {
            let got = split(total, &weights, &previous);
            proptest::prop_assert_eq!(got.len(), weights.len());
            if weights.is_empty() {
                return Ok(());
            }
            let total = u128::from(total.max(0).unsigned_abs());
            proptest::prop_assert_eq!(
                got.values().map(|s| u128::from(s.unsigned_abs())).sum::<u128>(),
                total
            );
            let all_zero = weights.values().all(|w| *w == 0);
            let weight = |w: u64| if all_zero { 1 } else { u128::from(w) };
            let sum: u128 = weights.values().map(|w| weight(*w)).sum();
            for (name, w) in &weights {
                let share = got[name];
                proptest::prop_assert!(share >= 0);
                // |share − quota| < 1, multiplied through by `sum`.
                let scaled_share = u128::from(share.unsigned_abs()) * sum;
                proptest::prop_assert!(scaled_share.abs_diff(total * weight(*w)) < sum, "{name}: {got:?}");
            }
            let total = i32::try_from(total).unwrap_or(i32::MAX);
            proptest::prop_assert_eq!(split(total, &weights, &got), got);
        }
    }

    proptest::proptest! {
        /// Whole millicores and cores read back exactly; any other text is a number or
        /// `None`, never a panic.
        #[test]
        fn cpu_quantities_never_panic(n in 0..=u64::MAX / 1000, text in ".{0,40}") {
            proptest::prop_assert_eq!(cpu_millis(&format!("{n}m")), Some(n));
            proptest::prop_assert_eq!(cpu_millis(&format!("{n}")), Some(n * 1000));
            let _ = cpu_millis(&text);
        }
    }

    #[test]
    fn cpu_quantities_in_millicores() {
        for (text, want) in [
            ("500m", Some(500)),
            ("4", Some(4000)),
            ("2.5", Some(2500)),
            ("0.1", Some(100)),
            (".5", Some(500)),
            ("+3", Some(3000)),
            ("1k", Some(1_000_000)),
            ("1Ki", Some(1_024_000)),
            ("1e3", Some(1_000_000)),
            ("2E-3", Some(2)),
            ("1P", Some(1_000_000_000_000_000_000)),
            ("250000u", Some(250)),
            ("1n", Some(1)),
            ("0.0001", Some(1)),
            ("0", Some(0)),
            ("000000000000000000000000000000000000000042", Some(42_000)),
        ] {
            assert_eq!(cpu_millis(text), want, "{text}");
        }
        for bad in [
            "", "m", "-1", "1.2.3", "1x", "abc", "1e", "1e+", "4 cores", "1Ei0", "1e99", "1E",
            "1e3m",
        ] {
            assert_eq!(cpu_millis(bad), None, "{bad:?}");
        }
    }
}
