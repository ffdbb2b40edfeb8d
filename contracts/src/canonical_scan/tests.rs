use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::canonical;

/// The full path: parse, canonicalize, compare (what a reader does without the scan).
fn full_path_says_canonical(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => {
            canonical::canonicalize(&object).is_ok_and(|canonical| canonical == bytes)
        }
        _ => false,
    }
}

/// Whether the scan proves `bytes` canonical.
fn scan(bytes: &[u8]) -> bool {
    scan_object(bytes, &mut Vec::new()).is_some()
}

#[test]
fn canonical_lines_are_proven_and_their_members_found() {
    let value = json!({
        "kind": "event",
        "payload": {"a": [1, -2, 0.5, 1e-7, 1e21, true, false, null, "x\ny\u{1}\"\\é🦉\u{2028}\u{7f}"], "b": {}},
        "stream_version": 9_007_199_254_740_991_u64,
        "": [],
        "é": 1,
        "\u{e000}": 2,
        "\u{1f600}": 3,
    });
    let bytes = canonical::to_canonical_vec(&value).unwrap();
    let mut members = Vec::new();
    assert!(scan_object(&bytes, &mut members).is_some());
    let text = std::str::from_utf8(&bytes).unwrap();
    assert_eq!(member(text, &members, "kind"), Some("\"event\""));
    assert_eq!(
        member(text, &members, "stream_version"),
        Some("9007199254740991")
    );
    assert_eq!(member(text, &members, "missing"), None);
    let mut split = Vec::new();
    assert!(split_members(text, &mut split));
    assert_eq!(split, members);
    for m in &members {
        assert!(text[m.span()].starts_with('"'));
    }
}

#[test]
fn lines_that_are_not_canonical_are_never_proven() {
    let cases: &[&str] = &[
        r#"{"a":1 }"#,
        r#"{ "a":1}"#,
        r#"{"a": 1}"#,
        r#"{"b":1,"a":2}"#,
        r#"{"a":1,"a":1}"#,
        r#"{"a":1.0}"#,
        r#"{"a":-0}"#,
        r#"{"a":01}"#,
        r#"{"a":1E+21}"#,
        r#"{"a":1e21}"#,
        r#"{"a":1e+0}"#,
        r#"{"a":0.10}"#,
        r#"{"a":.5}"#,
        r#"{"a":5.}"#,
        r#"{"a":9007199254740992}"#,
        r#"{"a":-9007199254740992}"#,
        r#"{"a":12345678901234567890}"#,
        r#"{"a":"\u0041"}"#,
        r#"{"a":"\/"}"#,
        r#"{"a":"\u000A"}"#,
        r#"{"a":"\u000a"}"#,
        r#"{"a":"\u001F"}"#,
        r#"{"a":"\x"}"#,
        "{\"a\":\"\u{1}\"}",
        r#"{"a":tru}"#,
        r#"{"a":nul}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":[,1]}"#,
        r#"{"a":{"b":1,}}"#,
        r#"{"a":1,}"#,
        r#"{"a":1}x"#,
        r#"{"a":1}{}"#,
        r#"{"a""#,
        r#"{"a":"#,
        r#"[1]"#,
        r#""a""#,
        r#"{"\u00e9":1}"#,
        "{\"\u{e000}\":1,\"\u{1f600}\":2}",
    ];
    for case in cases {
        assert!(!scan(case.as_bytes()), "{case}");
        assert!(!full_path_says_canonical(case.as_bytes()) || case.contains("\\u00e9"));
    }
    assert!(!scan(b"{\"a\":\"\xff\"}"));
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
    assert!(!scan(deep.as_bytes()));
}

/// Canonical lines the scan leaves to the full path are still found by `split_members`.
#[test]
fn escaped_names_are_left_to_the_full_path_and_still_split() {
    let value = json!({"a\nb": {"c\"": 1}, "z": 2});
    let bytes = canonical::to_canonical_vec(&value).unwrap();
    assert!(!scan(&bytes));
    let text = std::str::from_utf8(&bytes).unwrap();
    let mut members = Vec::new();
    assert!(split_members(text, &mut members));
    assert_eq!(members.len(), 2);
    assert_eq!(member(text, &members, "z"), Some("2"));
    assert_eq!(&text[members[0].value.clone()], r#"{"c\"":1}"#);
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,8}",
        Just("é🦉\u{202e}\u{e000}\u{1f600}".to_owned()),
        Just("\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\"\\/\u{7f}".to_owned()),
        ".{0,12}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(|n| json!(n)),
        (-9_007_199_254_740_991_i64..=9_007_199_254_740_991).prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        Just(json!(1e-7)),
        Just(json!(0.000001)),
        Just(json!(-0.0)),
    ]
}

