//! Header fields, stored as offsets into one buffer.
//!
//! A parsed head is copied once into a `Bytes`; the header fields are then just
//! pairs of offsets into it, kept inline for the usual number of fields. So
//! parsing a request costs one allocation for the head and none per field, and
//! lookups never copy. Fields added by a builder go into one growable arena
//! with the same offset scheme, so building a response does not allocate per
//! field either.

use bytes::BufMut;

use super::bufpool;
use std::fmt;

use super::syntax::{all_field_bytes, is_token, list_contains, trim_ows};

/// A byte range of a [`Headers`] buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// The range `part` occupies inside `base`, if it lies inside it.
    pub(crate) fn of(base: &[u8], part: &[u8]) -> Option<Span> {
        if part.is_empty() {
            return Some(Span::default());
        }
        let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        if end > base.len() {
            return None;
        }
        Some(Span {
            start: u32::try_from(start).ok()?,
            len: u32::try_from(part.len()).ok()?,
        })
    }

    /// A span from a start offset and a length.
    fn at(start: usize, len: usize) -> Option<Span> {
        Some(Span {
            start: u32::try_from(start).ok()?,
            len: u32::try_from(len).ok()?,
        })
    }

    /// The bytes of `buf` this span covers (empty if out of range).
    #[inline]
    pub(crate) fn get(self, buf: &[u8]) -> &[u8] {
        let start = self.start as usize;
        let end = start.saturating_add(self.len as usize);
        buf.get(start..end).unwrap_or_default()
    }

    fn len(self) -> usize {
        self.len as usize
    }
}

/// Text that lives in a message's header buffer, in static memory, or on its own.
#[derive(Debug, Clone)]
pub(crate) enum Text {
    Span(Span),
    Static(&'static str),
    Owned(Box<str>),
}

impl Text {
    /// The text, with spans read from `raw` (the message's header buffer).
    pub(crate) fn resolve<'a>(&'a self, raw: &'a [u8]) -> &'a str {
        match self {
            Text::Span(span) => std::str::from_utf8(span.get(raw)).unwrap_or(""),
            Text::Static(s) => s,
            Text::Owned(s) => s,
        }
    }

    /// The bytes of the text, with spans read from `raw`.
    pub(crate) fn as_bytes<'a>(&'a self, raw: &'a [u8]) -> &'a [u8] {
        match self {
            Text::Span(span) => span.get(raw),
            Text::Static(s) => s.as_bytes(),
            Text::Owned(s) => s.as_bytes(),
        }
    }

    /// The same text, independent of the header buffer.
    pub(crate) fn detach(&self, raw: &[u8]) -> Text {
        match self {
            Text::Span(_) => Text::Owned(self.resolve(raw).into()),
            other => other.clone(),
        }
    }
}

/// One field: where its name and value are.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Field {
    pub(crate) name: Span,
    pub(crate) value: Span,
}

/// How many fields are kept without a heap allocation.
const INLINE_FIELDS: usize = 12;

/// The list of fields: inline while small, on the heap past that.
// The inline variant is large on purpose: it saves an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum FieldIndex {
    Inline {
        len: u8,
        items: [Field; INLINE_FIELDS],
    },
    Heap(Vec<Field>),
}

impl FieldIndex {
    /// An index with room for `n` fields.
    pub(crate) fn with_capacity(n: usize) -> Self {
        if n <= INLINE_FIELDS {
            FieldIndex::Inline {
                len: 0,
                items: [Field::default(); INLINE_FIELDS],
            }
        } else {
            FieldIndex::Heap(Vec::with_capacity(n))
        }
    }

    /// Empties the index, making room for `n` fields.
    pub(crate) fn reset(&mut self, n: usize) {
        match self {
            FieldIndex::Inline { len, .. } if n <= INLINE_FIELDS => *len = 0,
            FieldIndex::Heap(v) => {
                v.clear();
                v.reserve(n);
            }
            FieldIndex::Inline { .. } => *self = FieldIndex::with_capacity(n),
        }
    }

    fn as_slice(&self) -> &[Field] {
        match self {
            FieldIndex::Inline { len, items } => items.get(..usize::from(*len)).unwrap_or_default(),
            FieldIndex::Heap(v) => v,
        }
    }

