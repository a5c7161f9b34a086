use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn round_trip(msg: Message, version: u32, in_stream: bool) {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf).unwrap();
    let parsed = Message::parse(buf.clone().freeze(), version, in_stream)
        .unwrap_or_else(|e| panic!("{msg:?}: {e}"));
    assert_eq!(parsed, msg);
    // Every strict prefix is an error, never a panic. (StreamAbort's
    // optional v4 tail makes its 9-byte prefix valid, by design.)
    for cut in 0..buf.len() {
        let r = Message::parse(buf.clone().freeze().slice(..cut), version, in_stream);
        if !(matches!(msg, Message::StreamAbort { abort: Some(_), .. }) && cut == 9) {
            assert!(r.is_err(), "{msg:?} cut at {cut} parsed");
        }
    }
}

fn tuple() -> Tuple {
    Tuple::from_columns([
        Column::Text(b"42"),
        Column::Null,
        Column::Unchanged,
        Column::Binary(&[0, 0, 0, 7]),
    ])
    .unwrap()
}

fn txn() -> PreparedTransaction {
    PreparedTransaction {
        lsn: Lsn(10),
        end_lsn: Lsn(20),
        timestamp: 30,
        xid: 40,
        gid: "gid-1".into(),
    }
}

fn relation() -> Relation {
    Relation {
        oid: 16384,
        namespace: "public".into(),
        name: "users".into(),
        replica_identity: b'd',
        columns: vec![
            RelationColumn {
                key: true,
                name: "id".into(),
                type_oid: 20,
                type_modifier: -1,
            },
            RelationColumn {
                key: false,
                name: "name".into(),
                type_oid: 1043,
                type_modifier: 36,
            },
        ],
    }
}

/// Begin, commit, origin, and the streamed and two-phase transactions' own
/// messages.
#[test]
fn every_control_message_round_trips() {
    let plain = vec![
        Message::Begin {
            final_lsn: Lsn(1),
            commit_time: 2,
            xid: 3,
        },
        Message::Commit {
            flags: 0,
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_time: 3,
        },
        Message::Origin {
            commit_lsn: Lsn(9),
            name: "origin".into(),
        },
        Message::StreamStart {
            xid: 5,
            first_segment: true,
        },
        Message::StreamStop,
        Message::StreamCommit {
            xid: 5,
            flags: 0,
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_time: 3,
        },
        Message::BeginPrepare(txn()),
        Message::Prepare {
            flags: 0,
            txn: txn(),
        },
        Message::CommitPrepared {
            flags: 0,
            txn: txn(),
        },
        Message::RollbackPrepared {
            flags: 0,
            prepare_end_lsn: Lsn(1),
            rollback_end_lsn: Lsn(2),
            prepare_time: 3,
            rollback_time: 4,
            xid: 5,
            gid: "g".into(),
        },
        Message::StreamPrepare {
            flags: 0,
            txn: txn(),
        },
    ];
    for m in plain {
        round_trip(m, 4, false);
    }
    round_trip(
        Message::StreamAbort {
            xid: 1,
            subxid: 2,
            abort: None,
        },
        2,
        false,
    );
    round_trip(
        Message::StreamAbort {
            xid: 1,
            subxid: 2,
            abort: Some((Lsn(3), 4)),
        },
        4,
        false,
    );
}

/// Messages that carry the xid inside a streamed transaction, both ways.
#[test]
fn every_change_round_trips() {
    for (xid, version, in_stream) in [(None, 1, false), (None, 2, false), (Some(77), 2, true)] {
        let changes = vec![
            Message::Relation {
                xid,
                relation: relation(),
            },
            Message::Type {
                xid,
                oid: 16400,
                namespace: "public".into(),
                name: "mood".into(),
            },
            Message::Insert {
                xid,
                relation: 16384,
                new: tuple(),
            },
            Message::Update {
                xid,
                relation: 16384,
                old: None,
                new: tuple(),
            },
            Message::Update {
                xid,
                relation: 16384,
                old: Some(OldTuple::Key(tuple())),
                new: tuple(),
            },
            Message::Update {
                xid,
                relation: 16384,
                old: Some(OldTuple::Old(tuple())),
                new: tuple(),
            },
            Message::Delete {
                xid,
                relation: 16384,
                old: OldTuple::Key(tuple()),
            },
            Message::Delete {
                xid,
                relation: 16384,
                old: OldTuple::Old(tuple()),
            },
            Message::Truncate {
                xid,
                options: 3,
                relations: vec![16384, 16385],
            },
            Message::Message {
                xid,
                transactional: true,
                lsn: Lsn(5),
                prefix: "pgdog".into(),
                content: Bytes::from_static(b"hello"),
            },
        ];
        for m in changes {
            round_trip(m, version, in_stream);
        }
    }
}

