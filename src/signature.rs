//! Failure signatures: which failures are "the same bug", as libFuzzer's deduplication and
//! crash triage tools (ClusterFuzz, `casr-cluster`) group crashes by their stack's shape.
//!
//! A signature is the run (`scenario@profile`), the failed check, and the shape of the
//! witness: its text with every number, id and hash replaced by a placeholder (`N`, `H`),
//! list items that repeat collapsed to one, and "and N more" tails dropped. Two oversells of
//! different products by different shoppers in different seeds have one signature; an
//! oversell and a duplicate order, or the same check failing in another way (another
//! sentence), have two.

/// The longest shape kept, in characters: signatures stay small however long a witness is.
pub const SHAPE_CHARS_MAX: usize = 240;

/// The shape of a witness (see the module documentation).
pub fn shape(witness: &str) -> String {
    let normalized = normalize_tokens(witness);
    let without_tails = normalized.replace(" and N more", "");
    let collapsed = collapse_repeats(&without_tails);
    let shape = truncate_chars(collapsed.trim(), SHAPE_CHARS_MAX);
    assert!(shape.chars().count() <= SHAPE_CHARS_MAX + 1);
    shape
}

/// `text` cut to `chars_max` characters, with `…` when something was cut.
pub fn truncate_chars(text: &str, chars_max: usize) -> String {
    match text.char_indices().nth(chars_max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Replaces numbers (`12`, `-3`, `12.5`) by `N`, hexadecimal ids of 8 or more digits by `H`,
/// numbered names (`shopper-21`, `SKU-7`) by `NAME`, and the digits inside words (`p95`,
/// `v1`) by `N`; collapses runs of white space.
fn normalize_tokens(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            out.push(' ');
            continue;
        }
        let is_word = |c: char| c.is_alphanumeric() || c == '_';
        // A minus sign before a number that does not follow a word (`-3`, not `shopper-3`):
        // a negative count is the same shape as a positive one.
        let minus = c == '-'
            && chars.get(i + 1).is_some_and(char::is_ascii_digit)
            && (i == 0 || !is_word(chars[i - 1]));
        if minus {
            i += 1;
            continue;
        }
        if !is_word(c) {
            out.push(c);
            i += 1;
            continue;
        }
        // A word: letters, digits and `_`.
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let word = &chars[start..i];
        let has_digit = word.iter().any(char::is_ascii_digit);
        // A name with a number (`shopper-21`, `payer-3`, `SKU-7`): which one, and which kind
        // of client, is not the failure's shape.
        let numbered_name = !has_digit
            && word.iter().all(|c| c.is_alphabetic())
            && chars.get(i) == Some(&'-')
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if numbered_name {
            i += 1;
            while i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            out.push_str("NAME");
        } else if !has_digit {
            out.extend(word);
        } else if word.iter().all(char::is_ascii_digit) {
            out.push('N');
            // A decimal fraction belongs to the number.
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
        } else if word.len() >= 8 && word.iter().all(char::is_ascii_hexdigit) {
            out.push('H');
        } else {
            let mut in_digits = false;
            for &ch in word {
                if ch.is_ascii_digit() {
                    if !in_digits {
                        out.push('N');
                    }
                    in_digits = true;
                } else {
                    out.push(ch);
                    in_digits = false;
                }
            }
        }
    }
    out
}

