//! Scores, numberOfClusters and spread.

use super::*;
use crate::service::placement::score::parse_quantity;

#[test]
fn steady_keeps_a_pick_that_still_qualifies() {
    let small = with_allocatable(cluster("small", &[]), "4", "");
    let big = with_allocatable(cluster("big", &[]), "64", "");
    let before = vec![small.clone()];
    // The first decision: the only cluster.
    let p = compiled(json!({"numberOfClusters": 1}));
    assert_eq!(run(&p, &before, &[]).decided, ["small"]);
    let after = vec![small.clone(), big.clone()];
    // Default Additive (Balance + Steady): a bigger newcomer does not take its place.
    assert_eq!(run(&p, &after, &["small"]).decided, ["small"]);
    // Additive with CPU configured, Steady weighted over it: still not swapped.
    let p = compiled(
        json!({"numberOfClusters": 1, "prioritizerPolicy": {"configurations": [
        {"scoreCoordinate": {"builtIn": "ResourceAllocatableCPU"}, "weight": 1},
        {"scoreCoordinate": {"builtIn": "Steady"}, "weight": 3}]}}),
    );
    let e = run(&p, &after, &["small"]);
    assert_eq!(e.decided, ["small"]);
    assert_eq!(
        reasons(&e, "big"),
        "score 200 < 300 of the last chosen (small)"
    );
    // Exact with only CPU: the policy says to move, so it moves.
    let p = compiled(
        json!({"numberOfClusters": 1, "prioritizerPolicy": {"mode": "Exact",
        "configurations": [{"scoreCoordinate": {"type": "BuiltIn", "builtIn": "ResourceAllocatableCPU"}}]}}),
    );
    let e = run(&p, &after, &["small"]);
    assert_eq!(e.decided, ["big"]);
    assert_eq!(
        explanation(&e, "big").scores.len(),
        1,
        "Exact: only what is configured"
    );
}

#[test]
fn balance_prefers_clusters_other_placements_use_less() {
    let clusters = vec![cluster("a", &[]), cluster("b", &[]), cluster("c", &[])];
    let load = HashMap::from([("a".to_string(), 4), ("b".to_string(), 2)]);
    let p = compiled(json!({"numberOfClusters": 2}));
    let e = run_with(&p, &clusters, &[], &load, now());
    assert_eq!(chosen(&e), ["b", "c"]);
    let balance = |n: &str| explanation(&e, n).scores["Balance"];
    assert_eq!((balance("a"), balance("b"), balance("c")), (-100, 0, 100));
    // No load anywhere: every cluster 100, ties by name.
    let e = run(&p, &clusters, &[]);
    assert_eq!(e.decided, ["a", "b"]);
    assert_eq!(
        reasons(&e, "c"),
        "score 100 = 100 of the last chosen (b); ties go to the name first in order"
    );
}

#[test]
fn quantities() {
    let table = [
        ("4", Some(4.0)),
        ("500m", Some(0.5)),
        ("1.5", Some(1.5)),
        ("16Gi", Some(16.0 * 1024.0 * 1024.0 * 1024.0)),
        ("128Mi", Some(128.0 * 1024.0 * 1024.0)),
        ("2k", Some(2000.0)),
        ("1e3", Some(1000.0)),
        ("1E-3", Some(0.001)),
        ("3M", Some(3e6)),
        ("+7", Some(7.0)),
        ("", None),
        ("Gi", None),
        ("1.2.3", None),
        ("12Zi", None),
        ("1e", None),
        ("four", None),
        ("1e99999", None),
    ];
    for (text, want) in table {
        assert_eq!(parse_quantity(text), want, "{text:?}");
    }
}

