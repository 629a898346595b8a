//! Helpers shared by the fuzz targets: limits small enough that their paths are
//! reached with small inputs, and reproducible split points.

use taskweave::http::{Headers, Limits};
use taskweave::protocol::{Message, Progress};

/// The fields as owned pairs, for comparing two parses.
pub fn fields_of(headers: &Headers) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect()
}

/// The default limits, or (high bit of `seed` set) tiny ones.
pub fn limits(seed: u8) -> Limits {
    if seed & 0x80 == 0 {
        Limits::default()
    } else {
        Limits::new()
            .with_max_head(256)
            .with_max_headers(8)
            .with_max_target(64)
            .with_max_body(512)
            .with_max_chunk_ext(32)
            .with_max_trailer(64)
    }
}

/// Split points from a seed: byte by byte, or pseudo-random sizes of 1-32.
pub fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed & 0x40 != 0 {
        return data.chunks(1).collect();
    }
    let mut state = u32::from(seed) | 0x100;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % 32 + 1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// Feeds `pieces`, in order, to parsers made by `new(i)` (`i`: messages completed
/// so far) and checks the contract every parser shares: `Complete(n)` uses at
/// most what was offered, `NeedMore(n)` uses all of it, and a parser that failed
/// keeps failing with the same error. `complete` checks and summarises each
/// finished message, `need_more` runs after each `NeedMore`, `error_ok` vets
/// error codes. Returns the summaries, the last parser and whether it failed.
pub fn feed<M: Message, S>(
    pieces: &[&[u8]],
    mut new: impl FnMut(usize) -> M,
    mut complete: impl FnMut(&mut M) -> S,
    mut need_more: impl FnMut(&mut M),
    error_ok: impl Fn(u16) -> bool,
) -> (Vec<S>, M, bool) {
    let mut done = Vec::new();
    let mut cur = new(0);
    let mut failed = None;
    for piece in pieces {
        let mut data = *piece;
        if let Some(err) = &failed {
            assert_eq!(
                cur.append(data).as_ref(),
                Err(err),
                "a failed parser recovered"
            );
            continue;
        }
        loop {
            match cur.append(data) {
                Ok(Progress::Complete(n)) => {
                    assert!(n <= data.len());
                    done.push(complete(&mut cur));
                    cur = new(done.len());
                    data = &data[n..];
                    if data.is_empty() {
                        break;
                    }
                }
                Ok(Progress::NeedMore(n)) => {
                    assert_eq!(n, data.len(), "NeedMore left bytes unused");
                    need_more(&mut cur);
                    break;
                }
                Err(err) => {
                    assert!(error_ok(err.code), "{err}");
                    failed = Some(err);
                    break;
                }
            }
        }
    }
    let failed = failed.is_some();
    (done, cur, failed)
}