    pub(crate) fn push(&mut self, field: Field) {
        match self {
            FieldIndex::Inline { len, items } => match items.get_mut(usize::from(*len)) {
                Some(slot) => {
                    *slot = field;
                    *len += 1;
                }
                None => {
                    let mut v = Vec::with_capacity(INLINE_FIELDS * 2);
                    v.extend_from_slice(items);
                    v.push(field);
                    *self = FieldIndex::Heap(v);
                }
            },
            FieldIndex::Heap(v) => v.push(field),
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&Field) -> bool) {
        match self {
            FieldIndex::Inline { len, items } => {
                let mut kept = 0u8;
                for i in 0..usize::from(*len) {
                    let Some(field) = items.get(i).copied() else {
                        break;
                    };
                    if keep(&field) {
                        if let Some(slot) = items.get_mut(usize::from(kept)) {
                            *slot = field;
                        }
                        kept += 1;
                    }
                }
                *len = kept;
            }
            FieldIndex::Heap(v) => v.retain(keep),
        }
    }
}

/// An invalid value given to a message builder (a header, method, target or
/// reason phrase that could not be sent as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildError {
    what: &'static str,
}

impl BuildError {
    pub(crate) const fn new(what: &'static str) -> Self {
        BuildError { what }
    }

    /// What was wrong.
    pub fn what(&self) -> &'static str {
        self.what
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

impl std::error::Error for BuildError {}

/// The header fields of a message, in order, with case-insensitive lookup.
///
/// Names are returned as they were received or set; values as bytes (they may
/// hold obs-text, which is not UTF-8), without leading or trailing whitespace.
#[derive(Clone)]
pub struct Headers {
    /// A parsed head the spans index into, read-only (a pooled buffer).
    frozen: Option<Vec<u8>>,
    /// Otherwise: the fields added by a builder, each as the line it is sent
    /// as (`name: value\r\n`), in order, so the encoder copies them at once.
    arena: Vec<u8>,
    fields: FieldIndex,
    /// Which of the names the encoder looks for are present ([`DATE`] and
    /// the others), so encoding a response does not scan for each.
    special: u8,
}

/// A `Date` field is present.
pub(crate) const DATE: u8 = 1;
/// A `Connection` field is present.
pub(crate) const CONNECTION: u8 = 2;
/// A `Content-Length` or `Transfer-Encoding` field is present.
pub(crate) const FRAMING: u8 = 4;

/// The special-name bit of `name`, or 0.
pub(crate) fn special_of(name: &[u8]) -> u8 {
    match name.len() {
        4 if name.eq_ignore_ascii_case(b"date") => DATE,
        10 if name.eq_ignore_ascii_case(b"connection") => CONNECTION,
        14 if name.eq_ignore_ascii_case(b"content-length") => FRAMING,
        17 if name.eq_ignore_ascii_case(b"transfer-encoding") => FRAMING,
        _ => 0,
    }
}

/// The buffer the spans index into (a free function so it can be borrowed
/// alongside `fields`).
fn raw_of<'a>(frozen: &'a Option<Vec<u8>>, arena: &'a [u8]) -> &'a [u8] {
    match frozen {
        Some(b) => b,
        None => arena,
    }
}

impl Headers {
    /// No fields.
    pub fn new() -> Self {
        Headers {
            frozen: None,
            arena: Vec::new(),
            fields: FieldIndex::with_capacity(0),
            special: 0,
        }
    }

    /// Fields indexing into a parsed head.
    #[cfg(test)]
    pub(crate) fn parsed(raw: Vec<u8>, fields: FieldIndex) -> Self {
        let mut h = Headers {
            frozen: Some(raw),
            arena: Vec::new(),
            fields,
            special: 0,
        };
        h.special = h.scan_special();
        h
    }

    /// The field index, to be filled by a parser before [`freeze`](Self::freeze).
    pub(crate) fn index_mut(&mut self) -> &mut FieldIndex {
        &mut self.fields
    }

    /// Makes the fields index into `raw`, the parsed head they were read from.
    /// `special`: the special-name bits of its fields ([`DATE`] and the others),
    /// which the parser noted while it looked at each name anyway.
    pub(crate) fn freeze(&mut self, raw: Vec<u8>, special: u8) {
        if let Some(old) = self.frozen.replace(raw) {
            bufpool::give(old);
        }
        bufpool::give(std::mem::take(&mut self.arena));
        self.special = special;
        debug_assert_eq!(
            special,
            self.scan_special(),
            "special bits of a parsed head"
        );
    }