#[test]
fn allocatable_cpu_and_memory_scores() {
    let clusters = vec![
        with_allocatable(cluster("a", &[]), "500m", "2Gi"),
        with_allocatable(cluster("b", &[]), "2", "4096Mi"),
        with_allocatable(cluster("c", &[]), "3500m", "6Gi"),
        with_allocatable(cluster("d", &[]), "", "unreadable"),
    ];
    let p = compiled(
        json!({"prioritizerPolicy": {"mode": "Exact", "configurations": [
        {"scoreCoordinate": {"builtIn": "ResourceAllocatableCPU"}, "weight": 2},
        {"scoreCoordinate": {"builtIn": "ResourceAllocatableMemory"}}]}}),
    );
    let e = run(&p, &clusters, &[]);
    let s = |n: &str, k: &str| explanation(&e, n).scores[k];
    assert_eq!(
        [
            s("a", "ResourceAllocatableCPU"),
            s("b", "ResourceAllocatableCPU"),
            s("c", "ResourceAllocatableCPU"),
            s("d", "ResourceAllocatableCPU")
        ],
        [-100, 0, 100, -100],
        "linear between the lowest and the highest; missing counts as the lowest"
    );
    assert_eq!(
        [
            s("a", "ResourceAllocatableMemory"),
            s("b", "ResourceAllocatableMemory"),
            s("c", "ResourceAllocatableMemory"),
            s("d", "ResourceAllocatableMemory")
        ],
        [-100, 0, 100, -100]
    );
    assert_eq!(explanation(&e, "c").score, Some(300));
    assert_eq!(explanation(&e, "b").score, Some(0));
    let mut exact = compiled(
        json!({"numberOfClusters": 1, "prioritizerPolicy": {"mode": "Exact", "configurations": [
        {"scoreCoordinate": {"builtIn": "ResourceAllocatableCPU"}, "weight": 2},
        {"scoreCoordinate": {"builtIn": "ResourceAllocatableMemory"}}]}}),
    );
    assert_eq!(
        run(&exact, &clusters, &[]).decided,
        ["c"],
        "the highest total wins"
    );
    exact = compiled(
        json!({"numberOfClusters": 1, "prioritizerPolicy": {"mode": "Exact", "configurations": [
        {"scoreCoordinate": {"builtIn": "ResourceAllocatableCPU"}, "weight": -1}]}}),
    );
    assert_eq!(
        run(&exact, &clusters, &[]).decided,
        ["a"],
        "a negative weight prefers the smallest (ties by name)"
    );
    // All equal: 0 for everyone.
    let same = vec![
        with_allocatable(cluster("x", &[]), "2", ""),
        with_allocatable(cluster("y", &[]), "2000m", ""),
    ];
    let e = run(&p, &same, &[]);
    assert!(
        e.explanations
            .iter()
            .all(|x| x.scores["ResourceAllocatableCPU"] == 0)
    );
}

fn zones() -> Vec<ManagedCluster> {
    // eu clusters are bigger, so a score alone would pick eu only.
    vec![
        with_allocatable(cluster("eu-1", &[("zone", "eu")]), "64", ""),
        with_allocatable(cluster("eu-2", &[("zone", "eu")]), "63", ""),
        with_allocatable(cluster("eu-3", &[("zone", "eu")]), "62", ""),
        with_allocatable(cluster("us-1", &[("zone", "us")]), "8", ""),
        with_allocatable(cluster("nozone", &[]), "100", ""),
    ]
}

fn spread_spec(n: i32, when: &str) -> Value {
    json!({"numberOfClusters": n,
        "prioritizerPolicy": {"mode": "Exact", "configurations": [
            {"scoreCoordinate": {"builtIn": "ResourceAllocatableCPU"}}]},
        "spreadPolicy": {"spreadConstraints": [
            {"topologyKey": "zone", "topologyKeyType": "Label", "whenUnsatisfiable": when}]}})
}

#[test]
fn spread_do_not_schedule() {
    let p = compiled(spread_spec(3, "DoNotSchedule"));
    let e = run(&p, &zones(), &[]);
    // eu-1, us-1, eu-2 keep the skew at 1; a third eu would make it 2; nozone has no zone.
    assert_eq!(chosen(&e), ["eu-1", "eu-2", "us-1"]);
    let p = compiled(spread_spec(4, "DoNotSchedule"));
    let e = run(&p, &zones(), &[]);
    assert_eq!(
        chosen(&e),
        ["eu-1", "eu-2", "us-1"],
        "the constraint wins over the count"
    );
    assert_eq!(
        reasons(&e, "eu-3"),
        "spread zone: domain eu has 2, us has 1, maxSkew 1 (DoNotSchedule)"
    );
    assert_eq!(
        reasons(&e, "nozone"),
        "spread zone: no label zone (DoNotSchedule needs one)"
    );
    let satisfied = api::find_condition(&e.status.conditions, "PlacementSatisfied").unwrap();
    assert_eq!(satisfied.message, "3 cluster(s) selected, 4 asked");
    // With maxSkew 2 the third eu fits.
    let mut s = spread_spec(4, "DoNotSchedule");
    s["spreadPolicy"]["spreadConstraints"][0]["maxSkew"] = json!(2);
    assert_eq!(
        chosen(&run(&compiled(s), &zones(), &[])),
        ["eu-1", "eu-2", "eu-3", "us-1"]
    );
}

#[test]
fn spread_schedule_anyway() {
    let p = compiled(spread_spec(2, "ScheduleAnyway"));
    let e = run(&p, &zones(), &[]);
    // nozone (best score, no zone) keeps the skew; then eu-1 (best in a domain).
    assert_eq!(chosen(&e), ["eu-1", "nozone"]);
    let p = compiled(spread_spec(3, "ScheduleAnyway"));
    let e = run(&p, &zones(), &[]);
    assert_eq!(
        chosen(&e),
        ["eu-1", "nozone", "us-1"],
        "us-1 is chosen over the better eu-2"
    );
    assert_eq!(
        reasons(&e, "eu-2"),
        "spread zone: domain eu has 1, us has 0, maxSkew 1 (ScheduleAnyway)"
    );
    // Asked for more than the skew allows: it schedules anyway.
    let p = compiled(spread_spec(5, "ScheduleAnyway"));
    let e = run(&p, &zones(), &[]);
    assert_eq!(e.decided.len(), 5);
    assert!(
        e.explanations.iter().any(|x| x
            .reasons
            .iter()
            .any(|r| r.contains("chosen though it exceeds maxSkew 1 (ScheduleAnyway)"))),
        "{:?}",
        e.explanations
    );
}

