//! Content-defined chunking: a byte stream cut where its content says, not at fixed offsets.
//!
//! The boundaries are FastCDC 2020 (the `fastcdc` crate, pinned to [`FASTCDC_VERSION`], its
//! `v2020::StreamCDC`, normalization level 1, gear seed 0) with the sizes below. Because a cut
//! depends only on the bytes just before it, inserting or deleting bytes in a file changes the
//! chunks around the edit and leaves the others, and so their ids, as they were: a second
//! snapshot of a changed file stores roughly only the changed bytes.
//!
//! The boundaries are part of the repository format: another version or other parameters would
//! cut differently and store every file again (correct, but no longer deduplicated). The golden
//! tests below pin them; a crate upgrade that moves a boundary fails them.
//!
//! Memory is bounded whatever the input's size: one buffer of [`MAX_SIZE`] bytes inside the
//! chunker, plus the chunk handed out. A small file is cheaper read whole and cut in memory
//! ([`cut`], the same boundaries): the stream chunker allocates and zeroes its 8 MiB buffer for
//! every file, which for 20,000 small files cost more than reading them.

use std::io::Read;

use coffer_core::error::{Error, Result};
use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};

/// The `fastcdc` release whose boundaries the repository format uses (pinned in `Cargo.toml`).
pub const FASTCDC_VERSION: &str = "5.0.0";
/// No chunk is shorter than this, except the last one of a stream (512 KiB).
pub const MIN_SIZE: usize = 512 * 1024;
/// The size chunks are cut around on average (1 MiB).
pub const AVG_SIZE: usize = 1024 * 1024;
/// No chunk is longer than this (8 MiB).
pub const MAX_SIZE: usize = 8 * 1024 * 1024;

/// One chunk of a stream: where it starts and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of the first byte in the stream.
    pub offset: u64,
    /// The chunk's bytes (1 to [`MAX_SIZE`] of them).
    pub data: Vec<u8>,
}

