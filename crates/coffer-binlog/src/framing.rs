//! Cutting a binary log's byte stream into events: written once, for every reader here.
//!
//! A v4 binlog file is the 4-byte [`MAGIC`], then events, each a 19-byte header (timestamp,
//! type, server id, event size, next position, flags) and a body; when the format description
//! event says so, every event after it ends with a 4-byte CRC32 trailer, counted in its size.
//!
//! [`EventFramer`] is fed the bytes in chunks of any size and hands each whole event to an
//! [`EventSink`], with its position in the file. The sink says, from the header, how much of the
//! body it wants held ([`EventSink::keep`]); the rest streams past unbuffered, so memory is one
//! header and at most that many bytes of one partial event, whatever the events' sizes. The
//! CRC32 trailer is not verified here (an archived file's integrity is its SHA-256's business);
//! [`Event::checksums`] only says whether the body ends with one.

use crate::index::BinlogError;

/// The four bytes every binlog file starts with.
pub const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
/// Length of a v4 event header.
pub const HEADER_LEN: usize = 19;
/// Length of the CRC32 trailer of a checksummed event.
pub const CHECKSUM_LEN: usize = 4;

const FORMAT_DESCRIPTION_EVENT: u8 = 15;
/// A format description body ends with the checksum algorithm byte, then 4 bytes (the CRC32).
const FDE_TAIL: usize = 5;

/// The fields of a v4 event header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHeader {
    /// Seconds since the Unix epoch (UTC); 0 for artificial events.
    pub timestamp: u32,
    /// The event type.
    pub kind: u8,
    /// Id of the server that wrote the event.
    pub server_id: u32,
    /// Length of the whole event: header, body and any checksum.
    pub event_size: u32,
    /// Position of the next event, as the server wrote it (0 in some relay and dumped events).
    pub next_position: u32,
    /// Event flags.
    pub flags: u16,
}

impl EventHeader {
    /// Decodes a header from its 19 bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        Self {
            timestamp: u32_at(0),
            kind: bytes[4],
            server_id: u32_at(5),
            event_size: u32_at(9),
            next_position: u32_at(13),
            flags: u16::from_le_bytes([bytes[17], bytes[18]]),
        }
    }

    /// Length of the body (everything after the header, checksum included).
    pub fn body_len(&self) -> u64 {
        u64::from(self.event_size).saturating_sub(HEADER_LEN as u64)
    }
}

/// A whole event, as handed to [`EventSink::event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// Where the event starts in the file.
    pub position: u64,
    /// Where the next event starts: `position + event_size`.
    pub end: u64,
    /// Its header.
    pub header: EventHeader,
    /// The start of its body: as many bytes as the sink asked to keep, at most the whole body
    /// (including any checksum trailer).
    pub body: &'a [u8],
    /// Whether the event's body ends with a CRC32 trailer: events after a format description
    /// that announces CRC32, and such a format description itself.
    pub checksums: bool,
}

impl Event<'_> {
    /// Whether [`Event::body`] holds the whole body.
    pub fn is_whole(&self) -> bool {
        self.body.len() as u64 == self.header.body_len()
    }
}

/// What an [`EventFramer`] hands events to.
pub trait EventSink {
    /// How many bytes of this event's body to hold for [`EventSink::event`]; the rest streams
    /// past unbuffered. Called once per event, when its header is complete.
    fn keep(&mut self, header: &EventHeader) -> usize;
    /// A whole event, in file order.
    fn event(&mut self, event: &Event<'_>);
}

/// How a framed stream ended, from [`EventFramer::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// The last byte fed ended an event (or the magic).
    Whole,
    /// The stream stopped inside an event (the active file, a copy cut short): that event was
    /// not handed out.
    Truncated {
        /// Where the partial event starts.
        position: u64,
        /// How many of its bytes were fed.
        fed: u64,
    },
}

/// Streaming framer: [`EventFramer::feed`] every chunk, then [`EventFramer::finish`].
#[derive(Debug, Default)]
pub struct EventFramer {
    /// Bytes fed so far.
    position: u64,
    magic: [u8; 4],
    magic_len: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// The current event, once its header is complete.
    current: Option<EventHeader>,
    event_start: u64,
    body: Vec<u8>,
    keep: usize,
    body_remaining: u64,
    /// The last bytes of the current format description's body, where its algorithm byte is.
    fde_tail: [u8; FDE_TAIL],
    checksums: bool,
    error: Option<BinlogError>,
}