#[test]
fn spread_over_claims() {
    let clusters = vec![
        with_claims(cluster("a", &[]), &[("region", "x")]),
        with_claims(cluster("b", &[]), &[("region", "x")]),
        with_claims(cluster("c", &[]), &[("region", "y")]),
    ];
    let p = compiled(
        json!({"numberOfClusters": 2, "spreadPolicy": {"spreadConstraints": [
        {"topologyKey": "region", "topologyKeyType": "Claim", "whenUnsatisfiable": "DoNotSchedule"}]}}),
    );
    assert_eq!(chosen(&run(&p, &clusters, &[])), ["a", "c"]);
}

#[test]
fn a_thousand_clusters() {
    let clusters: Vec<ManagedCluster> = (0..1000)
        .map(|i| {
            let zone = ["eu", "us", "ap"][i % 3];
            let mut c = with_allocatable(
                cluster(
                    &format!("c{i:04}"),
                    &[
                        ("zone", zone),
                        ("env", if i % 2 == 0 { "prod" } else { "dev" }),
                    ],
                ),
                &format!("{}", 4 + i % 16),
                "16Gi",
            );
            if i % 10 == 0 {
                c = with_taint(
                    c,
                    "cluster.open-cluster-management.io/unreachable",
                    "",
                    "NoSelect",
                    Some(now()),
                );
            }
            c
        })
        .collect();
    let p = compiled(json!({"numberOfClusters": 30,
        "predicates": [{"requiredClusterSelector": {"labelSelector": {"matchLabels": {"env": "prod"}}}}],
        "prioritizerPolicy": {"configurations": [{"scoreCoordinate": {"builtIn": "ResourceAllocatableCPU"}}]},
        "spreadPolicy": {"spreadConstraints": [{"topologyKey": "zone", "topologyKeyType": "Label"}]}}));
    let previous: Vec<String> = (0..30).map(|i| format!("c{:04}", i * 2)).collect();
    let previous: Vec<&str> = previous.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let e = run(&p, &clusters, &previous);
    let took = started.elapsed();
    println!("evaluate over 1,000 clusters: {took:?} (info only, debug build)");
    let previous_set: BTreeSet<String> = previous.iter().map(|s| s.to_string()).collect();
    let load = HashMap::new();
    let inputs = Inputs {
        clusters: &clusters,
        previous: &previous_set,
        load: &load,
        now: now(),
    };
    let started = std::time::Instant::now();
    let quiet = decide("web", &p, &inputs);
    println!(
        "decide over 1,000 clusters: {:?} (info only, debug build)",
        started.elapsed()
    );
    assert_eq!(
        (&quiet.decided, &quiet.groups, &quiet.status),
        (&e.decided, &e.groups, &e.status)
    );
    assert!(quiet.explanations.is_empty());
    assert_eq!(e.decided.len(), 30);
    assert_eq!(e.explanations.len(), 1000);
    for name in &e.decided {
        let i: usize = name[1..].parse().unwrap();
        assert!(
            i.is_multiple_of(2) && !i.is_multiple_of(10),
            "{name} is prod and not tainted"
        );
    }
    let mut per_zone = HashMap::new();
    for x in e.explanations.iter().filter(|x| x.selected) {
        let i: usize = x.cluster_name[1..].parse().unwrap();
        *per_zone.entry(i % 3).or_insert(0) += 1;
    }
    assert_eq!(
        per_zone.values().copied().collect::<BTreeSet<i32>>(),
        BTreeSet::from([10])
    );
    let feasible = e.explanations.iter().filter(|x| x.feasible).count();
    assert_eq!(
        feasible, 400,
        "500 prod clusters minus the 100 tainted ones"
    );
    // Within a zone, the spread picks by score: every chosen cluster scores at least as
    // much as every feasible one left out there.
    for zone in 0..3 {
        let in_zone = |x: &&ClusterExplanation| {
            x.feasible && x.cluster_name[1..].parse::<usize>().unwrap() % 3 == zone
        };
        let worst_chosen = e.explanations.iter().filter(in_zone).filter(|x| x.selected);
        let worst_chosen = worst_chosen.map(|x| x.score.unwrap()).min().unwrap();
        let best_left = e
            .explanations
            .iter()
            .filter(in_zone)
            .filter(|x| !x.selected);
        let best_left = best_left.map(|x| x.score.unwrap()).max().unwrap();
        assert!(
            worst_chosen >= best_left,
            "zone {zone}: {worst_chosen} < {best_left}"
        );
    }
}
