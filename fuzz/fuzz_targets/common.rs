//! Helpers shared by the fuzz targets: limits small enough that their paths are
//! reached with small inputs, and reproducible split points.

use taskweave::http::Limits;

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
