//! Document extraction: bytes of a file to the text that is chunked and indexed.
//!
//! The kind comes from the file name. HTML is turned into text by `html2text` (scripts,
//! styles and markup dropped; headings kept as `#` lines so the Markdown chunker can split at
//! them); everything else must be UTF-8 text and is kept as is, so line numbers of hits are
//! line numbers of the file. Files that are not text (NUL bytes, invalid UTF-8) or too large
//! are skipped and counted, never an error: one odd file must not fail an index run.

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
}

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
        DocKind::Html => Ok(html_to_text(text)),
        _ => Ok(text.to_owned()),
    }
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
