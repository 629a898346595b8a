// Malformed and request-smuggling inputs, with the status a strict HTTP/1.1
// server must answer. Shared by the parser-level test (src/http/tests.rs, via
// `include!`) and by server-level tests.
//
// Every case is a bad request followed by a valid one (`SMUGGLED`): a server
// must answer the bad request with the status given and then close, never
// answering `GET /smuggled`.
//
// `VALID` lists edge cases that must parse, each a single request, with the
// body the parser must deliver.

/// The valid request appended to every malformed case.
pub const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

// A case: the bad request as a string literal, with `SMUGGLED` appended.
macro_rules! bad {
    ($name:literal, $raw:literal, $status:literal) => {
        (
            $name,
            concat!($raw, "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            $status,
        )
    };
}

// Large inputs are assembled at compile time.
const fn malformed_len(parts: &[&[u8]]) -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < parts.len() {
        total += parts[i].len();
        i += 1;
    }
    total
}

const fn malformed_cat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut i = 0;
    while i < parts.len() {
        let part = parts[i];
        let mut j = 0;
        while j < part.len() {
            out[at] = part[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    out
}

const fn malformed_repeat<const N: usize>(unit: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = unit[i % unit.len()];
        i += 1;
    }
    out
}

const A_9000: [u8; 9000] = malformed_repeat(b"a");
#[allow(clippy::large_const_arrays)] // only read at compile time
const A_70000: [u8; 70000] = malformed_repeat(b"a");
const A_5000: [u8; 5000] = malformed_repeat(b"a");
const HEADERS_100: [u8; 800] = malformed_repeat(b"X-A: 1\r\n");

const LONG_TARGET_PARTS: &[&[u8]] = &[b"GET /", &A_9000, b" HTTP/1.1\r\nHost: x\r\n\r\n", SMUGGLED];
const LONG_TARGET: [u8; malformed_len(LONG_TARGET_PARTS)] = malformed_cat(LONG_TARGET_PARTS);

const MANY_HEADERS_PARTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: x\r\n",
    &HEADERS_100,
    b"\r\n",
    SMUGGLED,
];
const MANY_HEADERS: [u8; malformed_len(MANY_HEADERS_PARTS)] = malformed_cat(MANY_HEADERS_PARTS);

const BIG_HEAD_PARTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ",
    &A_70000,
    b"\r\n\r\n",
    SMUGGLED,
];
#[allow(clippy::large_const_arrays)] // only read at compile time
const BIG_HEAD: [u8; malformed_len(BIG_HEAD_PARTS)] = malformed_cat(BIG_HEAD_PARTS);

const LONG_EXT_PARTS: &[&[u8]] = &[
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;",
    &A_5000,
    b"\r\nabc\r\n0\r\n\r\n",
    SMUGGLED,
];
const LONG_EXT: [u8; malformed_len(LONG_EXT_PARTS)] = malformed_cat(LONG_EXT_PARTS);

const LONG_TRAILER_PARTS: &[&[u8]] = &[
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ",
    &A_9000,
    b"\r\n\r\n",
    SMUGGLED,
];
const LONG_TRAILER: [u8; malformed_len(LONG_TRAILER_PARTS)] = malformed_cat(LONG_TRAILER_PARTS);

