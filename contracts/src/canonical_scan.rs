//! Checking that bytes already are canonical JSON, without building a value.
//!
//! An export is written in RFC 8785 form (see [`crate::canonical`]), so the reader's question
//! is not "what is the canonical form of this line" but "is this line its own canonical form".
//! [`scan_object`] answers that in one pass over the bytes, with no allocation, and records
//! where each top-level member is, so a reader can pick fields and splice the bytes a hash
//! covers straight out of the line.
//!
//! The scan is deliberately conservative: it answers yes only for lines it can
//! prove canonical with simple rules (no whitespace; member names without escapes, in strictly
//! increasing UTF-16 order; strings with only the escapes JCS writes; integers within
//! ±(2^53−1) written without leading zeros or `-0`; other numbers equal to their shortest
//! ECMAScript form; nesting well below [`crate::canonical::MAX_DEPTH`]). For anything else it
//! answers "unsure", and the caller must decide with the full path ([`crate::canonical`]: parse,
//! canonicalize, compare). A test holds the two paths together: whenever the scan says
//! canonical, the full path agrees.

use std::ops::Range;

use crate::canonical::MAX_SAFE_INTEGER;

/// Nesting at which the scan gives up and leaves the decision to the full path; well below
/// [`crate::canonical::MAX_DEPTH`], so what the scan accepts is never too deep.
const SCAN_DEPTH: usize = 64;

/// One top-level member of a scanned object, as byte ranges into the scanned line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's name, without its quotes, as written (with any escapes).
    pub name: Range<usize>,
    /// The value's JSON text.
    pub value: Range<usize>,
}

impl Member {
    /// The whole member, `"name":value`.
    pub fn span(&self) -> Range<usize> {
        self.name.start - 1..self.value.end
    }
}

/// Scans `bytes` as one JSON object in canonical form, recording its top-level members (in
/// order) into `members`, which is cleared first and can be reused across lines.
///
/// `Some(text)` (the bytes as text) when the bytes are proven to be exactly the RFC 8785 form
/// of a JSON object that passes [`crate::canonical::check_ijson`]. `None` when the scan could
/// not prove it: the bytes may still be canonical (an escaped member name, deep nesting) or not
/// at all, and the caller decides with the full path.
pub fn scan_object<'a>(bytes: &'a [u8], members: &mut Vec<Member>) -> Option<&'a str> {
    members.clear();
    // Strings are the only place non-ASCII bytes may appear; checking the whole line at once
    // is cheaper than checking each string.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut scanner = Scanner { bytes, at: 0 };
    let proven = scanner.peek() == Some(b'{')
        && scanner.object(1, Some(members))
        && scanner.at == bytes.len();
    if proven {
        Some(text)
    } else {
        members.clear();
        None
    }
}

/// The top-level members of `text`, which must already be known to be canonical JSON (by
/// [`scan_object`] or the full path): unlike the scan, this accepts escaped names and any
/// number, and checks nothing else. Returns false if `text` is not an object after all.
pub fn split_members(text: &str, members: &mut Vec<Member>) -> bool {
    members.clear();
    let mut scanner = Scanner {
        bytes: text.as_bytes(),
        at: 0,
    };
    if scanner.peek() != Some(b'{') {
        return false;
    }
    scanner.at += 1;
    if scanner.eat(b'}') {
        return scanner.at == text.len();
    }
    loop {
        if scanner.peek() != Some(b'"') {
            return false;
        }
        let start = scanner.at + 1;
        if !scanner.skip_string() {
            return false;
        }
        let name = start..scanner.at - 1;
        if !scanner.eat(b':') {
            return false;
        }
        let value_start = scanner.at;
        if !scanner.skip_value(0) {
            return false;
        }
        members.push(Member {
            name,
            value: value_start..scanner.at,
        });
        if scanner.eat(b',') {
            continue;
        }
        return scanner.eat(b'}') && scanner.at == text.len();
    }
}

