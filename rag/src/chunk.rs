//! Chunking by structure, else by size with overlap.
//!
//! - Markdown (and HTML, whose extracted text keeps headings as `#` lines): a chunk per
//!   section, split before each heading outside fenced code blocks; its title is the heading.
//! - Code and plain text: blank-line blocks (items, paragraphs), merged in order until a chunk
//!   would pass [`TARGET_CHARS`].
//! - Any section still longer than [`MAX_CHARS`] is cut into windows of about
//!   [`TARGET_CHARS`] that overlap by about [`OVERLAP_CHARS`], so a sentence on a cut is whole
//!   in one of the two chunks.
//!
//! Every chunk keeps its 1-based inclusive line range in the extracted text (for files other
//! than HTML, the file's own lines), the blake3 of its text, its section's heading (`title`)
//! and the headings that section sits under (`context`: the chapter and parent sections), so
//! a subsection titled "Examples" still says what it is an example of.

use crate::extract::DocKind;

/// Size a chunk is grown to (bytes of text).
pub const TARGET_CHARS: usize = 1200;
/// Longest section kept whole.
pub const MAX_CHARS: usize = 2000;
/// Overlap between consecutive windows of one long section.
pub const OVERLAP_CHARS: usize = 200;

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub text: String,
    pub start_line: u64,
    pub end_line: u64,
    /// The heading of the section the chunk is in, if the document has headings.
    pub title: String,
    /// The headings above that section, outermost first, joined by ` > `; empty for a
    /// top-level section or a document without headings.
    pub context: String,
    /// blake3 of `text`, hex.
    pub digest: String,
}

/// A run of lines: (1-based number, text) each.
type Lines<'a> = Vec<(u64, &'a str)>;

/// A section of a document: its heading, the headings above it, its lines.
struct Section<'a> {
    title: String,
    context: String,
    lines: Lines<'a>,
}

/// Chunks of `text`, a document of `kind`.
pub fn chunk(kind: DocKind, text: &str) -> Vec<Chunk> {
    let lines: Lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l))
        .collect();
    let sections = match kind {
        DocKind::Markdown | DocKind::Html => by_headings(&lines),
        DocKind::Code | DocKind::Text => by_blocks(&lines),
    };
    let mut out = Vec::new();
    for section in sections {
        let size: usize = section.lines.iter().map(|(_, l)| l.len() + 1).sum();
        if size <= MAX_CHARS {
            push(&mut out, &section, &section.lines);
        } else {
            for window in windows(&section.lines) {
                push(&mut out, &section, &window);
            }
        }
    }
    out
}

fn push(out: &mut Vec<Chunk>, section: &Section<'_>, lines: &[(u64, &str)]) {
    let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
        return;
    };
    let mut text = String::new();
    for (_, l) in lines {
        text.push_str(l);
        text.push('\n');
    }
    if text.trim().is_empty() {
        return;
    }
    let digest = blake3::hash(text.as_bytes()).to_hex().to_string();
    out.push(Chunk {
        text,
        start_line: first.0,
        end_line: last.0,
        title: section.title.clone(),
        context: section.context.clone(),
        digest,
    });
}

/// A heading line's level (1-6) and text.
fn heading(line: &str) -> Option<(usize, &str)> {
    let hashes = line.bytes().take_while(|b| *b == b'#').count();
    if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
        Some((hashes, line[hashes..].trim()))
    } else {
        None
    }
}

/// Sections that start at each heading outside ``` / ~~~ fences, each with the headings of
/// lower level above it.
fn by_headings<'a>(lines: &Lines<'a>) -> Vec<Section<'a>> {
    let mut sections: Vec<Section> = Vec::new();
    // The open headings: (level, text), outermost first; the last is the current title.
    let mut open: Vec<(usize, &str)> = Vec::new();
    let mut current: Lines = Vec::new();
    let mut fenced = false;
    let section = |open: &[(usize, &str)], lines: Lines<'a>| {
        let (title, above) = match open.split_last() {
            Some(((_, title), above)) => ((*title).to_owned(), above),
            None => (String::new(), open),
        };
        let context: Vec<&str> = above.iter().map(|(_, h)| *h).collect();
        Section {
            title,
            context: context.join(" > "),
            lines,
        }
    };
    for &(n, line) in lines {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
        }
        if !fenced && let Some((level, h)) = heading(line) {
            if !current.is_empty() {
                sections.push(section(&open, std::mem::take(&mut current)));
            }
            while open.last().is_some_and(|(l, _)| *l >= level) {
                open.pop();
            }
            open.push((level, h));
        }
        current.push((n, line));
    }
    if !current.is_empty() {
        sections.push(section(&open, current));
    }
    merge_bare_headings(sections)
}