    /// [`freeze`](Self::freeze) on a copy of `head`, made in the buffer that
    /// [`clear`](Self::clear) kept when there is one.
    pub(crate) fn freeze_copy(&mut self, head: &[u8], special: u8) {
        let mut raw = if self.arena.is_empty() && self.arena.capacity() >= head.len() {
            std::mem::take(&mut self.arena)
        } else {
            bufpool::take(head.len())
        };
        raw.extend_from_slice(head);
        self.freeze(raw, special);
    }

    /// Removes every field and keeps one buffer (a small one) for the next
    /// message's head or fields, so a recycled message allocates nothing.
    pub(crate) fn clear(&mut self) {
        self.fields.reset(0);
        self.special = 0;
        if let Some(raw) = self.frozen.take() {
            if raw.capacity() > self.arena.capacity() {
                bufpool::give(std::mem::replace(&mut self.arena, raw));
            } else {
                bufpool::give(raw);
            }
        }
        self.arena.clear();
        if self.arena.capacity() > bufpool::MAX_KEPT_CAPACITY {
            self.arena = Vec::new();
        }
    }

    /// Whether a `Connection` field lists `token` (checked only if one is present).
    pub(crate) fn connection_has(&self, token: &str) -> bool {
        self.has_special(CONNECTION) && self.contains_token("connection", token)
    }

    /// The special-name bits of the fields present.
    fn scan_special(&self) -> u8 {
        self.iter_raw()
            .fold(0, |bits, (name, _)| bits | special_of(name))
    }

    /// Whether a field with one of the names in `bits` may be present (exact
    /// for [`DATE`] and [`CONNECTION`]).
    pub(crate) fn has_special(&self, bits: u8) -> bool {
        self.special & bits != 0
    }

    /// The buffer the spans index into.
    pub(crate) fn raw(&self) -> &[u8] {
        raw_of(&self.frozen, &self.arena)
    }

    /// Whether the fields still point into a parsed head.
    pub(crate) fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// Number of fields (a repeated name counts once per line).
    pub fn len(&self) -> usize {
        self.fields.as_slice().len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of the first field called `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let raw = self.raw();
        self.fields
            .as_slice()
            .iter()
            .find(|f| f.name.get(raw).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.get(raw))
    }

    /// The value of the first field called `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The values of every field called `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let raw = self.raw();
        self.fields
            .as_slice()
            .iter()
            .filter(move |f| f.name.get(raw).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |f| f.value.get(raw))
    }

    /// Whether a field called `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether any field called `name` lists `token` in its comma-separated
    /// value, compared without case (`Connection: keep-alive, close`).
    pub fn contains_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .any(|v| list_contains(v, token.as_bytes()))
    }

    /// The fields in order, as `(name, value)`.
    pub fn iter(&self) -> HeaderIter<'_> {
        HeaderIter {
            raw: self.raw(),
            fields: self.fields.as_slice().iter(),
        }
    }

