//! One backend message: the first byte is the tag, the rest the body.
//! Whatever parses is walked, written back out and compared with the body,
//! and CopyData is read as a replication message (see `check_backend`).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgdog_protocol::backend::Message;
use pgdog_protocol::frame::Frame;
use pgdog_protocol_fuzz::check_backend;

fuzz_target!(|data: &[u8]| {
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    let frame = Frame {
        tag,
        body: Bytes::copy_from_slice(body),
    };
    if let Ok(msg) = Message::parse(frame) {
        check_backend(&msg, body);
    }
});