/// A section that is only its heading (a chapter title right before its first subsection)
/// has no text to retrieve: its lines go to the start of the next section, which keeps its
/// own title and context.
fn merge_bare_headings(sections: Vec<Section<'_>>) -> Vec<Section<'_>> {
    let mut out: Vec<Section> = Vec::with_capacity(sections.len());
    let mut carried: Lines = Vec::new();
    // The first bare heading carried: names the lines if no section with text follows.
    let mut first_bare: Option<(String, String)> = None;
    for section in sections {
        let lines = &section.lines;
        let bare = lines.iter().skip(1).all(|(_, l)| l.trim().is_empty())
            && lines.first().is_some_and(|(_, l)| heading(l).is_some());
        carried.extend(section.lines);
        if bare {
            first_bare.get_or_insert((section.title, section.context));
        } else {
            first_bare = None;
            out.push(Section {
                title: section.title,
                context: section.context,
                lines: std::mem::take(&mut carried),
            });
        }
    }
    if let (false, Some((title, context))) = (carried.is_empty(), first_bare) {
        out.push(Section {
            title,
            context,
            lines: carried,
        });
    }
    out
}

/// Blank-line blocks merged up to [`TARGET_CHARS`].
fn by_blocks<'a>(lines: &Lines<'a>) -> Vec<Section<'a>> {
    let mut blocks: Vec<Lines> = Vec::new();
    let mut current: Lines = Vec::new();
    for &(n, line) in lines {
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
        } else {
            current.push((n, line));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    let mut sections: Vec<Section> = Vec::new();
    let untitled = |lines: Lines<'a>| Section {
        title: String::new(),
        context: String::new(),
        lines,
    };
    let mut merged: Lines = Vec::new();
    let mut size = 0;
    for block in blocks {
        let block_size: usize = block.iter().map(|(_, l)| l.len() + 1).sum();
        if !merged.is_empty() && size + block_size > TARGET_CHARS {
            sections.push(untitled(std::mem::take(&mut merged)));
            size = 0;
        }
        size += block_size;
        merged.extend(block);
    }
    if !merged.is_empty() {
        sections.push(untitled(merged));
    }
    sections
}

