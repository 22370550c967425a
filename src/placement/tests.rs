//! Unit tests of placement: minikeyvalue's vectors, zones, movement.
use super::*;

fn five(subvolumes: u32) -> Placement {
    let volumes = (3001..=3005).map(|p| format!("localhost:{p}")).collect();
    Placement::new(volumes, 3, subvolumes).unwrap()
}

/// The vectors from minikeyvalue-compatible placement (issue 2).
#[test]
fn known_vectors() {
    let p = five(10);
    let cases: &[(&str, [&str; 3], &str)] = &[
        (
            "/wehave",
            [
                "localhost:3001/sv07",
                "localhost:3002/sv04",
                "localhost:3005/sv01",
            ],
            "/60/08/L3dlaGF2ZQ==",
        ),
        (
            "/a/b c",
            [
                "localhost:3002/sv07",
                "localhost:3005/sv09",
                "localhost:3001/sv00",
            ],
            "/d0/b6/L2EvYiBj",
        ),
        (
            "/hello",
            [
                "localhost:3004/sv07",
                "localhost:3003/sv04",
                "localhost:3005/sv07",
            ],
            "/3e/d1/L2hlbGxv",
        ),
        (
            "/ünï",
            [
                "localhost:3002/sv09",
                "localhost:3005/sv08",
                "localhost:3003/sv01",
            ],
            "/45/7f/L8O8bsOv",
        ),
        (
            "/???>>>",
            [
                "localhost:3005/sv07",
                "localhost:3001/sv06",
                "localhost:3004/sv00",
            ],
            "/84/5b/Lz8/Pz4+Pg==",
        ),
    ];
    for (key, volumes, path) in cases {
        assert_eq!(p.locate(key.as_bytes()), volumes.to_vec(), "{key}");
        assert_eq!(key_path(key.as_bytes()), *path, "{key}");
        assert_eq!(file_from_path(path), Some((key.as_bytes().to_vec(), 0)));
    }
}

#[test]
fn no_subvolumes() {
    assert_eq!(
        five(1).locate(b"/wehave"),
        ["localhost:3001", "localhost:3002", "localhost:3005"]
    );
}

