//! Length-prefixed gRPC messages, as a body's data frames carry them: a
//! compression flag byte, the length as a big-endian `u32`, the message.
//! Counting them across data frames split anywhere, and framing one message
//! (REST, which makes gRPC calls of its own).

use bytes::{BufMut, Bytes, BytesMut};

/// Counts length-prefixed gRPC messages across arbitrarily split data frames.
///
/// Eight bytes, so that an `observe::CountingBody` stays small: 48 with
/// tonic's body and its arrival timer (`observe/arrival.rs`), and a request
/// with it 272 (on 64-bit targets; 256, the most glibc's AVX2 `memcpy` moves
/// without a loop, before the timer), and a request is moved a dozen times on
/// its way to the handler.
#[derive(Debug, Default)]
pub(crate) struct MessageCounter {
    /// Prefix bytes of the current message seen so far (0..5).
    prefix_seen: u8,
    /// While the prefix is being read (`prefix_seen` > 0), its length bytes
    /// so far; after it, the payload bytes of the current message still to
    /// skip (a gRPC length is a `u32`).
    value: u32,
}

/// A message announced a length above the limit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLarge(pub(crate) u64);

impl MessageCounter {
    /// Feeds one chunk; returns how many messages started in it, or the
    /// length of the first message longer than `limit`.
    #[inline]
    pub(crate) fn feed_limited(&mut self, mut chunk: &[u8], limit: u64) -> Result<u64, TooLarge> {
        let mut started = 0;
        while !chunk.is_empty() {
            if self.prefix_seen == 0 && self.value > 0 {
                let skip = chunk.len().min(self.value as usize);
                self.value -= skip as u32;
                chunk = &chunk[skip..];
                continue;
            }
            // Byte 0 is the compression flag; bytes 1..5 the big-endian length.
            let length = if self.prefix_seen == 0
                && let [_flag, a, b, c, d, ..] = *chunk
            {
                // The whole prefix is in this chunk: the usual case.
                chunk = &chunk[5..];
                u32::from_be_bytes([a, b, c, d])
            } else {
                if self.prefix_seen > 0 {
                    self.value = self.value << 8 | u32::from(chunk[0]);
                }
                self.prefix_seen += 1;
                chunk = &chunk[1..];
                if self.prefix_seen < 5 {
                    continue;
                }
                self.prefix_seen = 0;
                self.value
            };
            started += 1;
            self.value = length;
            if u64::from(length) > limit {
                return Err(TooLarge(length.into()));
            }
        }
        Ok(started)
    }

    /// Feeds one chunk; returns how many messages started in it.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> u64 {
        self.feed_limited(chunk, u64::MAX).unwrap_or_default()
    }
}

/// `message` as one uncompressed length-prefixed message.
pub(crate) fn encode_message(message: &impl prost::Message) -> Result<Bytes, prost::EncodeError> {
    let mut frame = BytesMut::with_capacity(5 + message.encoded_len());
    frame.put_u8(0);
    frame.put_u32(message.encoded_len() as u32);
    message.encode(&mut frame)?;
    Ok(frame.freeze())
}

/// The message of a body of one message (a unary answer): what follows its
/// prefix.
pub(crate) fn single_message(body: &[u8]) -> Option<&[u8]> {
    body.get(5..)
}

/// The first message in `buffer`, taken out of it without its prefix, once
/// all of it has arrived.
pub(crate) fn split_message(buffer: &mut BytesMut) -> Option<BytesMut> {
    let [_flag, a, b, c, d, ..] = buffer[..] else {
        return None;
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if buffer.len() < 5 + len {
        return None;
    }
    let mut frame = buffer.split_to(5 + len);
    Some(frame.split_off(5))
}

#[cfg(test)]
mod tests {
    use super::MessageCounter;

    fn frame(len: u32) -> Vec<u8> {
        let mut f = vec![0];
        f.extend(len.to_be_bytes());
        f.extend(std::iter::repeat_n(7, len as usize));
        f
    }

    #[test]
    fn counts_whole_and_split_messages() {
        let mut stream = frame(3);
        stream.extend(frame(0));
        stream.extend(frame(300));
        // A length with all of its low three bytes set, read a byte at a time.
        stream.extend(frame(0x01_02_03));
        stream.extend(frame(1));
        for split in [1, 2, 5, 7, 64, stream.len()] {
            let mut counter = MessageCounter::default();
            let total: u64 = stream.chunks(split).map(|c| counter.feed(c)).sum();
            assert_eq!(total, 5, "chunk size {split}");
        }
    }

    #[test]
    fn refuses_the_first_message_over_the_limit() {
        let mut stream = frame(3);
        stream.extend(frame(300));
        let mut counter = MessageCounter::default();
        let results: Vec<_> = stream
            .chunks(4)
            .map(|c| counter.feed_limited(c, 100))
            .collect();
        assert!(results.contains(&Err(super::TooLarge(300))), "{results:?}");
        assert_eq!(
            MessageCounter::default().feed_limited(&frame(100), 100),
            Ok(1)
        );
    }

    #[test]
    fn frames_one_message_and_takes_whole_ones_out() {
        let encoded = super::encode_message(&"keel".to_owned()).unwrap();
        assert_eq!(encoded[..], [0, 0, 0, 0, 6, 10, 4, b'k', b'e', b'e', b'l']);
        assert_eq!(super::single_message(&encoded), Some(&encoded[5..]));
        let mut buffer = bytes::BytesMut::from(&encoded[..3]);
        assert_eq!(super::split_message(&mut buffer), None);
        buffer.extend_from_slice(&encoded[3..]);
        buffer.extend_from_slice(&frame(1));
        assert_eq!(super::split_message(&mut buffer).unwrap(), encoded[5..]);
        assert_eq!(super::split_message(&mut buffer).unwrap()[..], [7]);
        assert!(buffer.is_empty());
    }
}
