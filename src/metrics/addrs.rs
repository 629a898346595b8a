//! Peer addresses formatted once per peer, not once per line.
//!
//! A keep-alive connection's request lines all show the same peer. Keeping
//! its text on the connection would grow every idle connection, so the
//! thread that formats lines keeps the text of the IPv4 peers it saw last in
//! a small table (64 slots of about 40 bytes, picked by port): a line whose peer
//! is there copies 32 bytes instead of formatting five numbers.

use std::net::{SocketAddr, SocketAddrV4};

use super::inplace::Cursor;

/// Slots in the table.
const SLOTS: usize = 64;

/// The longest IPv4 text (21 bytes) and the window copies that write it.
const TEXT: usize = 32;

#[derive(Clone, Copy)]
struct Slot {
    addr: Option<SocketAddrV4>,
    len: u8,
    text: [u8; TEXT],
}

const EMPTY: Slot = Slot {
    addr: None,
    len: 0,
    text: [0; TEXT],
};

/// The text of recently seen IPv4 peers.
pub(super) struct AddrCache {
    slots: [Slot; SLOTS],
}

impl Default for AddrCache {
    fn default() -> Self {
        AddrCache {
            slots: [EMPTY; SLOTS],
        }
    }
}

impl AddrCache {
    /// Writes `a` as `Display` does, from the table when it holds it.
    #[inline]
    pub(super) fn put(&mut self, a: SocketAddr, c: &mut Cursor<'_>) {
        let SocketAddr::V4(v4) = a else {
            c.put_addr(a);
            return;
        };
        let Some(slot) = self.slots.get_mut(usize::from(v4.port()) % SLOTS) else {
            c.put_addr(a);
            return;
        };
        if slot.addr != Some(v4) {
            let mut w = Cursor::new(&mut slot.text);
            w.put_addr(a);
            slot.len = w.len() as u8;
            slot.addr = Some(v4);
        }
        c.put_window(&slot.text, usize::from(slot.len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_or_not_the_text_is_the_address() {
        let mut cache = AddrCache::default();
        let addrs: Vec<SocketAddr> = [
            "127.0.0.1:40000",
            "255.255.255.255:65535",
            "10.0.0.1:40064", // the same slot as the first
            "127.0.0.1:40000",
            "[::1]:40000",
            "1.2.3.4:0",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        for _ in 0..2 {
            for &a in &addrs {
                let mut buf = [0u8; 128];
                let mut c = Cursor::new(&mut buf);
                cache.put(a, &mut c);
                let n = c.len();
                assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), a.to_string());
            }
        }
    }
}