fn object() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    let tree = leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(text(), tree, 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// Bytes a mutation may put into a line: whitespace, digits and number signs, quotes,
/// escapes, separators, a non-ASCII byte and an invalid one.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b' '),
        Just(b'0'),
        Just(b'1'),
        Just(b'9'),
        Just(b'.'),
        Just(b'e'),
        Just(b'E'),
        Just(b'+'),
        Just(b'-'),
        Just(b'"'),
        Just(b'\\'),
        Just(b'u'),
        Just(b','),
        Just(b':'),
        Just(b'{'),
        Just(b'}'),
        Just(b'['),
        Just(b']'),
        Just(b'a'),
        Just(b'z'),
        Just(0x01),
        Just(0xc3),
        Just(0xff),
        any::<u8>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The scan proves what it should: every canonical line without escaped member names.
    #[test]
    fn canonical_bytes_are_proven(value in object()) {
        // Some generated doubles are integers outside the I-JSON range: no canonical form.
        let Ok(bytes) = canonical::to_canonical_vec(&value) else { return Ok(()) };
        let text = std::str::from_utf8(&bytes).unwrap();
        let mut members = Vec::new();
        let proven = scan_object(&bytes, &mut members).is_some();
        let escaped_names = {
            let mut all = Vec::new();
            fn names(v: &Value, out: &mut Vec<String>) {
                match v {
                    Value::Object(m) => for (k, v) in m { out.push(k.clone()); names(v, out) },
                    Value::Array(a) => for v in a { names(v, out) },
                    _ => {}
                }
            }
            names(&value, &mut all);
            all.iter().any(|k| k.chars().any(|c| c < ' ' || c == '"' || c == '\\'))
        };
        prop_assert_eq!(proven, !escaped_names);
        let mut split = Vec::new();
        prop_assert!(split_members(text, &mut split));
        if proven {
            prop_assert_eq!(split, members);
        }
    }

    /// The scan never proves what the full path refuses: every mutation of a canonical line it
    /// calls canonical, the full path does too.
    #[test]
    fn the_scan_never_proves_a_non_canonical_line(
        value in object(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, byte()), 1..4),
    ) {
        let Ok(mut bytes) = canonical::to_canonical_vec(&value) else { return Ok(()) };
        for (at, op, b) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, b),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = b,
                _ => bytes.push(b),
            }
        }
        if scan(&bytes) {
            prop_assert!(full_path_says_canonical(&bytes), "{}", String::from_utf8_lossy(&bytes));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// `to_canonical_vec` (the fast writer) writes exactly what `serde_json_canonicalizer`
    /// writes, so hashes and exports stay byte-identical.
    #[test]
    fn the_writer_matches_serde_json_canonicalizer(value in object()) {
        if let Ok(ours) = canonical::to_canonical_vec(&value) {
            prop_assert_eq!(ours, serde_json_canonicalizer::to_vec(&value).unwrap());
        }
    }
}

#[test]
fn the_writer_sorts_names_by_utf16_code_units() {
    let value = json!({"\u{e000}": 1, "\u{1f600}": 2, "b": [0.5, -0.0, 1e21, 1e-7, -3], "a\u{1}\"\\\n": null});
    assert_eq!(
        canonical::to_canonical_vec(&value).unwrap(),
        serde_json_canonicalizer::to_vec(&value).unwrap()
    );
    assert!(
        String::from_utf8(canonical::to_canonical_vec(&value).unwrap())
            .unwrap()
            .contains("{\"a\\u0001\\\"\\\\\\n\":null,\"b\":[0.5,0,1e+21,1e-7,-3],\"\u{1f600}\":2,\"\u{e000}\":1}")
    );
}

/// The byte-at-a-time definition [`string_run`] must agree with.
fn string_run_naive(bytes: &[u8]) -> Option<usize> {
    bytes
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

#[test]
fn string_run_finds_each_stop_byte_at_every_offset() {
    // Every byte value at every position of a 20-byte run of plain bytes, some of them
    // high-bit bytes (borrows in the word tricks start from bytes below the stop).
    for stop in 0..=255u8 {
        for at in 0..20 {
            let mut bytes: Vec<u8> = (0..20)
                .map(|i| if i % 3 == 0 { 0xc3 } else { b'a' + i as u8 })
                .collect();
            bytes[at] = stop;
            assert_eq!(
                string_run(&bytes),
                string_run_naive(&bytes),
                "{stop:#x} at {at}"
            );
        }
    }
    assert_eq!(string_run(b""), None);
    assert_eq!(string_run(b"abcdefgh"), None);
    assert_eq!(string_run(b"abcdefgh\"\"\\"), Some(8));
    assert_eq!(string_run(b"\x1f\"abcdefgh"), Some(0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The word-at-a-time scan finds the same first stop byte as the plain loop.
    #[test]
    fn string_run_matches_the_byte_loop(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        prop_assert_eq!(string_run(&bytes), string_run_naive(&bytes));
    }
}