/// (name, raw bytes, expected status).
pub const CASES: &[(&str, &[u8], u16)] = &[
    // Content-Length and Transfer-Encoding together (RFC 9112 §6.1, §6.3, §11.2).
    bad!("cl_then_te", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    bad!("te_then_cl", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    bad!("te_and_cl_zero", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n", 400),
    bad!("te_and_bad_cl", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n0\r\n\r\n", 400),
    // Content-Length values (RFC 9112 §6.2, RFC 9110 §8.6).
    bad!("cl_two_differing", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    bad!("cl_list_differing", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
    bad!("cl_list_with_plus", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, +5\r\n\r\nhello", 400),
    bad!("cl_plus", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
    bad!("cl_hex", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n0123456789abcdef", 400),
    bad!("cl_negative", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    bad!("cl_empty", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", 400),
    bad!("cl_inner_space", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\nhello", 400),
    bad!("cl_inner_tab", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\t5\r\n\r\nhello", 400),
    bad!("cl_trailing_comma", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,\r\n\r\nhello", 400),
    bad!("cl_leading_comma", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ,5\r\n\r\nhello", 400),
    bad!("cl_decimal_point", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5.0\r\n\r\nhello", 400),
    bad!("cl_words", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: five\r\n\r\nhello", 400),
    bad!("cl_underscore", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n0123456789", 400),
    bad!("cl_fullwidth_digit", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \u{ff15}\r\n\r\nhello", 400),
    bad!("cl_vertical_tab", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \x0b5\r\n\r\nhello", 400),
    bad!("cl_overflow", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413),
    bad!("cl_over_body_limit", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16777217\r\n\r\n", 413),
    // Transfer-Encoding (RFC 9112 §6.1, §7).
    bad!("te_gzip_only", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 400),
    bad!("te_chunked_then_gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    bad!("te_gzip_then_chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    bad!("te_unknown_then_chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", 501),
    bad!("te_chunked_twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    bad!("te_two_fields_chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    bad!("te_second_field_not_chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: x\r\n\r\n0\r\n\r\n", 400),
    bad!("te_in_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    bad!("te_and_cl_in_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    bad!("te_empty", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n", 400),
    bad!("te_only_commas", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , ,\r\n\r\n0\r\n\r\n", 400),
    bad!("te_identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", 400),
    bad!("te_quoted", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n", 400),
    bad!("te_chunked_with_parameter", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1.0\r\n\r\n0\r\n\r\n", 400),
    bad!("te_xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    bad!("te_space_inside", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chun ked\r\n\r\n0\r\n\r\n", 400),
    bad!("te_vertical_tab", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400),
    // Line endings (RFC 9112 §2.2).
    bad!("bare_lf_request_line", "GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    bad!("bare_lf_field_line", "GET / HTTP/1.1\r\nHost: x\n\r\n", 400),
    bad!("bare_lf_end_of_head", "GET / HTTP/1.1\r\nHost: x\r\n\n", 400),
    bad!("bare_lf_everywhere", "GET / HTTP/1.1\nHost: x\n\n", 400),
    bad!("bare_lf_before_request_line", "\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("bare_cr_in_value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
    bad!("bare_cr_after_request_line", "GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
    // Field syntax (RFC 9112 §5, §5.2; RFC 9110 §5.5).
    bad!("obs_fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    bad!("obs_fold_tab", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", 400),
    bad!("obs_fold_transfer_encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    bad!("whitespace_before_first_field", "GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400),
    bad!("nul_in_value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400),
    bad!("del_in_value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 400),
    bad!("space_before_colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    bad!("space_before_colon_cl", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello", 400),
    bad!("tab_before_colon_te", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n", 400),
    bad!("empty_field_name", "GET / HTTP/1.1\r\nHost: x\r\n: x\r\n\r\n", 400),
    bad!("slash_in_field_name", "GET / HTTP/1.1\r\nHost: x\r\nX/Y: 1\r\n\r\n", 400),
    bad!("non_ascii_field_name", "GET / HTTP/1.1\r\nHost: x\r\nX\u{e9}: 1\r\n\r\n", 400),
    bad!("field_line_without_colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400),
    // Host (RFC 9112 §3.2, RFC 9110 §7.2).
    bad!("missing_host", "GET / HTTP/1.1\r\n\r\n", 400),
    bad!("two_hosts", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    bad!("host_with_space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    bad!("host_with_slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    bad!("host_with_userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    // Request line (RFC 9112 §3, §2.3).
    bad!("double_space_in_request_line", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("leading_space", " GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("invalid_method_char", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("lowercase_version", "GET / http/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("version_suffix", "GET / HTTP/1.1x\r\nHost: x\r\n\r\n", 400),
    bad!("version_without_minor", "GET / HTTP/1\r\nHost: x\r\n\r\n", 400),
    bad!("missing_version", "GET /\r\nHost: x\r\n\r\n", 400),
    bad!("http2_version", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    bad!("http12_version", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
    bad!("nul_in_target", "GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("target_without_slash", "GET foo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("target_with_fragment", "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("non_ascii_target", "GET /\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("asterisk_for_get", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("connect_origin_form", "CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    bad!("absolute_form_bad_scheme", "GET 1ttp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("target_too_long", &LONG_TARGET, 414),
    // Head size (RFC 6585 §5).
    ("too_many_fields", &MANY_HEADERS, 431),
    ("head_too_large", &BIG_HEAD, 431),
    // Chunked framing (RFC 9112 §7.1).
    bad!("chunk_size_missing", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n", 400),
    bad!("chunk_size_not_hex", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\ng\r\n0\r\n\r\n", 400),
    bad!("chunk_size_0x_prefix", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 400),
    bad!("chunk_size_negative", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n", 400),
    bad!("chunk_size_overflow", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400),
    bad!("chunk_size_trailing_space", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", 400),
    bad!("chunk_size_leading_space", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n", 400),
    bad!("chunk_size_bare_lf", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400),
    bad!("chunk_data_without_crlf", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n", 400),
    bad!("chunk_data_longer_than_size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", 400),
    bad!("chunk_data_bare_lf", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", 400),
    bad!("last_chunk_bare_lf", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n", 400),
    bad!("end_of_body_bare_lf", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n", 400),
    bad!("chunk_ext_control_byte", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a\x01\r\nabc\r\n0\r\n\r\n", 400),
    bad!("chunk_ext_bare_lf", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nabc\r\n0\r\n\r\n", 400),
    bad!("chunk_ext_unterminated_quote", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"b\r\nabc\r\n0\r\n\r\n", 400),
    bad!("chunk_ext_empty_name", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;=b\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_ext_too_long", &LONG_EXT, 400),
    bad!("trailer_bare_lf", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n", 400),
    bad!("trailer_obs_fold", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n", 400),
    bad!("trailer_without_colon", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX\r\n\r\n", 400),
    bad!("trailer_space_before_colon", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : y\r\n\r\n", 400),
    ("trailer_too_long", &LONG_TRAILER, 400),
    bad!("chunk_over_body_limit", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000001\r\nabc\r\n0\r\n\r\n", 413),
];

/// (name, raw bytes of exactly one request, expected body).
pub const VALID: &[(&str, &[u8], &[u8])] = &[
    ("minimal", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
    ("http10_without_host", b"GET / HTTP/1.0\r\n\r\n", b""),
    ("empty_lines_before_request_line", b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
    ("empty_host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", b""),
    ("host_ipv6_and_port", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", b""),
    ("cl_leading_zeros", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhello", b"hello"),
    ("cl_whitespace_around", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  5 \t\r\n\r\nhello", b"hello"),
    ("cl_repeated_identical", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    ("cl_identical_list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello", b"hello"),
    ("cl_zero", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b""),
    ("get_with_body", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", b"hi"),
    ("te_uppercase", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nhi\r\n0\r\n\r\n", b"hi"),
    ("te_empty_list_elements", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked,\r\n\r\n2\r\nhi\r\n0\r\n\r\n", b"hi"),
    ("chunked_uppercase_hex", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    ("chunked_leading_zeros", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0002\r\nhi\r\n000\r\n\r\n", b"hi"),
    ("chunked_extensions", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b;c;d=\"e f\\\"\" ; g = h\r\nhi\r\n0;last\r\n\r\n", b"hi"),
    ("chunked_trailers", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Checksum: abc\r\nX-Empty:\r\n\r\n", b"hi"),
    ("chunked_empty_body", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b""),
    ("expect_continue_with_body", b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", b"hi"),
    ("absolute_form", b"GET http://x.example/a?b HTTP/1.1\r\nHost: x.example\r\n\r\n", b""),
    ("asterisk_form", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", b""),
    ("authority_form", b"CONNECT x.example:443 HTTP/1.1\r\nHost: x.example:443\r\n\r\n", b""),
    ("extension_method", b"PROPFIND /d HTTP/1.1\r\nHost: x\r\n\r\n", b""),
    ("lowercase_method_token", b"get / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
    ("percent_encoded_target", b"GET /a%20b?q=%C3%A9&r HTTP/1.1\r\nHost: x\r\n\r\n", b""),
    ("obs_text_in_value", b"GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\n\r\n", b""),
    ("tabs_in_value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A:\ta\tb\t\r\n\r\n", b""),
    ("empty_value", b"GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n", b""),
    ("all_tchars_in_name", b"GET / HTTP/1.1\r\nHost: x\r\nX!#$%&'*+-.^_`|~0: v\r\n\r\n", b""),
    ("http10_keep_alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", b""),
    ("http10_with_length", b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", b"hi"),
];
