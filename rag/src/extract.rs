//! Document extraction: bytes of a file to the text that is chunked and indexed.
//!
//! The kind comes from the file name. HTML is turned into text by `html2text` (scripts,
//! styles and markup dropped; headings kept as `#` lines so the Markdown chunker can split at
//! them); a page with a `<main>` element gives only that element's text (navigation, sidebars
//! and footers are not content), and a redirect page (`<meta http-equiv="refresh">`) gives
//! none: it is skipped like a binary file, as is a moved-content stub (a short page whose
//! text says its content moved, e.g. the old Book editions' "no longer distributed" pages):
//! such a page repeats its topic's words in a few lines, which BM25 ranks above the page
//! that has the content. Everything else must be UTF-8 text and is kept as
//! is, so line numbers of hits are line numbers of the file. Files that are not text (NUL
//! bytes, invalid UTF-8) or too large are skipped and counted, never an error: one odd file
//! must not fail an index run.

/// Largest file read, in bytes; larger files are skipped.
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// How a document is chunked after extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    Markdown,
    Html,
    /// Source code: chunked at blank-line blocks (items).
    Code,
    /// Plain text, JSON, YAML, and anything else that is UTF-8.
    Text,
}

const CODE: &[&str] = &[
    "rs", "py", "go", "js", "ts", "tsx", "jsx", "java", "kt", "c", "h", "cc", "cpp", "hpp", "cs",
    "rb", "php", "swift", "scala", "sh", "bash", "sql", "toml", "lua", "zig", "ex", "exs", "hs",
    "ml",
];

/// File extensions that are never text; skipped without reading.
const BINARY: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "webp", "ico", "svg", "woff", "woff2", "ttf", "otf", "eot", "pdf",
    "zip", "gz", "tgz", "xz", "zst", "bz2", "7z", "tar", "jar", "so", "dylib", "dll", "exe", "o",
    "a", "rlib", "wasm", "bin", "mp3", "mp4", "wav", "ogg", "webm", "mov",
];

/// The kind of the file at `path` (by extension), or `None` for binary formats.
pub fn kind_of(path: &str) -> Option<DocKind> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) => ext.to_ascii_lowercase(),
        None => return Some(DocKind::Text),
    };
    Some(match ext.as_str() {
        "md" | "markdown" | "mdx" => DocKind::Markdown,
        "html" | "htm" | "xhtml" => DocKind::Html,
        e if CODE.contains(&e) => DocKind::Code,
        e if BINARY.contains(&e) => return None,
        _ => DocKind::Text,
    })
}

/// Why a file was not indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("a binary format")]
    Binary,
    #[error("not UTF-8 text")]
    NotText,
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    /// An HTML page that only sends the browser elsewhere: it has no text of its own.
    #[error("an HTML redirect page")]
    Redirect,
    /// An HTML page of a few lines saying its content is elsewhere.
    #[error("an HTML page that says its content moved")]
    Moved,
}

/// Longest text (bytes, whitespace runs counted as one space) a moved-content stub has; the
/// stubs of the Rust documentation have at most ~1,500 with their page chrome, pages that
/// merely mention a move (`ptr::write`: "has been moved") have more.
const STUB_MAX_BYTES: usize = 1_600;

/// What a moved-content stub says (lowercase).
const MOVED_NOTICES: &[&str] = &[
    "no longer distributed",
    "this is an old link",
    "has moved",
    "has been moved",
];

/// The text of a document of `kind`, or why it is skipped.
pub fn extract(kind: DocKind, bytes: &[u8]) -> Result<String, Skip> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Skip::TooLarge);
    }
    if bytes.contains(&0) {
        return Err(Skip::NotText);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Skip::NotText)?;
    match kind {
        DocKind::Html if is_redirect(text) => Err(Skip::Redirect),
        DocKind::Html => {
            let text = html_to_text(&fence_code(main_element(text)));
            if is_moved_stub(&text) {
                Err(Skip::Moved)
            } else {
                Ok(text)
            }
        }
        _ => Ok(text.to_owned()),
    }
}

/// Whether extracted page text is a moved-content stub: short, and saying it moved.
fn is_moved_stub(text: &str) -> bool {
    let mut size = 0;
    for word in text.split_whitespace() {
        size += word.len() + 1;
        if size > STUB_MAX_BYTES {
            return false;
        }
    }
    let lower = text.to_lowercase();
    MOVED_NOTICES.iter().any(|n| lower.contains(n))
}

