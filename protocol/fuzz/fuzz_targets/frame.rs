//! A server byte stream through the frame splitter, then each frame through
//! the backend parser.
//!
//! The first input byte is the read size (0: the whole input in one read);
//! the rest is the stream, fed that many bytes at a time as socket reads
//! would deliver it.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgdog_protocol::backend::Message;
use pgdog_protocol::frame::FrameDecoder;
use pgdog_protocol_fuzz::check_backend;

/// Small, so the "too large" path is reachable from short inputs.
const MAX_FRAME: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = if step == 0 {
        stream.len().max(1)
    } else {
        step as usize
    };
    let decoder = FrameDecoder::new(MAX_FRAME);
    let mut buf = BytesMut::new();
    let (mut fed, mut consumed) = (0, 0);
    for read in stream.chunks(step) {
        buf.extend_from_slice(read);
        fed += read.len();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    // The length word counts itself, not the tag.
                    assert!(frame.body.len() + 4 <= MAX_FRAME);
                    consumed += 5 + frame.body.len();
                    let body = frame.body.clone();
                    if let Ok(msg) = Message::parse(frame) {
                        check_backend(&msg, &body);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // Whatever is buffered is the unconsumed tail of the input, and the
        // reservation for a partial frame is bounded by the cap, not by a
        // length word.
        assert_eq!(&buf[..], &stream[consumed..fed]);
        assert!(buf.capacity() <= 2 * (MAX_FRAME + 5 + stream.len()) + (128 << 10));
    }
});