/// Splits at `,` and `;` outside brackets (each segment keeps its separator) and keeps each
/// segment's first
/// occurrence only: a list of two items and a list of six have one shape, and so do lists
/// that hold the same kinds of items in other positions (`by #N NAME` and `by an unknown
/// request`).
fn collapse_repeats(text: &str) -> String {
    // A list's last item has no separator after it: compare segments without theirs.
    let key = |s: &str| s.trim().trim_end_matches([',', ';']).trim().to_string();
    let mut seen: Vec<String> = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut start = 0;
    let mut segments = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            ',' | ';' if depth == 0 => {
                segments.push(&text[start..=i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    segments.push(&text[start..]);
    for segment in segments {
        let k = key(segment);
        // A list's first item carries the sentence's lead-in (`taken by reservation ...`):
        // an item that ends an earlier segment is a repeat too.
        if !seen.iter().any(|s: &String| s.ends_with(&k)) {
            out.push_str(segment);
            seen.push(k);
        }
    }
    out.trim_end_matches([',', ';', ' ']).to_string()
}

/// A failure's signature.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Signature {
    /// `scenario@profile`.
    pub system: String,
    /// The failed check.
    pub check: String,
    /// The witness's shape.
    pub shape: String,
}

impl Signature {
    /// The signature of a failure of `check` in `system` with `witness`.
    pub fn of(system: &str, check: &str, witness: &str) -> Signature {
        Signature {
            system: system.to_string(),
            check: check.to_string(),
            shape: shape(witness),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_ids_and_list_lengths_do_not_change_the_shape() {
        let six =
            "product 1: 23 units were taken (0 held, 23 converted) of a stock of 5; taken by \
            reservation 1 (cart 1, 1 units) by #15 shopper-21, reservation 3 (cart 5, 1 units) by \
            #24 shopper-37, reservation 5 (cart 8, 1 units) by #29 shopper-2, reservation 7 (cart \
            9, 1 units) by #31 shopper-39, reservation 9 (cart 4, 1 units) by #22 shopper-17, \
            reservation 11 (cart 10, 1 units) by #34 shopper-28 and 17 more";
        let two = "product 2: 6 units were taken (1 held, 5 converted) of a stock of 5; taken by \
            reservation 4 (cart 2, 1 units) by #7 shopper-3, reservation 8 (cart 6, 1 units) by \
            #12 shopper-30";
        assert_eq!(shape(six), shape(two));
        // The first item keeps its lead-in; the others are repeats of it.
        assert_eq!(
            shape(two),
            "product N: N units were taken (N held, N converted) of a stock of N; taken by \
             reservation N (cart N, N units) by #N NAME"
        );
        let unknown_third = two.replace("by #12 shopper-30", "by an unknown request");
        let unknown_fifth = six.replace("by #22 shopper-17", "by an unknown request");
        assert_eq!(shape(&unknown_third), shape(&unknown_fifth));
        assert_ne!(shape(&unknown_third), shape(two));
        // Another sentence of the same check is another shape.
        assert_ne!(shape(two), shape("stock is -1"));
        assert_eq!(shape("stock is -1"), "stock is N");
        // The sign of a count and the kind of client are not the shape.
        assert_eq!(
            shape("the reserved counter is -15; by #3 payer-2, #4 shopper-1"),
            shape("the reserved counter is 2; by #9 shopper-7")
        );
    }

    #[test]
    fn hashes_times_and_words_with_digits() {
        assert_eq!(
            shape("#12 payer-8 POST /api/v1/orders/{id}/payments status 503 at 121.2 ms"),
            "#N NAME POST /api/vN/orders/{id}/payments status N at N ms"
        );
        assert_eq!(shape("hash 82b2be1fe5a178c9 vs deadbeef00"), "hash H vs H");
        assert_eq!(shape("a  \n b"), "a b");
        assert_eq!(shape("SKU-3 of Category 1"), "NAME of Category N");
        assert_eq!(shape("a-1 b-2x"), "NAME NAME");
    }

    #[test]
    fn shapes_are_bounded() {
        let long = "x".repeat(10_000);
        assert_eq!(shape(&long).chars().count(), SHAPE_CHARS_MAX + 1);
        let list = (0..1000)
            .map(|i| format!("reservation {i} (cart {i}, 1 units)"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(shape(&list), "reservation N (cart N, N units)");
        assert_eq!(truncate_chars("äöü", 2), "äö…");
    }
}
