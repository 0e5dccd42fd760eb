//! Shell-style globs for names and tag values: `*` any run, `?` one character.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A case-sensitive glob where `*` matches any run of characters (including none),
/// `?` exactly one character, and everything else itself. Compiled once, when the policy
/// is parsed: the common shapes (a literal, `prefix*`, `*suffix`, `*`) match without
/// walking the pattern, because a plan tests every image against every rule's globs.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    chars: Vec<char>,
    shape: Shape,
}

/// What a pattern reduces to, decided at compile time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No wildcard: the text must equal the pattern.
    Literal,
    /// Only `*`s: everything matches.
    Any,
    /// Wildcard-free text followed by `*`s.
    Prefix(usize),
    /// `*`s followed by wildcard-free text starting at this byte.
    Suffix(usize),
    /// Wildcard-free text between `*`s, from this byte to that.
    Contains(usize, usize),
    /// Anything else: the general matcher.
    General,
}

impl Shape {
    fn of(p: &str) -> Self {
        let wild = |c: char| c == '*' || c == '?';
        if !p.contains(wild) {
            return Self::Literal;
        }
        if p.contains('?') {
            return Self::General;
        }
        let body = p.trim_matches('*');
        if body.is_empty() {
            Self::Any
        } else if body.contains('*') {
            Self::General
        } else if p.starts_with(body) {
            Self::Prefix(body.len())
        } else if p.ends_with(body) {
            Self::Suffix(p.len() - body.len())
        } else {
            let start = p.len() - p.trim_start_matches('*').len();
            Self::Contains(start, start + body.len())
        }
    }
}

impl Glob {
    /// Compiles a pattern; every string is a valid glob.
    pub fn new(pattern: &str) -> Self {
        Self {
            source: pattern.to_string(),
            chars: pattern.chars().collect(),
            shape: Shape::of(pattern),
        }
    }

    /// The text before the first wildcard (the whole pattern when it has none).
    pub fn literal_prefix(&self) -> &str {
        let end = self.source.find(['*', '?']).unwrap_or(self.source.len());
        &self.source[..end]
    }

    /// The text after the last wildcard (the whole pattern when it has none).
    pub fn literal_suffix(&self) -> &str {
        let start = self.source.rfind(['*', '?']).map_or(0, |i| i + 1);
        &self.source[start..]
    }

    /// Whether every string this glob matches, `other` matches too, judged on the
    /// patterns alone and conservatively (`false` when unsure): equal patterns, `*`, a
    /// `prefix*` or `*suffix` whose literal part `other`'s own literal prefix or suffix
    /// carries, or a literal `other` this glob matches.
    pub fn includes(&self, other: &Glob) -> bool {
        if self.source == other.source || self.shape == Shape::Any {
            return true;
        }
        if other.shape == Shape::Literal {
            return self.matches(&other.source);
        }
        match self.shape {
            Shape::Prefix(n) => other.literal_prefix().starts_with(&self.source[..n]),
            Shape::Suffix(n) => other.literal_suffix().ends_with(&self.source[n..]),
            _ => false,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `text` matches the pattern.
    pub fn matches(&self, text: &str) -> bool {
        let p = self.source.as_str();
        match self.shape {
            Shape::Literal => return text == p,
            Shape::Any => return true,
            Shape::Prefix(n) => return text.starts_with(&p[..n]),
            Shape::Suffix(n) => return text.ends_with(&p[n..]),
            Shape::Contains(a, b) => return text.contains(&p[a..b]),
            Shape::General => {}
        }
        if text.is_ascii() && p.is_ascii() {
            return general(p.as_bytes(), text.as_bytes());
        }
        let t: Vec<char> = text.chars().collect();
        general(&self.chars, &t)
    }
}

/// The general matcher over bytes (ASCII) or characters.
fn general<T: Copy + PartialEq + From<u8>>(p: &[T], t: &[T]) -> bool {
    let (star_c, any_c) = (T::from(b'*'), T::from(b'?'));
    // Iterative matcher with single-star backtracking: linear in practice,
    // O(n·m) worst case, no recursion.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == any_c || (p[pi] != star_c && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == star_c {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == star_c)
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Glob::new(&s))
    }
}

impl Serialize for Glob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl JsonSchema for Glob {
    fn schema_name() -> Cow<'static, str> {
        "Glob".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Case-sensitive glob: `*` matches any run of characters, `?` one character, everything else is literal."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn literal_star_and_question_mark() {
        let cases = [
            ("web-*", "web-1", true),
            ("web-*", "web-", true),
            ("web-*", "web", false),
            ("web-*", "Web-1", false),
            ("api-?-*", "api-a-2026", true),
            ("api-?-*", "api--2026", false),
            ("api-?-*", "api-ab-2026", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*-prod", "web-prod", true),
            ("*-prod", "web-prod-2", false),
            ("[abc]", "[abc]", true),
            ("[abc]", "a", false),
            ("a.b", "axb", false),
            ("??", "é1", true),
            ("**x", "x", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    #[test]
    fn the_compiled_shapes_agree_with_the_general_matcher() {
        let patterns = [
            "", "*", "**", "web", "web-*", "web-**", "*-prod", "**-prod", "*web*", "w?b*", "a*b",
            "é*", "*é",
        ];
        let texts = [
            "", "web", "web-", "web-1", "x-prod", "-prod", "aweb", "ab", "éa", "aé",
        ];
        for p in patterns {
            let g = Glob::new(p);
            let chars: Vec<char> = p.chars().collect();
            for t in texts {
                let tc: Vec<char> = t.chars().collect();
                assert_eq!(g.matches(t), super::general(&chars, &tc), "{p:?} vs {t:?}");
            }
        }
    }

    #[test]
    fn inclusion_is_judged_conservatively_on_the_patterns() {
        let yes = [
            ("*", "web-*"),
            ("web-*", "web-*"),
            ("web-*", "web-prod-*"),
            ("web-*", "web-1"),
            ("*-prod", "web-*-prod"),
            ("w?b", "web"),
        ];
        for (a, b) in yes {
            assert!(Glob::new(a).includes(&Glob::new(b)), "{a} includes {b}");
        }
        let no = [
            ("web-*", "we*"),
            ("web-*", "*"),
            ("*-prod", "*-prod-1"),
            ("web", "web-*"),
            ("*web*", "web-*"),
        ];
        for (a, b) in no {
            assert!(
                !Glob::new(a).includes(&Glob::new(b)),
                "{a} does not include {b}"
            );
        }
    }
}