impl EventFramer {
    /// A framer at the start of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames the next chunk, handing every event it completes to `sink`. After a structural
    /// error (bad magic, an impossible event size) the rest of the input is ignored and
    /// [`EventFramer::finish`] reports the error.
    pub fn feed(&mut self, mut data: &[u8], sink: &mut impl EventSink) {
        while !data.is_empty() && self.error.is_none() {
            if self.magic_len < MAGIC.len() {
                let take = (MAGIC.len() - self.magic_len).min(data.len());
                self.magic[self.magic_len..self.magic_len + take].copy_from_slice(&data[..take]);
                self.magic_len += take;
                self.position += take as u64;
                data = &data[take..];
                if self.magic_len == MAGIC.len() && self.magic != MAGIC {
                    self.error = Some(BinlogError::BadMagic);
                }
                continue;
            }
            let Some(header) = self.current else {
                if self.header_len == 0 {
                    self.event_start = self.position;
                }
                let take = (HEADER_LEN - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                self.position += take as u64;
                data = &data[take..];
                if self.header_len == HEADER_LEN {
                    self.start_body(sink);
                }
                continue;
            };
            let take = self.body_remaining.min(data.len() as u64) as usize;
            let piece = &data[..take];
            let held = self.body.len();
            self.body
                .extend_from_slice(&piece[..take.min(self.keep.saturating_sub(held))]);
            if header.kind == FORMAT_DESCRIPTION_EVENT {
                self.note_fde_tail(&header, piece);
            }
            self.position += take as u64;
            self.body_remaining -= take as u64;
            data = &data[take..];
            if self.body_remaining == 0 {
                self.end_event(sink);
            }
        }
    }

    /// A header is complete: check its size, ask the sink what to keep.
    fn start_body(&mut self, sink: &mut impl EventSink) {
        let header = EventHeader::parse(&self.header);
        if (header.event_size as usize) < HEADER_LEN {
            self.error = Some(BinlogError::BadEvent {
                position: self.event_start,
                length: header.event_size,
            });
            return;
        }
        self.current = Some(header);
        self.body_remaining = header.body_len();
        self.body.clear();
        let keep = sink.keep(&header);
        self.keep = usize::try_from(header.body_len()).map_or(keep, |len| keep.min(len));
        self.fde_tail = [0; FDE_TAIL];
        if self.body_remaining == 0 {
            self.end_event(sink);
        }
    }

    /// Keeps the bytes of a format description's body that fall in its last five.
    fn note_fde_tail(&mut self, header: &EventHeader, piece: &[u8]) {
        let len = header.body_len();
        let Some(tail_start) = len.checked_sub(FDE_TAIL as u64) else {
            return;
        };
        let piece_start = len - self.body_remaining;
        for (i, &byte) in piece.iter().enumerate() {
            let at = piece_start + i as u64;
            if at >= tail_start {
                self.fde_tail[(at - tail_start) as usize] = byte;
            }
        }
    }

    fn end_event(&mut self, sink: &mut impl EventSink) {
        let header = self.current.take().expect("an event in progress");
        self.header_len = 0;
        if header.kind == FORMAT_DESCRIPTION_EVENT && header.body_len() >= FDE_TAIL as u64 {
            // Algorithm 1 is CRC32; 0 is off (and a pre-checksum server's last post-header
            // length is no 1 either: they are all 0x38 or more, or 0).
            self.checksums = self.fde_tail[0] == 1;
        }
        let event = Event {
            position: self.event_start,
            end: self.position,
            header,
            body: &self.body,
            checksums: self.checksums,
        };
        sink.event(&event);
        self.body.clear();
        if self.body.capacity() > 1024 * 1024 {
            // One huge event must not pin its buffer for the rest of the file.
            self.body = Vec::new();
        }
    }

    /// Bytes fed so far: the position in the file the next chunk starts at.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether events carry a CRC32 trailer, per the last format description seen.
    pub fn checksums(&self) -> bool {
        self.checksums
    }

    /// The structural error that stopped framing, if any.
    pub fn error(&self) -> Option<&BinlogError> {
        self.error.as_ref()
    }

    /// Ends the stream: the structural error that stopped it, [`BinlogError::BadMagic`] if it
    /// was shorter than the magic, else whether it ended on an event boundary.
    pub fn finish(&self) -> Result<Tail, BinlogError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if self.magic_len < MAGIC.len() {
            return Err(BinlogError::BadMagic);
        }
        if self.header_len == 0 {
            return Ok(Tail::Whole);
        }
        Ok(Tail::Truncated {
            position: self.event_start,
            fed: self.position - self.event_start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event as a server writes it; with `checksum`, a (fake) CRC32 trailer is appended.
    fn event(kind: u8, timestamp: u32, position: u64, body: &[u8], checksum: bool) -> Vec<u8> {
        let trailer = if checksum { CHECKSUM_LEN } else { 0 };
        let size = (HEADER_LEN + body.len() + trailer) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&7u32.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&((position + u64::from(size)) as u32).to_le_bytes());
        out.extend_from_slice(&0x0001u16.to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&[0xab; CHECKSUM_LEN][..trailer]);
        out
    }

    /// A format description body up to the algorithm byte (the trailer follows).
    fn fde(checksum: bool) -> Vec<u8> {
        let mut body = vec![0u8; 57];
        body[2..9].copy_from_slice(b"10.11.9");
        body.extend_from_slice(&[0x38; 10]);
        body.push(u8::from(checksum));
        if !checksum {
            body.extend_from_slice(&[0; 4]);
        }
        body
    }

    /// Magic, a format description, then events of assorted sizes (one empty body, one large).
    fn sample(checksum: bool) -> Vec<u8> {
        let mut file = MAGIC.to_vec();
        file.extend(event(
            FORMAT_DESCRIPTION_EVENT,
            1_000,
            4,
            &fde(checksum),
            checksum,
        ));
        for (i, len) in [13usize, 0, 1, 300, 3000, 19].into_iter().enumerate() {
            let body: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            let at = file.len() as u64;
            file.extend(event(100 + i as u8, 1_001 + i as u32, at, &body, checksum));
        }
        file
    }

    /// What a sink saw, owned.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Seen {
        position: u64,
        end: u64,
        header: EventHeader,
        body: Vec<u8>,
        checksums: bool,
    }

    struct Collect {
        keep: usize,
        seen: Vec<Seen>,
    }

    impl EventSink for Collect {
        fn keep(&mut self, _: &EventHeader) -> usize {
            self.keep
        }
        fn event(&mut self, event: &Event<'_>) {
            assert!(event.body.len() <= self.keep);
            assert_eq!(
                event.is_whole(),
                event.body.len() as u64 == event.header.body_len()
            );
            self.seen.push(Seen {
                position: event.position,
                end: event.end,
                header: event.header,
                body: event.body.to_vec(),
                checksums: event.checksums,
            });
        }
    }

    fn frame(chunks: &[&[u8]], keep: usize) -> (Vec<Seen>, Result<Tail, BinlogError>) {
        let mut framer = EventFramer::new();
        let mut sink = Collect {
            keep,
            seen: Vec::new(),
        };
        let mut fed = 0;
        for chunk in chunks {
            framer.feed(chunk, &mut sink);
            if framer.error().is_none() {
                fed += chunk.len() as u64;
                assert_eq!(framer.position(), fed);
            }
        }
        (sink.seen, framer.finish())
    }

    #[test]
    fn events_are_framed_with_their_positions_and_header_fields() {
        for checksum in [false, true] {
            let file = sample(checksum);
            let (seen, tail) = frame(&[&file], usize::MAX);
            assert_eq!(tail, Ok(Tail::Whole));
            assert_eq!(seen.len(), 7);
            assert_eq!(seen[0].position, 4);
            for pair in seen.windows(2) {
                assert_eq!(pair[0].end, pair[1].position);
            }
            assert_eq!(seen.last().unwrap().end, file.len() as u64);
            for e in &seen {
                assert_eq!(e.header.server_id, 7);
                assert_eq!(e.header.flags, 1);
                assert_eq!(u64::from(e.header.next_position), e.end);
                assert_eq!(e.end - e.position, u64::from(e.header.event_size));
                assert_eq!(e.body.len() as u64, e.header.body_len());
                // The format description announces its own trailer.
                assert_eq!(e.checksums, checksum);
            }
            assert_eq!(seen[2].header.kind, 101);
            assert_eq!(seen[2].header.timestamp, 1_002);
            assert_eq!(seen[2].body.len(), if checksum { CHECKSUM_LEN } else { 0 });
        }
    }

    #[test]
    fn every_split_point_and_chunk_size_gives_the_same_events() {
        for checksum in [false, true] {
            let file = sample(checksum);
            for keep in [0, 5, 64, usize::MAX] {
                let whole = frame(&[&file], keep);
                assert_eq!(whole.1, Ok(Tail::Whole));
                for cut in 0..=file.len() {
                    let (a, b) = file.split_at(cut);
                    assert_eq!(frame(&[a, b], keep), whole, "cut at {cut}, keep {keep}");
                }
                for size in [1, 2, 3, 19, 20, 23, 64] {
                    let chunks: Vec<&[u8]> = file.chunks(size).collect();
                    assert_eq!(frame(&chunks, keep), whole, "chunks of {size}");
                }
            }
        }
    }

    #[test]
    fn a_truncated_tail_is_reported_and_its_event_not_handed_out() {
        let file = sample(true);
        let (all, _) = frame(&[&file], usize::MAX);
        for cut in 4..file.len() {
            let (seen, tail) = frame(&[&file[..cut]], usize::MAX);
            let whole = all.iter().take_while(|e| e.end <= cut as u64).count();
            assert_eq!(seen, all[..whole], "cut at {cut}");
            let expected = match all.iter().find(|e| e.position == cut as u64) {
                Some(_) => Tail::Whole,
                None => {
                    let partial = &all[whole];
                    Tail::Truncated {
                        position: partial.position,
                        fed: cut as u64 - partial.position,
                    }
                }
            };
            assert_eq!(tail, Ok(expected), "cut at {cut}");
        }
        assert_eq!(frame(&[&file[..2]], 0).1, Err(BinlogError::BadMagic));
        assert_eq!(frame(&[], 0).1, Err(BinlogError::BadMagic));
    }

    #[test]
    fn bad_magic_and_impossible_sizes_stop_framing() {
        let (seen, tail) = frame(&[b"-- not a binlog, but long enough"], usize::MAX);
        assert!(seen.is_empty());
        assert_eq!(tail, Err(BinlogError::BadMagic));
        let mut file = sample(false);
        let at = file.len() as u64;
        file.extend(event(1, 1, at, &[], false));
        file[at as usize + 9..at as usize + 13].copy_from_slice(&18u32.to_le_bytes());
        file.extend_from_slice(&[0xff; 100]);
        let (seen, tail) = frame(&[&file], usize::MAX);
        assert_eq!(seen.len(), 7);
        assert_eq!(
            tail,
            Err(BinlogError::BadEvent {
                position: at,
                length: 18
            })
        );
    }

    #[test]
    fn a_bogus_huge_size_streams_past_without_holding_its_body() {
        let mut file = sample(false);
        let at = file.len() as u64;
        file.extend(event(2, 1, at, &[], false));
        file[at as usize + 9..at as usize + 13].copy_from_slice(&u32::MAX.to_le_bytes());
        file.extend_from_slice(&[0x5a; 5000]);
        let (seen, tail) = frame(&[&file], 64);
        assert_eq!(seen.len(), 7);
        assert_eq!(
            tail,
            Ok(Tail::Truncated {
                position: at,
                fed: 19 + 5000
            })
        );
    }

    #[test]
    fn only_the_kept_prefix_is_held() {
        let file = sample(false);
        let (seen, _) = frame(&[&file], 10);
        let big = seen.iter().find(|e| e.header.body_len() == 3000).unwrap();
        assert_eq!(big.body.len(), 10);
        // The format description is read to its end for the algorithm byte all the same.
        let (seen, _) = frame(&[&sample(true)], 0);
        assert!(seen.iter().all(|e| e.checksums && e.body.is_empty()));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_after_the_magic_frame_the_same_whatever_the_chunking(
                tail in prop::collection::vec(any::<u8>(), 0..1024),
                size in 1usize..64,
                keep in 0usize..64,
            ) {
                let mut file = MAGIC.to_vec();
                file.extend(tail);
                let whole = frame(&[&file], keep);
                let chunks: Vec<&[u8]> = file.chunks(size).collect();
                prop_assert_eq!(frame(&chunks, keep), whole);
            }

            #[test]
            fn a_valid_prefix_frames_like_the_whole_file(cut in 0usize..4000, checksum: bool) {
                let file = sample(checksum);
                let cut = cut.min(file.len());
                let (all, _) = frame(&[&file], usize::MAX);
                let (seen, _) = frame(&[&file[..cut]], usize::MAX);
                prop_assert_eq!(&seen[..], &all[..seen.len()]);
            }
        }
    }
}
