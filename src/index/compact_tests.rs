use super::*;

/// Volume table of the vectors: `a:1` is 0, `b:2` is 1, `c:3` is 2.
const NAMES: [&str; 3] = ["a:1", "b:2", "c:3"];

fn id(name: &str) -> Result<u32, ()> {
    NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u32)
        .ok_or(())
}

fn enc(r: &Record) -> Vec<u8> {
    encode(r, id).unwrap()
}

fn dec(b: &[u8]) -> Result<Record, DecodeError> {
    decode(b, |i| NAMES.get(i as usize).map(|n| n.to_string()))
}

fn sample() -> Record {
    Record {
        state: State::Live,
        volumes: vec!["a:1/sv07".into(), "b:2".into()],
        size: 5,
        md5: Some([0xab; 16]),
        changed_ms: 0x0102,
        missing: Vec::new(),
        stale: Vec::new(),
        owner: 0,
        meta: Vec::new(),
        inline: None,
        gen: 0,
    }
}

/// `sample()` encoded: header, size, changed_ms, md5, two locations.
fn sample_bytes(flags: u8) -> Vec<u8> {
    let mut want = vec![16, 2, flags, 5, 0x82, 0x02];
    want.extend([0xab; 16]);
    want.extend([2, 1, 7, 2]); // n = 2; a:1 (id 0) + sv 07; b:2 (id 1) whole
    want
}

#[test]
fn known_encoding() {
    assert_eq!(enc(&sample()), sample_bytes(0x01));
    assert_eq!(dec(&sample_bytes(0x01)), Ok(sample()));
    assert_eq!(Record::peek_state(&sample_bytes(0x01)), Ok(State::Live));
    // No md5, no replicas, a writing intent.
    let mut r = sample();
    r.md5 = None;
    r.volumes.clear();
    r.state = State::Writing;
    r.size = 0;
    r.changed_ms = 1;
    assert_eq!(enc(&r), [16, 1, 0, 0, 1, 0]);
    assert_eq!(dec(&enc(&r)), Ok(r));
    // A later generation of the value's files: flag 0x40, a varint at the end.
    let mut r = sample();
    r.gen = 300;
    let mut want = sample_bytes(0x01 | 0x40);
    want.extend([0xac, 0x02]);
    assert_eq!(enc(&r), want);
    assert_eq!(dec(&want), Ok(r));
}

#[test]
fn known_encoding_of_each_optional_section() {
    // Missing: the index of `b:2` among the replicas.
    let mut r = sample();
    r.missing = vec!["b:2".into()];
    let mut want = sample_bytes(0x01 | 0x02);
    want.extend([1, 1]);
    assert_eq!(enc(&r), want);
    assert_eq!(dec(&want), Ok(r));
    // Stale: a location list of its own.
    let mut r = sample();
    r.stale = vec!["c:3/svFF".into()];
    let mut want = sample_bytes(0x01 | 0x04);
    want.extend([1, 5, 0xff]); // s = 1; c:3 (id 2) + sv FF
    assert_eq!(enc(&r), want);
    assert_eq!(dec(&want), Ok(r));
    // Owner: a varint.
    let mut r = sample();
    r.owner = 300;
    let mut want = sample_bytes(0x01 | 0x08);
    want.extend([0xac, 0x02]);
    assert_eq!(enc(&r), want);
    assert_eq!(dec(&want), Ok(r));
    // Meta: varint length, bytes.
    let mut r = sample();
    r.meta = b"{}".to_vec();
    let mut want = sample_bytes(0x01 | 0x10);
    want.extend([2]);
    want.extend(b"{}");
    assert_eq!(enc(&r), want);
    assert_eq!(dec(&want), Ok(r));
    // Inline: varint length, bytes; an empty inline value is not "none".
    let mut r = sample();
    r.inline = Some(b"hello".to_vec());
    let mut want = sample_bytes(0x01 | 0x20);
    want.extend([5]);
    want.extend(b"hello");
    assert_eq!(enc(&r), want);
    assert_eq!(dec(&want), Ok(r.clone()));
    r.inline = Some(Vec::new());
    let mut want = sample_bytes(0x01 | 0x20);
    want.push(0);
    assert_eq!(enc(&r), want);
    assert_eq!(dec(&want), Ok(r));
    // All of them, in the documented order.
    let mut r = sample();
    r.missing = vec!["a:1/sv07".into()];
    r.stale = vec!["c:3".into()];
    r.owner = 1;
    r.meta = vec![9];
    r.inline = Some(vec![8]);
    r.state = State::Writing;
    let mut want = sample_bytes(0x3f);
    want[1] = 1;
    want.extend([1, 0, 1, 4, 1, 1, 9, 1, 8]);
    assert_eq!(enc(&r), want);
    assert_eq!(dec(&want), Ok(r));
}