#[test]
fn insert_byte_exact() {
    // I, relation 16384, N, 2 columns: t "1", n
    let bytes = b"I\0\0\x40\0N\0\x02t\0\0\0\x011n";
    let msg = Message::parse(Bytes::from_static(bytes), 1, false).unwrap();
    let Message::Insert { relation, new, xid } = msg else {
        panic!()
    };
    assert_eq!((relation, xid), (16384, None));
    let cols: Vec<_> = new.columns().collect();
    assert_eq!(cols, vec![Column::Text(b"1"), Column::Null]);
    assert_eq!(new.get(0).unwrap().bytes(), Some(&b"1"[..]));
}

#[test]
fn decoder_tracks_streamed_blocks() {
    let mut d = Decoder::new(2);
    let mut buf = BytesMut::new();
    Message::StreamStart {
        xid: 9,
        first_segment: true,
    }
    .encode(&mut buf)
    .unwrap();
    assert!(matches!(
        d.decode(buf.split().freeze()).unwrap(),
        Message::StreamStart { xid: 9, .. }
    ));
    assert!(d.in_stream());
    Message::Insert {
        xid: Some(9),
        relation: 1,
        new: tuple(),
    }
    .encode(&mut buf)
    .unwrap();
    assert_eq!(
        d.decode(buf.split().freeze()).unwrap().streamed_xid(),
        Some(9)
    );
    Message::StreamStop.encode(&mut buf).unwrap();
    d.decode(buf.split().freeze()).unwrap();
    assert!(!d.in_stream());
}

#[test]
fn malformed_inputs_are_errors() {
    for (bytes, what) in [
        (&b""[..], "empty"),
        (b"Z", "unknown tag"),
        (b"I\0\0\0\x01X\0\0", "insert without N"),
        (b"I\0\0\0\x01N\0\x01x", "unknown column kind"),
        (b"I\0\0\0\x01N\0\x01t\xff\xff\xff\xff", "negative length"),
        (b"I\0\0\0\x01N\0\x01t\0\0\0\x09ab", "length past end"),
        (b"U\0\0\0\x01Q", "update old kind"),
        (b"E!", "trailing bytes"),
        (b"T\x7f\xff\xff\xff\0", "huge truncate count"),
        (b"A\0\0\0\x01\0\0\0\x02\0", "bad abort tail"),
    ] {
        assert!(
            Message::parse(Bytes::from_static(bytes), 4, false).is_err(),
            "{what}"
        );
    }
}

proptest! {
    #[test]
    fn any_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..128), version in 1u32..=4, in_stream in any::<bool>()) {
        if let Ok(Message::Insert { new, .. } | Message::Update { new, .. }) = Message::parse(Bytes::from(body.clone()), version, in_stream) {
            // Walking a parsed tuple never fails or panics.
            prop_assert_eq!(new.columns().count(), new.len());
        }
    }

    #[test]
    fn known_tags_never_panic(tag in proptest::sample::select(b"BCORYIUDTMSEcAbPKrp".to_vec()), body in proptest::collection::vec(any::<u8>(), 0..96)) {
        let mut data = vec![tag];
        data.extend_from_slice(&body);
        let _ = Message::parse(Bytes::from(data), 4, true);
    }

    #[test]
    fn tuples_round_trip(cols in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..16)), 0..12)) {
        let columns: Vec<Column> = cols.iter().map(|(k, v)| match k {
            0 => Column::Null,
            1 => Column::Unchanged,
            2 => Column::Text(v),
            _ => Column::Binary(v),
        }).collect();
        let msg = Message::Insert { xid: None, relation: 1, new: Tuple::from_columns(columns.clone()).unwrap() };
        let mut buf = BytesMut::new();
        msg.encode(&mut buf).unwrap();
        let parsed = Message::parse(buf.freeze(), 1, false).unwrap();
        let Message::Insert { new, .. } = parsed else { panic!() };
        prop_assert_eq!(new.columns().collect::<Vec<_>>(), columns);
    }
}
