//! Regular expressions that state the text rules of the domain types, for the OpenAPI
//! document and for the checks that must agree with it.
//!
//! Every pattern here is written in the subset that ECMA-262 (with the `u` flag, as JSON
//! Schema 2020-12 reads `pattern`), Python's `re` and Rust's `regex` read alike: `^`/`$`
//! anchors, `(?:…)`, `{m,n}`, and character classes of `\uXXXX` escapes. Lengths are counted
//! in code points, as JSON Schema's `maxLength` and Rust's `chars().count()` count them.

/// The characters `str::trim` removes (`char::is_whitespace`: Unicode White_Space), as the
/// body of a character class.
pub const WHITE_SPACE: &str =
    r"\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// The characters `char::is_control` is true of (Unicode Cc), as the body of a character class.
pub const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";

/// Neither white space nor control (the body of a negated class): what a trimmed text of
/// visible characters starts and ends with.
const WHITE_SPACE_OR_CONTROL: &str =
    r"\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// Texts that, once `str::trim`med, are `min` (0 or 1) to `max` (at least 1) characters long
/// and hold no control character. White space of any length may surround them; control
/// characters that are white space (tab, line feeds) may stand only there.
pub fn trimmed_text_pattern(min: usize, max: usize) -> String {
    assert!(min <= 1 && max >= 1, "trimmed_text_pattern({min}, {max})");
    let edge = format!("[^{WHITE_SPACE_OR_CONTROL}]");
    let core = if max == 1 {
        edge
    } else {
        format!("{edge}(?:[^{CONTROL}]{{0,{}}}{edge})?", max - 2)
    };
    let core = if min == 0 {
        format!("(?:{core})?")
    } else {
        core
    };
    format!("^[{WHITE_SPACE}]*{core}[{WHITE_SPACE}]*$")
}

#[cfg(test)]
pub(crate) mod tests {
    use regex::Regex;

    use super::*;

    /// Every character up to U+FFFF and a sample above: all white space and control
    /// characters are below U+3001.
    pub(crate) fn sample_chars() -> impl Iterator<Item = char> {
        (0..=0xFFFF_u32)
            .chain((0x10000..=0x10FFFF).step_by(4099))
            .chain([0x10FFFF])
            .filter_map(char::from_u32)
    }

    #[test]
    fn the_classes_are_the_ones_rust_uses() {
        let white = Regex::new(&format!("^[{WHITE_SPACE}]$")).unwrap();
        let control = Regex::new(&format!("^[{CONTROL}]$")).unwrap();
        let neither = Regex::new(&format!("^[^{WHITE_SPACE_OR_CONTROL}]$")).unwrap();
        let mut buf = [0; 4];
        for c in sample_chars() {
            let s = c.encode_utf8(&mut buf);
            assert_eq!(white.is_match(s), c.is_whitespace(), "{c:?}");
            assert_eq!(control.is_match(s), c.is_control(), "{c:?}");
            assert_eq!(
                neither.is_match(s),
                !c.is_whitespace() && !c.is_control(),
                "{c:?}"
            );
        }
    }

    /// The rule `trimmed_text_pattern` states, written plainly.
    fn rule(s: &str, min: usize, max: usize) -> bool {
        let t = s.trim();
        (min..=max).contains(&t.chars().count()) && !t.chars().any(char::is_control)
    }

    #[test]
    fn trimmed_text_pattern_states_the_rule() {
        for (min, max) in [(0, 1), (1, 1), (0, 3), (1, 3), (1, 30)] {
            let pattern = Regex::new(&trimmed_text_pattern(min, max)).unwrap();
            let check = |t: &str| {
                assert_eq!(pattern.is_match(t), rule(t, min, max), "{min}..{max} {t:?}");
            };
            for n in 0..=max + 2 {
                for fill in ["x", " ", "\t", "\u{85}", "é", "\u{3000}", "\u{1F600}"] {
                    check(&fill.repeat(n));
                    check(&format!("\t{}\n", fill.repeat(n)));
                    check(&format!("y{}y", fill.repeat(n.saturating_sub(2))));
                    check(&format!(" y{} ", fill.repeat(n.saturating_sub(1))));
                }
            }
            if (min, max) != (0, 3) && (min, max) != (1, 30) {
                continue;
            }
            for c in sample_chars() {
                check(&c.to_string());
                check(&format!("a{c}"));
                check(&format!("{c}a"));
                check(&format!("a{c}b"));
                check(&format!("{c}ab{c}"));
                check(&format!(" {c} "));
            }
        }
    }
}