/// The raw value of the member named `name` (a name without escapes), if present.
pub fn member<'a>(text: &'a str, members: &[Member], name: &str) -> Option<&'a str> {
    members
        .iter()
        .find(|m| &text[m.name.clone()] == name)
        .map(|m| &text[m.value.clone()])
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// A canonical value at nesting `depth` (the number of containers around it).
    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => self.object(depth + 1, None),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().is_some(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    /// An object whose names are escape-free and strictly increasing in UTF-16 order.
    fn object(&mut self, depth: usize, mut members: Option<&mut Vec<Member>>) -> bool {
        if depth > SCAN_DEPTH {
            return false;
        }
        self.at += 1; // `{`
        if self.eat(b'}') {
            return true;
        }
        let mut previous: Option<Range<usize>> = None;
        loop {
            if self.peek() != Some(b'"') {
                return false;
            }
            let Some((name, escaped)) = self.string() else {
                return false;
            };
            if escaped {
                return false;
            }
            if let Some(previous) = &previous
                && !name_less(&self.bytes[previous.clone()], &self.bytes[name.clone()])
            {
                return false;
            }
            if !self.eat(b':') {
                return false;
            }
            let value_start = self.at;
            if !self.value(depth) {
                return false;
            }
            if let Some(members) = members.as_deref_mut() {
                members.push(Member {
                    name: name.clone(),
                    value: value_start..self.at,
                });
            }
            previous = Some(name);
            if self.eat(b',') {
                continue;
            }
            return self.eat(b'}');
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        if depth > SCAN_DEPTH {
            return false;
        }
        self.at += 1; // `[`
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            if self.eat(b',') {
                continue;
            }
            return self.eat(b']');
        }
    }

    /// A string using only the escapes JCS writes; returns the range inside the quotes and
    /// whether it holds an escape.
    fn string(&mut self) -> Option<(Range<usize>, bool)> {
        self.at += 1; // `"`
        let start = self.at;
        let mut escaped = false;
        loop {
            // Plain bytes run until a quote, a backslash or a control character (which JSON
            // does not allow unescaped). UTF-8 was checked for the whole line.
            self.at += string_run(&self.bytes[self.at..])?;
            match self.bytes[self.at] {
                b'"' => {
                    self.at += 1;
                    return Some((start..self.at - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    let width = canonical_escape(&self.bytes[self.at + 1..])?;
                    self.at += 1 + width;
                }
                _ => return None,
            }
        }
    }

    /// A number in the form JCS writes it. Integers are the common case and are checked
    /// directly; any other number must equal its shortest ECMAScript form.
    fn number(&mut self) -> bool {
        let start = self.at;
        let negative = self.eat(b'-');
        let digits_start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = &self.bytes[digits_start..self.at];
        if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) {
            return false;
        }
        if !matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            if negative && digits == b"0" {
                return false; // JCS writes -0 as 0
            }
            return digits.len() < 16
                || (digits.len() == 16 && parse_digits(digits) <= MAX_SAFE_INTEGER);
        }
        if self.eat(b'.') {
            let fraction = self.at;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
            if self.at == fraction {
                return false;
            }
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !(self.eat(b'+') || self.eat(b'-')) {
                return false;
            }
            let exponent = self.at;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
            if self.at == exponent {
                return false;
            }
        }
        // The token is ASCII; its canonical form is the shortest round-trip form of the double
        // it denotes. A fraction or exponent form never denotes an integer JCS would write
        // without one, so the I-JSON integer range is not at stake here.
        let Ok(token) = std::str::from_utf8(&self.bytes[start..self.at]) else {
            return false;
        };
        let Ok(double) = token.parse::<f64>() else {
            return false;
        };
        double.is_finite()
            && serde_json_canonicalizer::to_string(&double).is_ok_and(|text| text == token)
    }

    /// Skips any JSON string (escapes unchecked); for [`split_members`].
    fn skip_string(&mut self) -> bool {
        self.at += 1;
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'"' => return true,
                b'\\' => self.at += 1,
                _ => {}
            }
        }
        false
    }

    /// Skips any JSON value known to be well-formed; for [`split_members`].
    fn skip_value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(open @ (b'{' | b'[')) => {
                if depth > crate::canonical::MAX_DEPTH {
                    return false;
                }
                let close = if open == b'{' { b'}' } else { b']' };
                self.at += 1;
                if self.eat(close) {
                    return true;
                }
                loop {
                    if open == b'{' && (!self.skip_string() || !self.eat(b':')) {
                        return false;
                    }
                    if !self.skip_value(depth + 1) {
                        return false;
                    }
                    if self.eat(b',') {
                        continue;
                    }
                    return self.eat(close);
                }
            }
            Some(_) => {
                let start = self.at;
                while let Some(byte) = self.peek() {
                    if matches!(byte, b',' | b'}' | b']') {
                        break;
                    }
                    self.at += 1;
                }
                self.at > start
            }
            None => false,
        }
    }
}

/// The length of the run of plain string bytes at the start of `bytes`: the index of the first
/// quote, backslash or control character, `None` when there is none.
///
/// Strings are most of an export's bytes (ids, hashes, text), so this looks at eight bytes at
/// a time: for each word, a mask whose lowest set high bit is the first byte that ends the run
/// (the bit tricks can flag false positives only above a true one, never below it).
fn string_run(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // High bit set in each byte of `word` that is below `n` (n <= 0x80), exact for the lowest.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let mut at = 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        let word = u64::from_le_bytes(le);
        let stops = below(word, 0x20)
            | below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1);
        if stops != 0 {
            return Some(at + (stops.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

/// The width of the escape after a backslash if JCS writes it that way: `\"`, `\\`, the five
/// short escapes, and `\u00xx` (lower-case hex) for the other control characters.
fn canonical_escape(after: &[u8]) -> Option<usize> {
    match after.first()? {
        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => Some(1),
        b'u' => {
            let hex = after.get(1..5)?;
            let low = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            if hex[0] != b'0' || hex[1] != b'0' || !matches!(hex[2], b'0' | b'1') {
                return None;
            }
            let code = (hex[2] - b'0') * 16 + low(hex[3])?;
            // These five have short escapes, which JCS uses instead.
            (!matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)).then_some(5)
        }
        _ => None,
    }
}

fn parse_digits(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })
}

/// Whether escape-free name `a` sorts strictly before `b` in UTF-16 code units (RFC 8785
/// section 3.2.3). Both are valid UTF-8 (checked for the whole line).
fn name_less(a: &[u8], b: &[u8]) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a < b;
    }
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(a), Ok(b)) => a.encode_utf16().lt(b.encode_utf16()),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
