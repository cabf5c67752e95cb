//! Hand-written pre-splitters for the three named patterns: the same pieces as the
//! regexes in [`super::pattern`], without a regex engine (tests compare them on lots of
//! text). Each function reads the regex's alternatives in order, as the regex engine
//! tries them, and returns where the piece starting at `i` ends.
//!
//! Character classes come from regex-syntax's Unicode tables, the ones fancy-regex uses,
//! so `\p{L}`, `\p{N}` and `\s` mean exactly what they mean in the regex.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Gpt2,
    Gpt4,
    O200k,
}

impl Named {
    pub fn name(self) -> &'static str {
        match self {
            Named::Gpt2 => "gpt2",
            Named::Gpt4 => "gpt4",
            Named::O200k => "o200k",
        }
    }
}

/// Calls `each` on every piece of `text`, in order; the pieces tile the text.
pub fn split<'t>(named: Named, text: &'t str, mut each: impl FnMut(&'t str)) {
    let table = classes();
    let piece_end = match named {
        Named::Gpt2 => gpt2_piece,
        Named::Gpt4 => gpt4_piece,
        Named::O200k => o200k_piece,
    };
    let mut i = 0;
    while i < text.len() {
        let end = piece_end(table, text, i);
        each(&text[i..end]);
        i = end;
    }
}

// Class bits.
const LETTER: u8 = 1; // \p{L}
const NUMBER: u8 = 2; // \p{N}
const SPACE: u8 = 4; // \s (White_Space)
const UPPERISH: u8 = 8; // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
const LOWERISH: u8 = 16; // [\p{Ll}\p{Lm}\p{Lo}\p{M}]

struct Classes {
    ascii: [u8; 128],
    /// Sorted, disjoint (first, last, bits) code-point ranges with non-zero bits.
    ranges: Vec<(u32, u32, u8)>,
}

impl Classes {
    fn of(&self, c: char) -> u8 {
        let c = c as u32;
        if c < 128 {
            return self.ascii[c as usize];
        }
        match self.ranges.binary_search_by(|&(first, last, _)| {
            if last < c {
                std::cmp::Ordering::Less
            } else if first > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(k) => self.ranges[k].2,
            Err(_) => 0,
        }
    }
}

fn class_ranges(class: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new()
        .parse(class)
        .expect("the class regexes are valid");
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => unreachable!("each class regex is one Unicode class"),
    }
}