/// Cuts a reader into [`Chunk`]s, in order; an empty reader yields none.
pub struct Chunker<R: Read> {
    inner: StreamCDC<R>,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `source` with coffer's parameters.
    pub fn new(source: R) -> Self {
        Self {
            inner: StreamCDC::with_level_and_seed(
                source,
                MIN_SIZE,
                AVG_SIZE,
                MAX_SIZE,
                Normalization::Level1,
                0,
            ),
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        let chunk = self.inner.next()?;
        Some(match chunk {
            Ok(chunk) => Ok(Chunk {
                offset: chunk.offset,
                data: chunk.data,
            }),
            // An io::Error keeps the kind of a coffer error it carries (a failed source read).
            Err(fastcdc::v2020::Error::IoError(e)) => {
                Err(Error::from(e).context("reading the content to chunk"))
            }
            Err(e) => Err(Error::other(format!("chunking: {e}"))),
        })
    }
}

/// The chunks of bytes already in memory, as `(offset, length)`: exactly where [`Chunker`] would
/// cut the same bytes read as a stream. Empty input has none.
pub fn cut(data: &[u8]) -> Vec<(usize, usize)> {
    if data.len() <= MIN_SIZE {
        // FastCDC never cuts before MIN_SIZE: a short input is one chunk.
        return if data.is_empty() {
            Vec::new()
        } else {
            vec![(0, data.len())]
        };
    }
    FastCDC::with_level_and_seed(data, MIN_SIZE, AVG_SIZE, MAX_SIZE, Normalization::Level1, 0)
        .map(|c| (c.offset, c.length))
        .collect()
}

/// Cuts everything `source` yields into chunks, in order, and hands each to `emit`, which
/// returns `false` to stop early; returns the bytes read.
///
/// A source announced (`size_hint`) at most [`MAX_SIZE`] bytes long is read whole into one
/// buffer of its size and [`cut`] in memory: the stream chunker allocates and zeroes an 8 MiB
/// buffer, which for a small file costs more than the file. A longer source, or one that turns
/// out longer than announced, streams through the [`Chunker`] (what was read whole first): the
/// boundaries are the same either way.
pub fn split(
    mut source: impl Read,
    size_hint: u64,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> Result<u64> {
    let mut read = 0u64;
    if size_hint <= MAX_SIZE as u64 {
        let mut data = Vec::with_capacity(size_hint as usize + 1);
        (&mut source)
            .take(MAX_SIZE as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::from(e).context("reading the content to chunk"))?;
        if data.len() <= MAX_SIZE {
            read = data.len() as u64;
            let cuts = cut(&data);
            if cuts.len() == 1 {
                emit(data);
            } else {
                for (offset, length) in cuts {
                    if !emit(data[offset..offset + length].to_vec()) {
                        break;
                    }
                }
            }
            return Ok(read);
        }
        // Longer than announced: stream it all, the bytes already read first.
        for chunk in Chunker::new(std::io::Cursor::new(data).chain(source)) {
            let chunk = chunk?;
            read += chunk.data.len() as u64;
            if !emit(chunk.data) {
                break;
            }
        }
        return Ok(read);
    }
    for chunk in Chunker::new(source) {
        let chunk = chunk?;
        read += chunk.data.len() as u64;
        if !emit(chunk.data) {
            break;
        }
    }
    Ok(read)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift64, seed 0x9E3779B97F4A7C15): the same on every
    /// machine and every release, so the golden boundaries below mean something.
    pub(crate) fn xorshift_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(&state.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn lengths(data: &[u8]) -> Vec<usize> {
        Chunker::new(data).map(|c| c.unwrap().data.len()).collect()
    }

    /// The boundaries of 20 MiB of xorshift bytes, as fastcdc 5.0.0 cuts them with coffer's
    /// parameters. If this fails after a dependency change, the change moved chunk boundaries:
    /// that is a format change (see `docs/FORMAT.md`), not a test to update.
    #[test]
    fn golden_boundaries_of_20_mib_pseudo_random_bytes() {
        let data = xorshift_bytes(20 * 1024 * 1024, 0x9E37_79B9_7F4A_7C15);
        let got = lengths(&data);
        assert_eq!(got, GOLDEN_LENGTHS, "chunk boundaries moved");
        assert_eq!(got.iter().sum::<usize>(), data.len());
    }

    /// The chunk lengths fastcdc 5.0.0 gives (the test above).
    const GOLDEN_LENGTHS: &[usize] = &[
        532150, 2088921, 1361465, 604807, 1071987, 2119792, 1188501, 1871958, 1205351, 1377150,
        1221692, 1382579, 698848, 1305590, 1124461, 1257169, 559099,
    ];

    #[test]
    fn cutting_in_memory_gives_the_stream_boundaries() {
        let data = xorshift_bytes(20 * 1024 * 1024, 0x9E37_79B9_7F4A_7C15);
        let lengths: Vec<usize> = cut(&data).iter().map(|&(_, len)| len).collect();
        assert_eq!(lengths, GOLDEN_LENGTHS);
        for len in [
            0,
            1,
            MIN_SIZE - 1,
            MIN_SIZE,
            MIN_SIZE + 1,
            AVG_SIZE,
            MAX_SIZE,
            MAX_SIZE + 1,
        ] {
            let data = xorshift_bytes(len, len as u64 + 1);
            let streamed: Vec<(usize, usize)> = Chunker::new(&data[..])
                .map(|c| c.unwrap())
                .map(|c| (c.offset as usize, c.data.len()))
                .collect();
            assert_eq!(cut(&data), streamed, "{len} bytes");
        }
    }

    #[test]
    fn splitting_gives_the_stream_chunks_whatever_size_was_announced() {
        for len in [0, 1, MIN_SIZE + 1, MAX_SIZE, MAX_SIZE + 1, 3 * MAX_SIZE + 5] {
            let data = xorshift_bytes(len, len as u64 + 7);
            let streamed: Vec<Vec<u8>> = Chunker::new(&data[..]).map(|c| c.unwrap().data).collect();
            // The true size, a smaller one (the source grew) and a larger one (it shrank).
            for hint in [
                len as u64,
                0,
                (len as u64) / 2,
                len as u64 + MAX_SIZE as u64,
            ] {
                let mut split_up = Vec::new();
                let read = split(&data[..], hint, |chunk| {
                    split_up.push(chunk);
                    true
                })
                .unwrap();
                assert_eq!(read, len as u64, "{len} bytes announced as {hint}");
                assert_eq!(split_up, streamed, "{len} bytes announced as {hint}");
            }
        }
        // Stopping early reads no further chunk.
        let data = xorshift_bytes(3 * MAX_SIZE, 3);
        let mut seen = 0;
        split(&data[..], data.len() as u64, |_| {
            seen += 1;
            false
        })
        .unwrap();
        assert_eq!(seen, 1);
    }

    #[test]
    fn an_insertion_changes_only_the_chunks_around_it() {
        let data = xorshift_bytes(12 * 1024 * 1024, 7);
        let mut edited = data.clone();
        edited.splice(
            5_000_000..5_000_000,
            b"an inserted sentence".iter().copied(),
        );
        let before: Vec<Vec<u8>> = Chunker::new(&data[..]).map(|c| c.unwrap().data).collect();
        let after: Vec<Vec<u8>> = Chunker::new(&edited[..]).map(|c| c.unwrap().data).collect();
        let kept = after.iter().filter(|c| before.contains(c)).count();
        assert!(
            kept + 2 >= after.len(),
            "only the chunks around the edit may change: {kept} of {} kept",
            after.len()
        );
    }

    #[test]
    fn sizes_stay_within_the_limits() {
        let data = xorshift_bytes(20 * 1024 * 1024, 3);
        let sizes = lengths(&data);
        let (last, rest) = sizes.split_last().unwrap();
        assert!(rest.iter().all(|&s| (MIN_SIZE..=MAX_SIZE).contains(&s)));
        assert!(*last <= MAX_SIZE);
        // Zeros have no content to cut at: every chunk is the maximum.
        let zeros = vec![0u8; 2 * MAX_SIZE + 10];
        assert_eq!(lengths(&zeros), vec![MAX_SIZE, MAX_SIZE, 10]);
    }

    #[test]
    fn an_empty_stream_has_no_chunks_and_a_small_one_has_one() {
        assert!(lengths(&[]).is_empty());
        assert_eq!(lengths(b"hello"), vec![5]);
    }

    #[test]
    fn offsets_are_contiguous() {
        let data = xorshift_bytes(5 * 1024 * 1024, 11);
        let mut next = 0;
        for chunk in Chunker::new(&data[..]) {
            let chunk = chunk.unwrap();
            assert_eq!(chunk.offset, next);
            next += chunk.data.len() as u64;
        }
        assert_eq!(next, data.len() as u64);
    }

    #[test]
    fn a_failing_source_is_an_error_not_a_short_stream() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let err = Chunker::new(Failing).next().unwrap().unwrap_err();
        assert!(err.to_string().contains("reading the content"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        /// Whatever the input and however the reader splits it, the chunks put back together are
        /// the input.
        #[test]
        fn concatenated_chunks_are_the_input(
            len in 0usize..3 * MAX_SIZE,
            seed in 1u64..u64::MAX,
            read_size in 1usize..100_000,
        ) {
            let data = xorshift_bytes(len, seed);
            let reader = Trickle { data: &data, at: 0, step: read_size };
            let mut joined = Vec::with_capacity(len);
            for chunk in Chunker::new(reader) {
                joined.extend_from_slice(&chunk.unwrap().data);
            }
            proptest::prop_assert!(joined == data);
        }
    }

    /// A reader that hands out at most `step` bytes per read, like a pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        at: usize,
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }
}
