//! Feeds arbitrary bytes to the RESP2/RESP3 parser, whole and as every
//! growing prefix a connection would buffer.
//!
//! Checks, besides "never panics": a value parsed from the whole input is
//! found at the same length from any prefix that holds it, and every shorter
//! prefix asks for more (or fails the same way); small limits reach the
//! depth, count and length checks with small inputs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use taskweave::redis::{parse, Limits};

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
});