/// Byte offset of the first ASCII-case-insensitive occurrence of `needle` in `hay` at or
/// after `from`.
fn find_ci(hay: &str, needle: &str, from: usize) -> Option<usize> {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    (from..=hay.len().checked_sub(needle.len())?)
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// Whether the page's head asks the browser to go elsewhere (`<meta http-equiv="refresh">`),
/// the way rustdoc, mdBook and most generators write moved pages.
fn is_redirect(html: &str) -> bool {
    let mut head_end = find_ci(html, "</head", 0).unwrap_or(html.len().min(4096));
    while !html.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let head = &html[..head_end];
    let mut at = 0;
    while let Some(i) = find_ci(head, "<meta", at) {
        let end = head[i..].find('>').map_or(head.len(), |e| i + e);
        let tag = head[i..end].to_ascii_lowercase();
        if tag.contains("http-equiv") && tag.contains("refresh") {
            return true;
        }
        at = end;
    }
    false
}

/// The page's `<main>` element (from its start tag to the last `</main>`), when it has one;
/// else the whole page.
fn main_element(html: &str) -> &str {
    let mut at = 0;
    while let Some(i) = find_ci(html, "<main", at) {
        // `<main>` or `<main attr...>`, not `<mainframe>`.
        let next = html.as_bytes().get(i + 5).copied();
        if matches!(next, Some(b'>' | b' ' | b'\t' | b'\n' | b'\r')) {
            let end = rfind_ci(html, "</main>")
                .filter(|&e| e > i)
                .map_or(html.len(), |e| e + "</main>".len());
            return &html[i..end];
        }
        at = i + 5;
    }
    html
}

/// The page with a ```` ``` ```` line before and after each `<pre>` block, so the chunker
/// reads code as fenced: a `# comment` line of a shell or TOML sample is not a heading.
fn fence_code(html: &str) -> String {
    const FENCE: &str = "<p>```</p>";
    let mut out = String::with_capacity(html.len() + 64);
    let mut at = 0;
    while let Some(i) = find_ci(html, "<pre", at) {
        let next = html.as_bytes().get(i + 4).copied();
        if !matches!(next, Some(b'>' | b' ' | b'\t' | b'\n' | b'\r')) {
            out.push_str(&html[at..i + 4]);
            at = i + 4;
            continue;
        }
        let Some(close) = find_ci(html, "</pre>", i) else {
            break;
        };
        let end = close + "</pre>".len();
        out.push_str(&html[at..i]);
        out.push_str(FENCE);
        out.push_str(&html[i..end]);
        out.push_str(FENCE);
        at = end;
    }
    out.push_str(&html[at..]);
    out
}

/// Byte offset of the last ASCII-case-insensitive occurrence of `needle` in `hay`.
fn rfind_ci(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    (0..=h.len().checked_sub(n.len())?)
        .rev()
        .find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Text of an HTML page: `html2text` without wrapping (a very wide line), and without link
/// footnotes or emphasis marks, which would only add noise to BM25. `<title>`, `<script>`
/// and `<style>` contents are not in the output.
fn html_to_text(html: &str) -> String {
    const NO_WRAP: usize = 1 << 16;
    let text = html2text::config::plain_no_decorate()
        .string_from_read(html.as_bytes(), NO_WRAP)
        .unwrap_or_default();
    // Lines of only spaces are blank lines to the chunker.
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_extension() {
        assert_eq!(kind_of("a/b/README.md"), Some(DocKind::Markdown));
        assert_eq!(kind_of("x/index.HTML"), Some(DocKind::Html));
        assert_eq!(kind_of("src/lib.rs"), Some(DocKind::Code));
        assert_eq!(kind_of("conf.yaml"), Some(DocKind::Text));
        assert_eq!(kind_of("Makefile"), Some(DocKind::Text));
        assert_eq!(kind_of("logo.png"), None);
    }

    #[test]
    fn html_loses_markup_scripts_and_styles_but_keeps_text_and_headings() {
        let html = r#"<html><head><title>T</title><style>.x{color:red}</style>
            <script>var secret = 1;</script></head>
            <body><h1>Ownership</h1><p>Each value in Rust has an <em>owner</em>.</p>
            <ul><li>first rule</li></ul><a href="https://example.org/x">link text</a></body></html>"#;
        let text = extract(DocKind::Html, html.as_bytes()).unwrap();
        assert!(text.contains("Each value in Rust has an owner."), "{text}");
        assert!(text.contains("Ownership"), "{text}");
        assert!(text.contains("first rule"), "{text}");
        assert!(text.contains("link text"), "{text}");
        for noise in ["<p>", "color:red", "var secret", "https://example.org/x"] {
            assert!(!text.contains(noise), "`{noise}` leaked into {text}");
        }
    }

    #[test]
    fn only_the_main_element_of_a_page_is_text() {
        let html = r#"<html><body><nav class="sidebar"><a href="a.html">Sidebar entry</a></nav>
            <MAIN id="content"><h1>Slices</h1><p>A string slice is a reference.</p></MAIN>
            <footer>Footer words</footer></body></html>"#;
        let text = extract(DocKind::Html, html.as_bytes()).unwrap();
        assert!(text.contains("# Slices"), "{text}");
        assert!(text.contains("A string slice is a reference."), "{text}");
        for noise in ["Sidebar entry", "Footer words"] {
            assert!(!text.contains(noise), "`{noise}` leaked into {text}");
        }
        // No `<main>`: the whole body; `<mainframe>` is not `<main>`.
        let plain = "<body><mainframe>x</mainframe><p>Body text.</p></body>";
        let text = extract(DocKind::Html, plain.as_bytes()).unwrap();
        assert!(text.contains("Body text."), "{text}");
    }

    #[test]
    fn a_comment_in_a_code_block_is_not_a_heading() {
        let html = "<main><h2>Install</h2><p>Run:</p><pre><code># fetch the sources\ncargo build\n</code></pre><p>After.</p></main>";
        let text = extract(DocKind::Html, html.as_bytes()).unwrap();
        let fence = text.find("```").unwrap_or(usize::MAX);
        let comment = text.find("# fetch the sources").unwrap_or(0);
        assert!(fence < comment && text[comment..].contains("```"), "{text}");
        let chunks = crate::chunk::chunk(DocKind::Html, &text);
        let titles: Vec<&str> = chunks.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, vec!["Install"], "{chunks:?}");
    }

    #[test]
    fn a_redirect_page_is_skipped() {
        let redirect = r#"<!DOCTYPE html><html><head>
            <META HTTP-EQUIV="refresh" content="0;URL=struct.Vec.html"><title>Redirection</title>
            </head><body><p>Redirecting to <a href="struct.Vec.html">struct.Vec.html</a>...</p>
            </body></html>"#;
        assert_eq!(
            extract(DocKind::Html, redirect.as_bytes()),
            Err(Skip::Redirect)
        );
        // A refresh named in the body text is not a redirect.
        let prose = "<html><head><title>t</title></head><body><p>http-equiv refresh</p></body>";
        assert!(extract(DocKind::Html, prose.as_bytes()).is_ok());
    }

    #[test]
    fn a_short_page_saying_its_content_moved_is_skipped() {
        let stub = r#"<html><body><main><h2 id="x">What Is Ownership?</h2>
            <p>The 2018 edition of the book is no longer distributed with Rust's documentation.</p>
            <p>You may want to check out <a href="../ch04-01.html">the current version</a>.</p>
            </main></body></html>"#;
        assert_eq!(extract(DocKind::Html, stub.as_bytes()), Err(Skip::Moved));
        let old =
            "<html><body><h1>Guide</h1><p>This content HAS MOVED into the book.</p></body></html>";
        assert_eq!(extract(DocKind::Html, old.as_bytes()), Err(Skip::Moved));
        // A short page on another topic stays, and so does a long page that mentions a move.
        let short = "<main><h1>Moves</h1><p>Ownership moves to the callee.</p></main>";
        assert!(extract(DocKind::Html, short.as_bytes()).is_ok());
        let long = format!(
            "<main><h1>ptr::write</h1><p>The value has been moved into place.</p><p>{}</p></main>",
            "Overwrites a memory location with the given value. ".repeat(40)
        );
        assert!(extract(DocKind::Html, long.as_bytes()).is_ok());
        // Markdown is never a stub: only generated HTML pages are judged.
        assert!(extract(DocKind::Markdown, b"# Old\nThis page has moved.\n").is_ok());
    }

    #[test]
    fn binary_and_invalid_utf8_are_skipped() {
        assert_eq!(extract(DocKind::Text, b"a\0b"), Err(Skip::NotText));
        assert_eq!(
            extract(DocKind::Text, &[0xff, 0xfe, 0x41]),
            Err(Skip::NotText)
        );
        let big = vec![b'a'; (MAX_FILE_BYTES + 1) as usize];
        assert_eq!(extract(DocKind::Text, &big), Err(Skip::TooLarge));
        assert_eq!(extract(DocKind::Markdown, b"# x\n").unwrap(), "# x\n");
    }
}