fn classes() -> &'static Classes {
    static TABLE: OnceLock<Classes> = OnceLock::new();
    TABLE.get_or_init(|| {
        let sets = [
            (LETTER, r"\p{L}"),
            (NUMBER, r"\p{N}"),
            (SPACE, r"\s"),
            (UPPERISH, r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"),
            (LOWERISH, r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"),
        ];
        // Sweep over the range boundaries: (code point, bit, +1 at a start / -1 past an end).
        let mut events: Vec<(u32, u8, i32)> = Vec::new();
        for (bit, class) in sets {
            for (first, last) in class_ranges(class) {
                events.push((first, bit, 1));
                events.push((last + 1, bit, -1));
            }
        }
        events.sort_unstable();
        let mut depth = [0i32; 8];
        let mut ranges: Vec<(u32, u32, u8)> = Vec::new();
        let mut k = 0;
        while k < events.len() {
            let at = events[k].0;
            while k < events.len() && events[k].0 == at {
                depth[events[k].1.trailing_zeros() as usize] += events[k].2;
                k += 1;
            }
            let bits = (0..8)
                .filter(|&b| depth[b] > 0)
                .fold(0u8, |m, b| m | (1 << b));
            let next = events.get(k).map_or(0x11_0000, |e| e.0);
            if bits != 0 && next > at {
                ranges.push((at, next - 1, bits));
            }
        }
        let mut ascii = [0u8; 128];
        for (c, slot) in ascii.iter_mut().enumerate() {
            let c = c as u32;
            if let Some(&(_, _, bits)) = ranges.iter().find(|&&(f, l, _)| f <= c && c <= l) {
                *slot = bits;
            }
        }
        let ranges = ranges
            .into_iter()
            .filter(|&(_, last, _)| last >= 128)
            .collect();
        Classes { ascii, ranges }
    })
}

/// The character at byte `i`, if any.
fn char_at(text: &str, i: usize) -> Option<char> {
    text.get(i..).and_then(|rest| rest.chars().next())
}

/// The end of the run of characters whose class has one of `bits`, from `i`.
fn run_end(t: &Classes, text: &str, mut i: usize, bits: u8) -> usize {
    while let Some(c) = char_at(text, i) {
        if t.of(c) & bits == 0 {
            break;
        }
        i += c.len_utf8();
    }
    i
}

/// `[^\s\p{L}\p{N}]`: neither space, letter nor number.
fn is_other(t: &Classes, c: char) -> bool {
    t.of(c) & (SPACE | LETTER | NUMBER) == 0
}

/// `'(?:[sdmt]|ll|ve|re)` at `i`, case-sensitive (GPT-2) or not (GPT-4, o200k); its end.
fn contraction(text: &str, i: usize, ignore_case: bool) -> Option<usize> {
    let rest = text.get(i..)?.strip_prefix('\'')?;
    let mut chars = rest.chars();
    let first = chars.next()?;
    let second = chars.next();
    let fold = |c: char| -> char {
        if !ignore_case {
            return c;
        }
        match c {
            // U+017F LATIN SMALL LETTER LONG S folds to 's', as in the regex's (?i).
            '\u{17F}' => 's',
            c => c.to_ascii_lowercase(),
        }
    };
    let (a, b) = (fold(first), second.map(fold));
    match (a, b) {
        ('s' | 'd' | 'm' | 't', _) => Some(i + 1 + first.len_utf8()),
        ('l', Some('l')) | ('v', Some('e')) | ('r', Some('e')) => {
            Some(i + 1 + first.len_utf8() + second.map_or(0, char::len_utf8))
        }
        _ => None,
    }
}

/// The whitespace alternatives shared by the three patterns, for a whitespace run
/// `[i, k)`: `\s+(?!\S)` (all of it at the end of the text, else all but its last
/// character), else one character (`\s`; o200k's `\s+` is the same here).
fn whitespace_piece(text: &str, i: usize, k: usize) -> usize {
    if k == text.len() {
        return k;
    }
    let last = text[i..k].char_indices().next_back().map_or(0, |(p, _)| p);
    if last > 0 {
        i + last
    } else {
        k
    }
}

/// The last `\r` or `\n` in `[i, k)`, plus one: `\s*[\r\n]` (and o200k's `\s*[\r\n]+`).
fn through_last_newline(text: &str, i: usize, k: usize) -> Option<usize> {
    text[i..k].rfind(['\r', '\n']).map(|p| i + p + 1)
}

// '(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s
fn gpt2_piece(t: &Classes, text: &str, i: usize) -> usize {
    let c = char_at(text, i).expect("i is inside the text");
    if let Some(end) = contraction(text, i, false) {
        return end;
    }
    let j = if c == ' ' { i + 1 } else { i };
    if let Some(d) = char_at(text, j) {
        let bits = t.of(d);
        if bits & LETTER != 0 {
            return run_end(t, text, j, LETTER);
        }
        if bits & NUMBER != 0 {
            return run_end(t, text, j, NUMBER);
        }
        if is_other(t, d) {
            let mut k = j;
            while let Some(e) = char_at(text, k).filter(|&e| is_other(t, e)) {
                k += e.len_utf8();
            }
            return k;
        }
    }
    // c is whitespace.
    whitespace_piece(text, i, run_end(t, text, i, SPACE))
}

// '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+
// |\s++$|\s*[\r\n]|\s+(?!\S)|\s
fn gpt4_piece(t: &Classes, text: &str, i: usize) -> usize {
    let c = char_at(text, i).expect("i is inside the text");
    if let Some(end) = contraction(text, i, true) {
        return end;
    }
    let bits = t.of(c);
    // [^\r\n\p{L}\p{N}]?+\p{L}++ (the optional character is possessive: no retry without it).
    let j = if bits & (LETTER | NUMBER) == 0 && c != '\r' && c != '\n' {
        i + c.len_utf8()
    } else {
        i
    };
    if char_at(text, j).is_some_and(|d| t.of(d) & LETTER != 0) {
        return run_end(t, text, j, LETTER);
    }
    if bits & NUMBER != 0 {
        let mut k = i;
        for _ in 0..3 {
            match char_at(text, k).filter(|&d| t.of(d) & NUMBER != 0) {
                Some(d) => k += d.len_utf8(),
                None => break,
            }
        }
        return k;
    }
    //  ?[^\s\p{L}\p{N}]++[\r\n]*+
    let j = if c == ' ' { i + 1 } else { i };
    if char_at(text, j).is_some_and(|d| is_other(t, d)) {
        let mut k = j;
        while let Some(e) = char_at(text, k).filter(|&e| is_other(t, e)) {
            k += e.len_utf8();
        }
        while let Some(e) = char_at(text, k).filter(|&e| e == '\r' || e == '\n') {
            k += e.len_utf8();
        }
        return k;
    }
    // c is whitespace.
    let k = run_end(t, text, i, SPACE);
    if k == text.len() {
        return k;
    }
    if let Some(end) = through_last_newline(text, i, k) {
        return end;
    }
    whitespace_piece(text, i, k)
}

// [^\r\n\p{L}\p{N}]?[U]*[W]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
// |[^\r\n\p{L}\p{N}]?[U]+[W]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
// |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
// with U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], W = [\p{Ll}\p{Lm}\p{Lo}\p{M}].
fn o200k_piece(t: &Classes, text: &str, i: usize) -> usize {
    let c = char_at(text, i).expect("i is inside the text");
    let bits = t.of(c);
    let starts: &[usize] = if bits & (LETTER | NUMBER) == 0 && c != '\r' && c != '\n' {
        &[i + c.len_utf8(), i]
    } else {
        &[i]
    };
    let with_suffix = |end: usize| contraction(text, end, true).unwrap_or(end);
    // [U]*[W]+: the U-run, then a W-run; or, backtracking, the run up to its last W.
    for &j in starts {
        let e = run_end(t, text, j, UPPERISH);
        let f = run_end(t, text, e, LOWERISH);
        if f > e {
            return with_suffix(f);
        }
        let last_w = text[j..e]
            .char_indices()
            .rev()
            .find(|&(_, d)| t.of(d) & LOWERISH != 0);
        if let Some((p, d)) = last_w {
            return with_suffix(j + p + d.len_utf8());
        }
    }
    // [U]+[W]*
    for &j in starts {
        let e = run_end(t, text, j, UPPERISH);
        if e > j {
            return with_suffix(run_end(t, text, e, LOWERISH));
        }
    }
    if bits & NUMBER != 0 {
        let mut k = i;
        for _ in 0..3 {
            match char_at(text, k).filter(|&d| t.of(d) & NUMBER != 0) {
                Some(d) => k += d.len_utf8(),
                None => break,
            }
        }
        return k;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n/]*
    let j = if c == ' ' { i + 1 } else { i };
    if char_at(text, j).is_some_and(|d| is_other(t, d)) {
        let mut k = j;
        while let Some(e) = char_at(text, k).filter(|&e| is_other(t, e)) {
            k += e.len_utf8();
        }
        while let Some(e) = char_at(text, k).filter(|&e| matches!(e, '\r' | '\n' | '/')) {
            k += e.len_utf8();
        }
        return k;
    }
    // c is whitespace.
    let k = run_end(t, text, i, SPACE);
    if let Some(end) = through_last_newline(text, i, k) {
        return end;
    }
    whitespace_piece(text, i, k)
}