#[test]
fn rejects_bad_settings() {
    let v = |n: u16| (1..=n).map(|p| format!("h:{p}")).collect::<Vec<_>>();
    assert_eq!(
        Placement::new(v(2), 3, 10),
        Err(PlacementError::TooFewVolumes {
            replicas: 3,
            volumes: 2
        })
    );
    assert_eq!(Placement::new(v(3), 0, 10), Err(PlacementError::NoReplicas));
    assert_eq!(
        Placement::new(v(3), 3, 0),
        Err(PlacementError::BadSubvolumes(0))
    );
    assert!(matches!(
        Placement::new(vec!["h:1".into(), "h:1".into()], 1, 1),
        Err(PlacementError::DuplicateVolume(_))
    ));
    for bad in ["", "host", "host:", ":80", "h:0", "h:99999", "a/b:1"] {
        assert!(
            matches!(
                Placement::new(vec![bad.into()], 1, 1),
                Err(PlacementError::BadVolume(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn file_from_path_rejects_foreign_files() {
    assert_eq!(file_from_path("/00/00/L2hlbGxv"), None); // wrong hash dirs
    assert_eq!(file_from_path("/3e/d1/not base64!"), None);
    assert_eq!(file_from_path("body_temp"), None);
    let path = key_path(b"/hello");
    for bad in [
        "~",
        "~0",
        "~01",
        "~-1",
        "~1x",
        "~+1",
        "~99999999999999999999999",
    ] {
        assert_eq!(file_from_path(&format!("{path}{bad}")), None, "{bad}");
    }
}

#[test]
fn generations_have_their_own_names() {
    assert_eq!(file_path(b"/hello", 0), key_path(b"/hello"));
    let later = file_path(b"/hello", 1765000000123);
    assert_eq!(later, format!("{}~1765000000123", key_path(b"/hello")));
    assert_eq!(
        file_from_path(&later),
        Some((b"/hello".to_vec(), 1765000000123))
    );
}

#[test]
fn server_of_strips_subvolume() {
    assert_eq!(server_of("localhost:3001/sv07"), "localhost:3001");
    assert_eq!(server_of("localhost:3001"), "localhost:3001");
}

fn zoned(spec: &[(u16, &str)], replicas: usize) -> Placement {
    let volumes = spec
        .iter()
        .map(|(p, z)| join_spec(&format!("localhost:{p}"), (!z.is_empty()).then_some(*z)))
        .collect();
    Placement::new(volumes, replicas, 1).unwrap()
}

const SIX: [(u16, &str); 6] = [
    (3001, "a"),
    (3002, "a"),
    (3003, "b"),
    (3004, "b"),
    (3005, "c"),
    (3006, "c"),
];

fn keys(n: usize) -> impl Iterator<Item = Vec<u8>> {
    (0..n).map(|i| format!("/key-{i}").into_bytes())
}

#[test]
fn zone_labels_are_not_hashed() {
    // Every volume in a zone of its own: the same sets as without zones.
    let plain = five(10);
    let labelled = Placement::new(
        (3001..=3005)
            .map(|p| format!("localhost:{p}@z{p}"))
            .collect(),
        3,
        10,
    )
    .unwrap();
    for key in keys(1000) {
        assert_eq!(plain.locate(&key), labelled.locate(&key));
    }
    assert_eq!(labelled.zone_of("localhost:3002"), Some("z3002"));
    assert_eq!(plain.zone_of("localhost:3002"), None);
    assert!(labelled.zoned() && !plain.zoned());
    assert_eq!(labelled.specs()[0], "localhost:3001@z3001");
    assert_eq!(plain.specs(), plain.volumes());
}

/// Known vectors with zones. The full rendezvous order of `/wehave` over 3001..3006
/// is 3001 3002 3006 3005 3004 3003 (see the assertion); with zones a a b b c c the
/// set takes 3001 (a), skips 3002 (a again), takes 3006 (c), skips 3005 (c), takes
/// 3004 (b).
#[test]
fn zoned_known_vectors() {
    let all = zoned(&SIX.map(|(p, _)| (p, "")), 6);
    let p = zoned(&SIX, 3);
    let cases: &[(&str, [u16; 6], [u16; 3])] = &[
        (
            "/wehave",
            [3001, 3002, 3006, 3005, 3004, 3003],
            [3001, 3006, 3004],
        ),
        (
            "/hello",
            [3004, 3003, 3006, 3005, 3001, 3002],
            [3004, 3006, 3001],
        ),
        (
            "/a/b c",
            [3002, 3005, 3001, 3006, 3004, 3003],
            [3002, 3005, 3004],
        ),
    ];
    let names =
        |ports: &[u16]| -> Vec<String> { ports.iter().map(|p| format!("localhost:{p}")).collect() };
    for (key, order, set) in cases {
        assert_eq!(all.locate(key.as_bytes()), names(order), "{key} order");
        assert_eq!(p.locate(key.as_bytes()), names(set), "{key}");
    }
    // Two zones, three replicas: one zone twice, the next in rendezvous order.
    let two = zoned(&[(3001, "a"), (3002, "a"), (3003, "b"), (3004, "b")], 3);
    assert_eq!(
        two.locate(b"/wehave"),
        names(&[3001, 3002, 3004]) // order 3001 3002 3004 3003: a, then b, then a
    );
}

#[test]
fn zoned_sets_span_every_zone_they_can() {
    let p = zoned(&SIX, 3);
    let two = zoned(&SIX[..4], 3);
    let mixed = zoned(
        &[
            (3001, "a"),
            (3002, "a"),
            (3003, "a"),
            (3004, ""),
            (3005, ""),
        ],
        3,
    );
    for key in keys(10_000) {
        let set = p.locate(&key);
        assert_eq!(p.spread(&set), 3, "{set:?}");
        assert_eq!(two.spread(&two.locate(&key)), 2);
        let set = mixed.locate(&key);
        assert_eq!((set.len(), mixed.spread(&set)), (3, 3), "{set:?}");
    }
    assert_eq!((p.best_spread(), two.best_spread()), (3, 2));
    assert_eq!(p.zone_labels(), ["a", "b", "c"]);
}

#[test]
fn zones_spread_keys_evenly() {
    let p = zoned(&SIX, 3);
    let mut per_volume = std::collections::HashMap::<String, usize>::new();
    for key in keys(10_000) {
        for v in p.locate(&key) {
            *per_volume.entry(v).or_default() += 1;
        }
    }
    // Each volume holds one replica of about half the keys (5000 ± 5%).
    for (v, n) in per_volume {
        assert!((4750..5250).contains(&n), "{v}: {n}");
    }
}

/// Adding a volume (to a zone, or as a new zone) only moves replicas onto it, and
/// moves at most one replica of any key.
#[test]
fn adding_volumes_moves_only_onto_them() {
    type Volumes<'a> = &'a [(u16, &'a str)];
    let cases: &[(Volumes, Volumes)] = &[
        (&SIX, &[(3007, "a")]),
        (&SIX, &[(3007, "d")]),
        (&SIX[..4], &[(3005, "c"), (3006, "c")]), // a new zone: 2 → 3 zones
        (&SIX[..4], &[(3005, "b")]),
        (&SIX[..3], &[(3004, "b")]),
    ];
    for (before, added) in cases {
        let old = zoned(before, 3);
        let all: Vec<(u16, &str)> = before.iter().chain(added.iter()).copied().collect();
        let new = zoned(&all, 3);
        let new_names: Vec<String> = added
            .iter()
            .map(|(p, _)| format!("localhost:{p}"))
            .collect();
        let mut moved = 0;
        for key in keys(10_000) {
            let (a, b) = (old.locate(&key), new.locate(&key));
            let gained: Vec<&String> = b.iter().filter(|v| !a.contains(v)).collect();
            assert!(
                gained.iter().all(|v| new_names.contains(v)),
                "{a:?} → {b:?}"
            );
            moved += gained.len();
        }
        // The replicas the added volumes now hold are exactly the ones that moved.
        let held: usize = keys(10_000)
            .map(|k| {
                new.locate(&k)
                    .iter()
                    .filter(|v| new_names.contains(v))
                    .count()
            })
            .sum();
        assert_eq!(moved, held, "{added:?}");
        println!("adding {added:?} to {before:?}: {moved} of 30000 replicas moved");
    }
}

#[test]
fn rejects_bad_zones() {
    for bad in ["h:1@", "h:1@a b", "h:1@a/b", "h:1@a@b"] {
        assert!(
            matches!(
                Placement::new(vec![bad.into()], 1, 1),
                Err(PlacementError::BadZone(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        Placement::new(vec!["h:1@a".into(), "h:1@b".into()], 1, 1),
        Err(PlacementError::DuplicateVolume(_))
    ));
}