#[test]
fn varints() {
    for (v, bytes) in [
        (0u64, vec![0u8]),
        (127, vec![0x7f]),
        (128, vec![0x80, 0x01]),
        (300, vec![0xac, 0x02]),
        (1_700_000_000_000, vec![0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31]),
        (u64::MAX, [vec![0xff; 9], vec![0x01]].concat()),
    ] {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        assert_eq!(out, bytes, "{v}");
        assert_eq!(take_varint(&mut out.as_slice()), Ok(v));
    }
    for bad in [
        vec![0x80, 0x00],                     // a redundant zero group
        vec![0x80],                           // truncated
        [vec![0xff; 9], vec![0x02]].concat(), // more than 64 bits
        vec![0xff; 11],
    ] {
        assert!(take_varint(&mut bad.as_slice()).is_err(), "{bad:?}");
    }
}

#[test]
fn splits_locations_only_when_they_round_trip() {
    assert_eq!(split_location("a:1/sv07"), ("a:1", Some(7)));
    assert_eq!(split_location("a:1/svFF"), ("a:1", Some(255)));
    for whole in ["a:1", "a:1/sv7", "a:1/sv0a", "a:1/sv100", "/sv01", "a:1/x"] {
        assert_eq!(split_location(whole), (whole, None));
    }
    // Stored whole, they still round-trip.
    let names = ["a:1/sv0a"];
    let mut r = sample();
    r.volumes = vec!["a:1/sv0a".into()];
    let b = encode(&r, |n| {
        names
            .iter()
            .position(|x| *x == n)
            .map(|i| i as u32)
            .ok_or(())
    })
    .unwrap();
    assert_eq!(&b[b.len() - 2..], [1, 0]);
    assert_eq!(
        decode(&b, |i| names.get(i as usize).map(|n| n.to_string())),
        Ok(r)
    );
}

#[test]
fn rejects_corruption() {
    let mut r = sample();
    r.meta = b"m".to_vec();
    r.inline = Some(b"i".to_vec());
    r.owner = 3;
    let good = enc(&r);
    for cut in 0..good.len() {
        assert!(dec(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = good.clone();
    long.push(0);
    assert_eq!(dec(&long), Err(DecodeError("trailing bytes")));
    let mut flags = sample_bytes(0x01);
    flags[2] |= 0x80;
    assert_eq!(dec(&flags), Err(DecodeError("unknown record flags")));
    let mut zero_gen = sample_bytes(0x01 | 0x40);
    zero_gen.push(0);
    assert!(dec(&zero_gen).is_err());
    let mut state = sample_bytes(0x01);
    state[1] = 9;
    assert_eq!(dec(&state), Err(DecodeError("unknown state")));
    // An id the table does not hold.
    let unknown = decode(&sample_bytes(0x01), |_| None);
    assert_eq!(unknown, Err(DecodeError(UNKNOWN_VOLUME)));
    // Flagged sections that are empty, or an owner of 0.
    let mut empty_missing = sample_bytes(0x01 | 0x02);
    empty_missing.push(0);
    assert!(dec(&empty_missing).is_err());
    let mut zero_owner = sample_bytes(0x01 | 0x08);
    zero_owner.push(0);
    assert!(dec(&zero_owner).is_err());
    let mut empty_meta = sample_bytes(0x01 | 0x10);
    empty_meta.push(0);
    assert!(dec(&empty_meta).is_err());
    // A legacy record is not compact.
    assert_eq!(
        dec(&sample().encode_legacy()),
        Err(DecodeError("unknown version"))
    );
}

#[test]
fn compact_is_smaller_than_legacy() {
    let mut r = sample();
    r.volumes = vec!["a:1/sv01".into(), "b:2/sv02".into(), "c:3/sv03".into()];
    r.size = 3000;
    r.changed_ms = 1_700_000_000_000;
    let (compact, legacy) = (enc(&r).len(), r.encode_legacy().len());
    assert_eq!(compact, 3 + 2 + 6 + 16 + 1 + 3 * 2);
    // Version 1: fixed-width integers and each location spelled out.
    assert_eq!(legacy, 1 + 1 + 8 + 8 + 17 + 1 + 3 * (2 + 8));
}
