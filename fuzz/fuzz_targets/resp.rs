//! Feeds arbitrary bytes to the RESP2/RESP3 parser, whole and as every
//! growing prefix a connection would buffer.
//!
//! Checks, besides "never panics": a value parsed from the whole input is
//! found at the same length from any prefix that holds it, and every shorter
//! prefix asks for more (or fails the same way); small limits reach the
//! depth, count and length checks with small inputs. A `Parser` fed the
//! input in pieces (sizes from the seed), keeping only the bytes it did not
//! use, as a connection does, gives the same outcome as the whole input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use taskweave::redis::{parse, Limits, Parser};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else { return };
    let limits = if seed & 0x80 == 0 {
        Limits::default()
    } else {
        Limits {
            max_depth: 4,
            max_elements: 8,
            max_bulk_len: 64,
            max_line_len: 32,
            ..Limits::default()
        }
    };
    let whole = parse(input, &limits);
    if let Ok(Some((value, used))) = &whole {
        assert!(*used <= input.len());
        for cut in 0..*used {
            match parse(&input[..cut], &limits) {
                Ok(None) | Err(_) => {}
                Ok(Some(other)) => panic!("a prefix of {cut} bytes parsed to {other:?}"),
            }
        }
        // Compared as text: a NaN double is not equal to itself.
        let again = parse(&input[..*used], &limits);
        assert_eq!(format!("{again:?}"), format!("{:?}", Ok::<_, ()>(Some((value, used)))));
    }
    let step = usize::from(seed & 0x0f) + 1;
    let pieces = in_pieces(input, step, limits);
    match (&whole, &pieces) {
        (Ok(Some((a, n))), Ok(Some((b, m)))) => {
            assert_eq!(n, m);
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?} but in pieces of {step} {pieces:?}"),
    }
});

/// The input fed to one `Parser` `step` bytes at a time.
fn in_pieces(
    input: &[u8],
    step: usize,
    limits: Limits,
) -> Result<Option<(taskweave::redis::Value, usize)>, taskweave::redis::RespError> {
    let mut parser = Parser::new(limits);
    let mut kept = Vec::new();
    let (mut offered, mut used_total) = (0, 0);
    while offered < input.len() {
        let end = (offered + step).min(input.len());
        kept.extend_from_slice(&input[offered..end]);
        offered = end;
        let (value, used) = parser.feed(&kept)?;
        used_total += used;
        kept.drain(..used);
        if let Some(v) = value {
            return Ok(Some((v, used_total)));
        }
    }
    Ok(None)
}