    /// Adds a field after the existing ones. The name must be a token; the
    /// value may not contain CR, LF, NUL or other controls except HTAB, and is
    /// stored without leading or trailing whitespace.
    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), BuildError> {
        let value = checked_field(name, value.as_ref())?;
        self.append_checked(name, value)
    }

    /// [`append`](Self::append) for a name and value already checked.
    fn append_checked(&mut self, name: &str, value: &[u8]) -> Result<(), BuildError> {
        let arena = self.owned();
        if arena.capacity() == 0 {
            *arena = bufpool::take(name.len() + value.len() + LINE_EXTRA);
        }
        let name_start = arena.len();
        let value_start = put_line(arena, name.as_bytes(), value);
        let field = match (
            Span::at(name_start, name.len()),
            Span::at(value_start, value.len()),
        ) {
            (Some(name), Some(value)) => Field { name, value },
            _ => {
                arena.truncate(name_start);
                return Err(BuildError::new("header fields too large"));
            }
        };
        self.fields.push(field);
        self.special |= special_of(name.as_bytes());
        Ok(())
    }

    /// Replaces every field called `name` with one field holding `value`.
    /// On error nothing changes.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), BuildError> {
        let value = checked_field(name, value.as_ref())?;
        if !self.is_empty() {
            self.remove(name);
        }
        self.append_checked(name, value)
    }

    /// Removes every field called `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.len();
        let raw = raw_of(&self.frozen, &self.arena);
        self.fields
            .retain(|f| !f.name.get(raw).eq_ignore_ascii_case(name.as_bytes()));
        let removed = before - self.len();
        if removed > 0 {
            if !self.is_frozen() {
                self.compact();
            }
            self.special = self.scan_special();
        }
        removed
    }

    /// Bytes [`write_to`](Self::write_to) produces.
    pub(crate) fn encoded_len(&self) -> usize {
        if self.arena_is_encoded() {
            return self.arena.len();
        }
        self.iter_raw()
            .filter(|(n, _)| !is_framing_field(n))
            .map(|(n, v)| n.len() + v.len() + LINE_EXTRA)
            .sum()
    }

    /// Writes `name: value\r\n` for each field but the framing ones, which
    /// the encoders write themselves.
    pub(crate) fn write_to(&self, dst: &mut impl BufMut) {
        if self.arena_is_encoded() {
            dst.put_slice(&self.arena);
            return;
        }
        for (name, value) in self.iter_raw() {
            if !is_framing_field(name) {
                dst.put_slice(name);
                dst.put_slice(b": ");
                dst.put_slice(value);
                dst.put_slice(b"\r\n");
            }
        }
    }

    /// Whether the arena is exactly what [`write_to`](Self::write_to) writes:
    /// built fields (kept as lines), none of them a framing field.
    fn arena_is_encoded(&self) -> bool {
        !self.is_frozen() && !self.has_special(FRAMING)
    }

    fn iter_raw(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let raw = self.raw();
        self.fields
            .as_slice()
            .iter()
            .map(move |f| (f.name.get(raw), f.value.get(raw)))
    }

    /// The arena, first copying the fields out of a parsed head if needed.
    fn owned(&mut self) -> &mut Vec<u8> {
        if self.is_frozen() {
            self.compact();
        }
        &mut self.arena
    }

    /// Rebuilds the arena with only the live fields (and leaves any parsed
    /// head behind).
    fn compact(&mut self) {
        let raw = self.raw();
        let live: usize = self
            .fields
            .as_slice()
            .iter()
            .map(|f| f.name.len() + f.value.len() + LINE_EXTRA)
            .sum();
        if !self.is_frozen() && live == raw.len() {
            return;
        }
        let mut arena = Vec::with_capacity(live);
        let mut fields = FieldIndex::with_capacity(self.len());
        for f in self.fields.as_slice() {
            let name_start = arena.len();
            let value_start = put_line(&mut arena, f.name.get(raw), f.value.get(raw));
            // Offsets only shrink here, so they still fit in a span.
            if let (Some(name), Some(value)) = (
                Span::at(name_start, f.name.len()),
                Span::at(value_start, f.value.len()),
            ) {
                fields.push(Field { name, value });
            }
        }
        if let Some(old) = self.frozen.take() {
            bufpool::give(old);
        }
        bufpool::give(std::mem::replace(&mut self.arena, arena));
        self.fields = fields;
    }
}

/// Bytes a field line has besides its name and value: `": "` and CRLF.
const LINE_EXTRA: usize = 4;

/// Appends the line `name: value\r\n` to `arena`; returns where the value starts.
fn put_line(arena: &mut Vec<u8>, name: &[u8], value: &[u8]) -> usize {
    arena.reserve(name.len() + value.len() + LINE_EXTRA);
    arena.extend_from_slice(name);
    arena.extend_from_slice(b": ");
    let value_start = arena.len();
    arena.extend_from_slice(value);
    arena.extend_from_slice(b"\r\n");
    value_start
}

/// Whether a field is one the encoders write themselves.
pub(crate) fn is_framing_field(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding")
}

/// A field's value as it will be stored, if the name is a token and the value
/// holds only valid bytes.
fn checked_field<'v>(name: &str, value: &'v [u8]) -> Result<&'v [u8], BuildError> {
    let value = checked_value(value)?;
    if !is_token(name.as_bytes()) {
        return Err(BuildError::new("header name is not a token"));
    }
    Ok(value)
}

/// A field value as it will be stored: valid bytes, trimmed.
fn checked_value(value: &[u8]) -> Result<&[u8], BuildError> {
    if all_field_bytes(value) {
        Ok(trim_ows(value))
    } else {
        Err(BuildError::new(
            "header value contains CR, LF, NUL or another control byte",
        ))
    }
}

impl Drop for Headers {
    fn drop(&mut self) {
        if let Some(raw) = self.frozen.take() {
            bufpool::give(raw);
        }
        bufpool::give(std::mem::take(&mut self.arena));
    }
}

