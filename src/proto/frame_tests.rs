use super::*;

const LIMITS: Limits = Limits {
    max_key: 16,
    max_value: 1000,
};

fn set(key: &[u8], len: u32, flag: u8) -> Vec<u8> {
    let mut b = vec![0x02];
    b.extend_from_slice(&(key.len() as u16).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(&len.to_le_bytes());
    b.push(flag);
    b
}

#[test]
fn known_vectors() {
    // GET "ab": 01 | 02 00 | 61 62
    let (req, used) = parse(&[0x01, 0x02, 0x00, b'a', b'b'], &LIMITS).unwrap();
    assert_eq!(used, 5);
    assert_eq!(req.op, Op::Get);
    assert_eq!(&req.key[..], b"ab");
    assert_eq!(req.value, None);
    // SET "k" = 3 bytes raw: 02 | 01 00 | 6b | 03 00 00 00 | 00
    let bytes = [
        0x02, 0x01, 0x00, b'k', 0x03, 0, 0, 0, 0x00, b'x', b'y', b'z',
    ];
    let (req, used) = parse(&bytes, &LIMITS).unwrap();
    assert_eq!(used, 9, "the value is not part of the header");
    assert_eq!(
        req.value,
        Some(ValueHeader {
            len: 3,
            compression: Compression::None
        })
    );
    // DELETE, HEALTH (empty key), AUTH (token in the key slot).
    assert_eq!(
        parse(&[0x03, 1, 0, b'k'], &LIMITS).unwrap().0.op,
        Op::Delete
    );
    let (req, used) = parse(&[0x05, 0, 0], &LIMITS).unwrap();
    assert_eq!((req.op, used, req.key.len()), (Op::Health, 3, 0));
    let (req, _) = parse(&[0x06, 3, 0, b's', b'e', b'c'], &LIMITS).unwrap();
    assert_eq!((req.op, &req.key[..]), (Op::Auth, &b"sec"[..]));
    // zstd flag.
    let (req, _) = parse(&set(b"k", 10, 1), &LIMITS).unwrap();
    assert_eq!(req.value.unwrap().compression, Compression::Zstd);
}

#[test]
fn little_endian_lengths() {
    let mut b = set(b"k", 0x0102_0304, 0);
    // Over the limit, but the refusal carries the decoded length.
    match parse(&b, &LIMITS) {
        Err(FrameError::Refused {
            why: Refusal::ValueTooLarge { len, .. },
            ..
        }) => assert_eq!(len, 0x0102_0304),
        other => panic!("{other:?}"),
    }
    b = vec![0x01, 0x10, 0x00];
    b.extend_from_slice(&[b'k'; 16]);
    assert_eq!(parse(&b, &LIMITS).unwrap().1, 19, "keylen 0x0010 = 16");
}

#[test]
fn every_truncation_is_incomplete() {
    let frames = [
        set(b"key", 5, 0),
        vec![0x01, 3, 0, b'a', b'b', b'c'],
        vec![0x06, 2, 0, b't', b'k'],
        vec![0x05, 0, 0],
    ];
    for frame in frames {
        for cut in 0..frame.len() {
            assert_eq!(
                parse(&frame[..cut], &LIMITS),
                Err(FrameError::Incomplete),
                "{frame:?} cut at {cut}"
            );
        }
        assert!(parse(&frame, &LIMITS).is_ok(), "{frame:?}");
    }
}

#[test]
fn lying_key_length_waits_for_the_key() {
    // keylen says 10, 3 bytes present: not parsed as a 3-byte key.
    let b = [0x01, 10, 0, b'a', b'b', b'c'];
    assert_eq!(parse(&b, &LIMITS), Err(FrameError::Incomplete));
    // keylen says 1 but 3 bytes follow: the rest is the next frame's start.
    let b = [0x01, 1, 0, b'a', 0xEE, 0xEE];
    let (req, used) = parse(&b, &LIMITS).unwrap();
    assert_eq!((&req.key[..], used), (&b"a"[..], 4));
    assert_eq!(parse(&b[used..], &LIMITS), Err(FrameError::UnknownOp(0xEE)));
}

#[test]
fn unknown_ops_are_fatal_even_with_one_byte() {
    for op in [0x00, 0x04, 0x07, 0x10, 0x7F, 0xFF] {
        assert_eq!(parse(&[op], &LIMITS), Err(FrameError::UnknownOp(op)));
        assert_eq!(
            parse(&[op, 0, 0, 1, 2, 3], &LIMITS),
            Err(FrameError::UnknownOp(op))
        );
    }
    assert_eq!(parse(&[], &LIMITS), Err(FrameError::Incomplete));
}

#[test]
fn over_large_keys_are_refused_with_their_extent() {
    let mut b = vec![0x01, 17, 0];
    b.extend_from_slice(&[b'k'; 17]);
    assert_eq!(
        parse(&b, &LIMITS),
        Err(FrameError::Refused {
            why: Refusal::KeyTooLong { len: 17, max: 16 },
            frame_len: 20,
        })
    );
    // A SET with a too-long key: the frame includes its value.
    let b = set(&[b'k'; 40], 7, 0);
    assert_eq!(
        parse(&b, &LIMITS),
        Err(FrameError::Refused {
            why: Refusal::KeyTooLong { len: 40, max: 16 },
            frame_len: 3 + 40 + 5 + 7,
        })
    );
    // The largest expressible key (65535) still only needs its header to be refused.
    let mut b = vec![0x03, 0xFF, 0xFF];
    b.extend(std::iter::repeat_n(b'k', 65535));
    assert!(matches!(
        parse(&b, &LIMITS),
        Err(FrameError::Refused {
            why: Refusal::KeyTooLong { len: 65535, .. },
            frame_len: 65538
        })
    ));
    // An over-long AUTH token too.
    let mut b = vec![0x06, 20, 0];
    b.extend_from_slice(&[b't'; 20]);
    assert!(matches!(
        parse(&b, &LIMITS),
        Err(FrameError::Refused {
            why: Refusal::KeyTooLong { .. },
            ..
        })
    ));
}

#[test]
fn over_large_values_and_bad_flags_are_refused_with_their_extent() {
    assert_eq!(
        parse(&set(b"k", 1001, 0), &LIMITS),
        Err(FrameError::Refused {
            why: Refusal::ValueTooLarge {
                len: 1001,
                max: 1000
            },
            frame_len: 9 + 1001,
        })
    );
    assert_eq!(parse(&set(b"k", 1000, 1), &LIMITS).unwrap().1, 9);
    assert_eq!(
        parse(&set(b"k", u32::MAX, 1), &LIMITS),
        Err(FrameError::Refused {
            why: Refusal::ValueTooLarge {
                len: u64::from(u32::MAX),
                max: 1000
            },
            frame_len: 9 + u64::from(u32::MAX),
        })
    );
    for flag in [2, 3, 0xFF] {
        assert_eq!(
            parse(&set(b"k", 4, flag), &LIMITS),
            Err(FrameError::Refused {
                why: Refusal::UnknownCompression(flag),
                frame_len: 13,
            })
        );
    }
}

#[test]
fn keyed_ops_need_a_key() {
    for op in [0x01, 0x03] {
        assert_eq!(
            parse(&[op, 0, 0], &LIMITS),
            Err(FrameError::Refused {
                why: Refusal::EmptyKey,
                frame_len: 3
            })
        );
    }
    assert_eq!(
        parse(&set(b"", 2, 0), &LIMITS),
        Err(FrameError::Refused {
            why: Refusal::EmptyKey,
            frame_len: 3 + 5 + 2
        })
    );
    // A zero-length value parses: storing it is the store's decision.
    assert!(parse(&set(b"k", 0, 0), &LIMITS).is_ok());
}

#[test]
fn pipelined_frames_parse_one_after_another() {
    let mut b = set(b"a", 2, 0);
    b.extend_from_slice(b"xy");
    b.extend_from_slice(&encode_request(Op::Get, b"a", None));
    b.extend_from_slice(&encode_request(Op::Delete, b"a", None));
    let (r1, n1) = parse(&b, &LIMITS).unwrap();
    assert_eq!(r1.op, Op::Set);
    let rest = &b[n1 + r1.value.unwrap().len as usize..];
    let (r2, n2) = parse(rest, &LIMITS).unwrap();
    assert_eq!(r2.op, Op::Get);
    let (r3, n3) = parse(&rest[n2..], &LIMITS).unwrap();
    assert_eq!((r3.op, n2 + n3), (Op::Delete, rest.len()));
}

#[test]
fn encoding_round_trips() {
    for (op, key, value) in [
        (Op::Get, &b"some/key"[..], None),
        (Op::Delete, &b"k"[..], None),
        (Op::Health, &b""[..], None),
        (Op::Auth, &b"token"[..], None),
        (
            Op::Set,
            &b"k2"[..],
            Some(ValueHeader {
                len: 70_000,
                compression: Compression::Zstd,
            }),
        ),
    ] {
        let limits = Limits {
            max_key: 100,
            max_value: 1 << 20,
        };
        let bytes = encode_request(op, key, value);
        let (req, used) = parse(&bytes, &limits).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            req,
            Request {
                op,
                key: Bytes::copy_from_slice(key),
                value
            }
        );
    }
    let h = response_header(STATUS_ERROR, 0x0A0B0C0D);
    assert_eq!(h, [0xFF, 0x0D, 0x0C, 0x0B, 0x0A]);
    assert_eq!(parse_response_header(h), (STATUS_ERROR, 0x0A0B0C0D));
}