/// Windows of about [`TARGET_CHARS`] overlapping by about [`OVERLAP_CHARS`]. Lines longer
/// than [`MAX_CHARS`] are first cut at character boundaries (pieces keep their line number).
fn windows<'a>(section: &[(u64, &'a str)]) -> Vec<Lines<'a>> {
    let mut units: Lines = Vec::new();
    for &(n, line) in section {
        let mut rest = line;
        while rest.len() > MAX_CHARS {
            let mut cut = TARGET_CHARS;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            // Prefer to cut after a space.
            if let Some(space) = rest[..cut].rfind(' ')
                && space > TARGET_CHARS / 2
            {
                cut = space + 1;
            }
            units.push((n, &rest[..cut]));
            rest = &rest[cut..];
        }
        units.push((n, rest));
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < units.len() {
        let mut end = start;
        let mut size = 0;
        while end < units.len() && (end == start || size + units[end].1.len() < TARGET_CHARS) {
            size += units[end].1.len() + 1;
            end += 1;
        }
        out.push(units[start..end].to_vec());
        if end >= units.len() {
            break;
        }
        // Step back over about OVERLAP_CHARS of the window's tail, but always move forward.
        let mut back = end;
        let mut overlap = 0;
        while back > start + 1 && overlap + units[back - 1].1.len() <= OVERLAP_CHARS {
            back -= 1;
            overlap += units[back].1.len() + 1;
        }
        start = back.max(start + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_splits_at_headings_outside_fences() {
        let md = "intro line\n# One\nbody one\n```\n# not a heading\n```\n## Two\nbody two\n";
        let chunks = chunk(DocKind::Markdown, md);
        let summary: Vec<(&str, u64, u64)> = chunks
            .iter()
            .map(|c| (c.title.as_str(), c.start_line, c.end_line))
            .collect();
        assert_eq!(summary, vec![("", 1, 1), ("One", 2, 6), ("Two", 7, 8)]);
        assert!(chunks[1].text.contains("# not a heading"));
        assert_eq!(
            chunks[2].digest,
            blake3::hash(b"## Two\nbody two\n").to_hex().to_string()
        );
    }

    #[test]
    fn a_heading_without_text_joins_the_next_section() {
        let md = "# Ownership\n\n## Rules\nEach value has an owner.\n## Scope\nA scope.\n# Last\n";
        let chunks = chunk(DocKind::Markdown, md);
        let summary: Vec<(&str, u64, u64)> = chunks
            .iter()
            .map(|c| (c.title.as_str(), c.start_line, c.end_line))
            .collect();
        assert_eq!(
            summary,
            vec![("Rules", 1, 4), ("Scope", 5, 6), ("Last", 7, 7)]
        );
        assert!(chunks[0].text.starts_with("# Ownership\n"));
    }

    #[test]
    fn each_section_knows_the_headings_above_it() {
        let md = "# Book\nintro\n## Ownership\ntext\n### Rules\nrules\n#### Detail\nd\n## Borrowing\nb\n";
        let chunks = chunk(DocKind::Markdown, md);
        let summary: Vec<(&str, &str)> = chunks
            .iter()
            .map(|c| (c.title.as_str(), c.context.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("Book", ""),
                ("Ownership", "Book"),
                ("Rules", "Book > Ownership"),
                ("Detail", "Book > Ownership > Rules"),
                ("Borrowing", "Book"),
            ]
        );
        // Code and text have no headings: no context.
        assert!(
            chunk(DocKind::Text, "a\n\nb\n")
                .iter()
                .all(|c| c.context.is_empty())
        );
    }

    #[test]
    fn code_merges_blank_line_blocks_up_to_the_target() {
        let item = |i: usize| format!("fn f{i}() {{\n    {}\n}}\n", "x".repeat(300));
        let code: String = (0..10).map(|i| item(i) + "\n").collect();
        let chunks = chunk(DocKind::Code, &code);
        assert!(chunks.len() >= 3, "{}", chunks.len());
        for c in &chunks {
            assert!(c.text.len() <= TARGET_CHARS + 400, "{}", c.text.len());
            // Items are never cut: every chunk starts at an item.
            assert!(c.text.starts_with("fn f"), "{}", c.text);
        }
        // Every item is in exactly one chunk.
        let all: String = chunks.iter().map(|c| c.text.clone()).collect();
        for i in 0..10 {
            assert_eq!(all.matches(&format!("fn f{i}()")).count(), 1);
        }
    }

    #[test]
    fn long_sections_are_windows_that_overlap() {
        let text: String = (1..=200).map(|i| format!("line number {i:04}\n")).collect();
        let chunks = chunk(DocKind::Markdown, &text);
        assert!(chunks.len() > 2);
        for pair in chunks.windows(2) {
            assert!(
                pair[1].start_line <= pair[0].end_line,
                "no overlap: {pair:?}"
            );
            assert!(pair[1].start_line > pair[0].start_line);
        }
        assert_eq!(chunks[0].start_line, 1);
        assert_eq!(chunks.last().unwrap().end_line, 200);
    }

    #[test]
    fn one_huge_line_is_cut_at_char_boundaries() {
        let text = "é".repeat(5000);
        let chunks = chunk(DocKind::Text, &text);
        assert!(chunks.len() >= 4);
        let joined: usize = chunks
            .iter()
            .map(|c| c.text.trim_end().chars().count())
            .sum();
        assert!(joined >= 5000);
        assert!(chunks.iter().all(|c| c.start_line == 1 && c.end_line == 1));
    }
}
