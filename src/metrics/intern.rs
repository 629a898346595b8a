//! Protocol names stored as one byte.
//!
//! Every connection names its protocol (`"http"`, `"redis"`...), but a process only
//! ever uses a handful of names. Storing the `&'static str` itself would cost 16
//! bytes in every [`ConnStats`](super::ConnStats); an index into a process-wide
//! table costs one. The table is a fixed array of write-once cells, so looking a
//! name up or interning a known one takes no lock: a few atomic loads and short
//! string comparisons.

use std::sync::OnceLock;

/// How many distinct names can be interned; later ones share [`OVERFLOW`].
const SLOTS: usize = 255;

/// The index returned once the table is full. Its name is [`OVERFLOW_NAME`].
pub(crate) const OVERFLOW: u8 = 255;

/// The name reported for [`OVERFLOW`].
const OVERFLOW_NAME: &str = "other";

static NAMES: [OnceLock<&'static str>; SLOTS] = [const { OnceLock::new() }; SLOTS];

/// The index of `name`, adding it to the table the first time it is seen. Names
/// are compared by content, so two copies of `"http"` share one index.
pub(crate) fn intern(name: &'static str) -> u8 {
    for (i, slot) in NAMES.iter().enumerate() {
        // Slots fill in order and never change, so every thread scanning for the
        // same name stops at the same slot: a name is never stored twice.
        let stored = match slot.get() {
            Some(s) => *s,
            None => match slot.set(name) {
                Ok(()) => name,
                // Another thread filled this slot first; see what it stored.
                Err(_) => slot.get().copied().unwrap_or(""),
            },
        };
        if stored == name {
            return u8::try_from(i).unwrap_or(OVERFLOW);
        }
    }
    OVERFLOW
}

/// The name stored at `index`.
pub(crate) fn name(index: u8) -> &'static str {
    NAMES
        .get(usize::from(index))
        .and_then(|slot| slot.get().copied())
        .unwrap_or(OVERFLOW_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_index() {
        let a = intern("intern-test-http");
        // A different `&'static str` with the same content.
        let owned: &'static str = Box::leak(String::from("intern-test-http").into_boxed_str());
        assert_eq!(intern(owned), a);
        assert_eq!(name(a), "intern-test-http");
        let b = intern("intern-test-redis");
        assert_ne!(a, b);
        assert_eq!(name(b), "intern-test-redis");
    }

    #[test]
    fn concurrent_interning_agrees() {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..20)
                        .map(|i| {
                            let n: &'static str =
                                Box::leak(format!("intern-race-{i}").into_boxed_str());
                            intern(n)
                        })
                        .collect::<Vec<u8>>()
                })
            })
            .collect();
        let results: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
        for (i, &idx) in results[0].iter().enumerate() {
            assert_eq!(name(idx), format!("intern-race-{i}"));
        }
    }

    #[test]
    fn unknown_index_has_a_name() {
        assert_eq!(name(OVERFLOW), "other");
    }
}
