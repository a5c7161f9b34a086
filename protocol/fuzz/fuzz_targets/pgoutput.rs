//! One pgoutput message through `pgoutput::Message::parse`.
//!
//! The first input byte picks the protocol version (bits 0..=1: 1 to 4) and
//! whether a streamed transaction is open (bit 2); the rest is the message.
//! Whatever parses is walked, re-encoded and parsed again, which must give
//! the same message (see `check_pgoutput`).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgdog_protocol::pgoutput::Message;
use pgdog_protocol_fuzz::check_pgoutput;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, message)) = data.split_first() else {
        return;
    };
    let version = 1 + (mode & 0b11) as u32;
    let in_stream = mode & 0b100 != 0;
    if let Ok(msg) = Message::parse(Bytes::copy_from_slice(message), version, in_stream) {
        check_pgoutput(&msg, version, in_stream);
    }
});