impl Default for Headers {
    fn default() -> Self {
        Headers::new()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

/// Iterator over `(name, value)` pairs of [`Headers`].
pub struct HeaderIter<'a> {
    raw: &'a [u8],
    fields: std::slice::Iter<'a, Field>,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let f = self.fields.next()?;
        let name = std::str::from_utf8(f.name.get(self.raw)).unwrap_or("");
        Some((name, f.value.get(self.raw)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.fields.size_hint()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn parsed(raw: &'static [u8], pairs: &[(&[u8], &[u8])]) -> Headers {
        let mut idx = FieldIndex::with_capacity(pairs.len());
        for (n, v) in pairs {
            idx.push(Field {
                name: Span::of(raw, n).unwrap(),
                value: Span::of(raw, v).unwrap(),
            });
        }
        Headers::parsed(raw.to_vec(), idx)
    }

    #[test]
    fn span_of_rejects_foreign_slices() {
        let base = b"hello world";
        assert_eq!(Span::of(base, &base[6..]).unwrap().get(base), b"world");
        assert!(Span::of(base, b"elsewhere").is_none());
    }

    #[test]
    fn lookup_is_case_insensitive_and_ordered() {
        static RAW: &[u8] = b"Host: a\r\nX-Y: 1\r\nx-y: 2\r\n";
        let h = parsed(
            RAW,
            &[
                (&RAW[0..4], &RAW[6..7]),
                (&RAW[9..12], &RAW[14..15]),
                (&RAW[17..20], &RAW[22..23]),
            ],
        );
        assert_eq!(h.len(), 3);
        assert_eq!(h.get("HOST"), Some(&b"a"[..]));
        assert_eq!(h.get_str("x-y"), Some("1"));
        assert_eq!(h.get_all("X-y").collect::<Vec<_>>(), vec![&b"1"[..], b"2"]);
        assert!(!h.contains("missing"));
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "X-Y", "x-y"]);
    }

    #[test]
    fn editing_a_parsed_head_copies_it_once() {
        static RAW: &[u8] = b"A: 1\r\nB: 2\r\n";
        let mut h = parsed(RAW, &[(&RAW[0..1], &RAW[3..4]), (&RAW[6..7], &RAW[9..10])]);
        assert_eq!(h.remove("a"), 1);
        assert!(h.is_frozen(), "removal alone need not copy");
        h.append("C", "3").unwrap();
        assert!(!h.is_frozen());
        let pairs: Vec<(&str, &[u8])> = h.iter().collect();
        assert_eq!(pairs, vec![("B", &b"2"[..]), ("C", b"3")]);
    }

    #[test]
    fn builder_validates_and_trims() {
        let mut h = Headers::new();
        h.append("Content-Type", "  text/plain \t").unwrap();
        assert_eq!(h.get("content-type"), Some(&b"text/plain"[..]));
        assert!(h.append("Bad Name", "x").is_err());
        assert!(h.append("", "x").is_err());
        assert!(h.append("X", "a\r\nInjected: 1").is_err());
        assert!(h.append("X", "a\0").is_err());
        assert!(h.set("X", "a\n").is_err());
        assert_eq!(h.len(), 1, "failed calls change nothing");
    }

    #[test]
    fn set_replaces_all_and_compacts() {
        let mut h = Headers::new();
        for i in 0..40 {
            h.append("X-Many", i.to_string()).unwrap();
        }
        h.append("Keep", "k").unwrap();
        h.set("x-many", "only").unwrap();
        assert_eq!(h.get_all("X-Many").collect::<Vec<_>>(), vec![&b"only"[..]]);
        assert_eq!(h.get("keep"), Some(&b"k"[..]));
        assert_eq!(h.raw(), b"Keep: k\r\nx-many: only\r\n");
        assert_eq!(h.remove("nothing"), 0);
    }

    #[test]
    fn tokens_in_lists() {
        let mut h = Headers::new();
        h.append("Connection", "Keep-Alive, Upgrade").unwrap();
        assert!(h.contains_token("connection", "upgrade"));
        assert!(!h.contains_token("connection", "close"));
    }

    #[test]
    fn encoding_leaves_out_the_framing_fields() {
        let mut h = Headers::new();
        h.append("A", "1").unwrap();
        h.append("Content-Length", "5").unwrap();
        let mut out = BytesMut::new();
        h.write_to(&mut out);
        assert_eq!(&out[..], b"A: 1\r\n");
        assert_eq!(h.encoded_len(), out.len());
        h.remove("content-length");
        h.append("B", "2").unwrap();
        let mut out = BytesMut::new();
        h.write_to(&mut out);
        assert_eq!(&out[..], b"A: 1\r\nB: 2\r\n");
        assert_eq!(h.encoded_len(), out.len());
    }
}
