//! Git attributes as a checkout reads them: the `.gitattributes` files of
//! the tree being checked out, `info/attributes`, the global and the system
//! attributes file, with git's precedence, macros (`binary`, `[attr]`) and
//! pattern rules (see gitattributes(5)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The state of one attribute for a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// `name`
    Set,
    /// `-name`
    Unset,
    /// `name=value`
    Value(Vec<u8>),
    /// `!name` (as if never mentioned).
    Unspecified,
}

/// One line of an attributes file: a pattern and what it assigns.
#[derive(Debug)]
struct Rule {
    pattern: Vec<u8>,
    /// The pattern has no `/`: it matches the base name at any depth.
    basename_only: bool,
    assigns: Vec<(Vec<u8>, State)>,
}

/// The attribute rules that apply to a tree.
#[derive(Debug, Default)]
pub(crate) struct Attributes {
    /// `.gitattributes` of each directory (`""` for the root, else `a/b/`).
    dirs: HashMap<Vec<u8>, Vec<Rule>>,
    /// `info/attributes` (highest precedence).
    info: Vec<Rule>,
    /// The global (`core.attributesFile`) then the system file (lowest).
    fallback: Vec<Vec<Rule>>,
    macros: HashMap<Vec<u8>, Vec<(Vec<u8>, State)>>,
}

impl Attributes {
    /// Reads the attribute sources: `tree_files` are the `.gitattributes`
    /// files of the tree with their directory (`""` or `a/b/`) and content.
    pub(crate) fn new(
        common_dir: &Path,
        attributes_file: Option<PathBuf>,
        tree_files: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Self {
        let mut this = Self::default();
        this.macros.insert(
            b"binary".to_vec(),
            vec![
                (b"diff".to_vec(), State::Unset),
                (b"merge".to_vec(), State::Unset),
                (b"text".to_vec(), State::Unset),
            ],
        );
        let read = |path: &Path| std::fs::read(path).unwrap_or_default();
        // Macros may be defined only at the top: system, global, root, info.
        if std::env::var_os("GIT_ATTR_NOSYSTEM").is_none() {
            let rules = this.parse(&read(Path::new("/etc/gitattributes")), true);
            this.fallback.push(rules);
        }
        if let Some(global) = attributes_file {
            let rules = this.parse(&read(&global), true);
            this.fallback.insert(0, rules);
        }
        let mut tree_files = tree_files;
        tree_files.sort_by(|a, b| a.0.cmp(&b.0));
        for (dir, content) in tree_files {
            let rules = this.parse(&content, dir.is_empty());
            this.dirs.insert(dir, rules);
        }
        let info = read(&common_dir.join("info").join("attributes"));
        this.info = this.parse(&info, true);
        this
    }

    /// Whether no file of any source assigns anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.info.is_empty()
            && self.dirs.values().all(Vec::is_empty)
            && self.fallback.iter().all(Vec::is_empty)
    }

    fn parse(&mut self, content: &[u8], top: bool) -> Vec<Rule> {
        let mut rules = Vec::new();
        for line in content.split(|&b| b == b'\n') {
            let line = trim_start(line);
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let (pattern, rest) = if line[0] == b'"' {
                match unquote(line) {
                    Some(split) => split,
                    None => continue,
                }
            } else {
                let end = line.iter().position(|b| is_blank(*b)).unwrap_or(line.len());
                (line[..end].to_vec(), &line[end..])
            };
            let assigns: Vec<(Vec<u8>, State)> = rest
                .split(|b| is_blank(*b))
                .filter(|t| !t.is_empty())
                .map(|token| match token {
                    [b'-', name @ ..] => (name.to_vec(), State::Unset),
                    [b'!', name @ ..] => (name.to_vec(), State::Unspecified),
                    _ => match token.iter().position(|&b| b == b'=') {
                        Some(eq) => (token[..eq].to_vec(), State::Value(token[eq + 1..].to_vec())),
                        None => (token.to_vec(), State::Set),
                    },
                })
                .collect();
            if let Some(name) = pattern.strip_prefix(b"[attr]") {
                if top {
                    self.macros.insert(name.to_vec(), assigns);
                }
                continue;
            }
            // Negative patterns are refused by git; patterns that only
            // match directories never match a file.
            if pattern.first() == Some(&b'!') || pattern.last() == Some(&b'/') {
                continue;
            }
            let basename_only = !pattern.contains(&b'/');
            let pattern = pattern.strip_prefix(b"/").unwrap_or(&pattern).to_vec();
            rules.push(Rule {
                pattern,
                basename_only,
                assigns,
            });
        }
        rules
    }

    /// The states of `names` for the file `path` (relative to the root), in
    /// the order of `names`; `Unspecified` for those no rule assigns.
    pub(crate) fn lookup<const N: usize>(&self, path: &[u8], names: [&[u8]; N]) -> [State; N] {
        let mut out: [Option<State>; N] = std::array::from_fn(|_| None);
        let mut left = N;
        let base_start = path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |slash| slash + 1);
        let basename = &path[base_start..];
        let mut fill = |rules: &[Rule], dir_len: usize, left: &mut usize| {
            for rule in rules.iter().rev() {
                if *left == 0 {
                    return;
                }
                let hit = if rule.basename_only {
                    wildmatch(&rule.pattern, basename, false)
                } else {
                    wildmatch(&rule.pattern, &path[dir_len..], true)
                };
                if hit {
                    self.fill_one(&rule.assigns, &names, &mut out, left, 0);
                }
            }
        };
        fill(&self.info, 0, &mut left);
        // The deepest directory first.
        let mut ends: Vec<usize> = path
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| i + 1)
            .collect();
        ends.push(0);
        ends.sort_unstable_by(|a, b| b.cmp(a));
        for end in ends {
            if let Some(rules) = self.dirs.get(&path[..end]) {
                fill(rules, end, &mut left);
            }
        }
        for rules in &self.fallback {
            fill(rules, 0, &mut left);
        }
        out.map(|state| state.unwrap_or(State::Unspecified))
    }

    /// Assigns `assigns` (last one first) to the still unassigned `names`,
    /// expanding set macros as git does.
    fn fill_one<const N: usize>(
        &self,
        assigns: &[(Vec<u8>, State)],
        names: &[&[u8]; N],
        out: &mut [Option<State>; N],
        left: &mut usize,
        depth: usize,
    ) {
        for (name, state) in assigns.iter().rev() {
            if let Some(i) = names.iter().position(|n| *n == name.as_slice())
                && out[i].is_none()
            {
                out[i] = Some(state.clone());
                *left -= 1;
            }
            // A macro's own assignment is tracked by git as well: a later
            // (more specific) rule naming the macro shadows it. Macros are
            // not among the looked-up names here, so expand whenever set.
            if *state == State::Set
                && depth < 8
                && let Some(expansion) = self.macros.get(name)
            {
                self.fill_one(expansion, names, out, left, depth + 1);
            }
        }
    }
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_start(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !is_blank(*b))
        .unwrap_or(line.len());
    &line[start..]
}

/// A C-style quoted pattern at the start of `line`: the pattern and the
/// rest of the line.
fn unquote(line: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 1;
    while i < line.len() {
        match line[i] {
            b'"' => return Some((out, &line[i + 1..])),
            b'\\' => {
                let c = *line.get(i + 1)?;
                i += 2;
                match c {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'r' => out.push(b'\r'),
                    b'v' => out.push(11),
                    b'0'..=b'3' => {
                        let digits = line.get(i - 1..i + 2)?;
                        let mut value = 0u32;
                        for d in digits {
                            if !(b'0'..=b'7').contains(d) {
                                return None;
                            }
                            value = value * 8 + u32::from(d - b'0');
                        }
                        out.push(u8::try_from(value).ok()?);
                        i += 2;
                    }
                    other => out.push(other),
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    None
}

/// Git's wildmatch: `?`, `*`, `[...]` classes and `\` escapes; with
/// `pathname`, wildcards do not match `/` except a `**` that is a whole
/// path component.
pub(crate) fn wildmatch(pattern: &[u8], text: &[u8], pathname: bool) -> bool {
    let (mut p, mut t) = (0, 0);
    while p < pattern.len() {
        match pattern[p] {
            b'*' => {
                let start = p;
                while p < pattern.len() && pattern[p] == b'*' {
                    p += 1;
                }
                let rest = &pattern[p..];
                let whole_component = p - start >= 2
                    && (start == 0 || pattern[start - 1] == b'/')
                    && (rest.is_empty() || rest[0] == b'/');
                if !pathname || whole_component {
                    if rest.is_empty() {
                        return true;
                    }
                    if pathname {
                        // `**/`: zero or more whole directories.
                        let after = &rest[1..];
                        return (t..=text.len())
                            .filter(|&k| k == t || text[k - 1] == b'/')
                            .any(|k| wildmatch(after, &text[k..], true));
                    }
                    return (t..=text.len()).any(|k| wildmatch(rest, &text[k..], false));
                }
                for k in t..=text.len() {
                    if wildmatch(rest, &text[k..], true) {
                        return true;
                    }
                    if k < text.len() && text[k] == b'/' {
                        return false;
                    }
                }
                return false;
            }
            b'?' => {
                if t >= text.len() || (pathname && text[t] == b'/') {
                    return false;
                }
                p += 1;
                t += 1;
            }
            b'[' => {
                if t >= text.len() || (pathname && text[t] == b'/') {
                    return false;
                }
                match class(&pattern[p..], text[t]) {
                    Some((matched, len)) => {
                        if !matched {
                            return false;
                        }
                        p += len;
                        t += 1;
                    }
                    // An unterminated class never matches (as in git).
                    None => return false,
                }
            }
            b'\\' if p + 1 < pattern.len() => {
                if t >= text.len() || text[t] != pattern[p + 1] {
                    return false;
                }
                p += 2;
                t += 1;
            }
            c => {
                if t >= text.len() || text[t] != c {
                    return false;
                }
                p += 1;
                t += 1;
            }
        }
    }
    t == text.len()
}

/// Matches `c` against the class at the start of `pattern` (`[...]`):
/// whether it matched and the class's length.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let b = *pattern.get(i)?;
        if b == b']' && !first {
            break;
        }
        first = false;
        if b == b'[' && pattern.get(i + 1) == Some(&b':') {
            let end = pattern[i + 2..].windows(2).position(|w| w == b":]")?;
            let name = &pattern[i + 2..i + 2 + end];
            matched |= match name {
                b"alnum" => c.is_ascii_alphanumeric(),
                b"alpha" => c.is_ascii_alphabetic(),
                b"blank" => c == b' ' || c == b'\t',
                b"cntrl" => c.is_ascii_control(),
                b"digit" => c.is_ascii_digit(),
                b"graph" => c.is_ascii_graphic(),
                b"lower" => c.is_ascii_lowercase(),
                b"print" => c.is_ascii_graphic() || c == b' ',
                b"punct" => c.is_ascii_punctuation(),
                b"space" => c.is_ascii_whitespace() || c == 11,
                b"upper" => c.is_ascii_uppercase(),
                b"xdigit" => c.is_ascii_hexdigit(),
                _ => return Some((false, pattern.len())),
            };
            i += 2 + end + 2;
            continue;
        }
        let (low, next) = if b == b'\\' {
            (*pattern.get(i + 1)?, i + 2)
        } else {
            (b, i + 1)
        };
        if pattern.get(next) == Some(&b'-') && pattern.get(next + 1).is_some_and(|&e| e != b']') {
            let mut high = pattern[next + 1];
            let mut after = next + 2;
            if high == b'\\' {
                high = *pattern.get(next + 2)?;
                after += 1;
            }
            matched |= (low..=high).contains(&c);
            i = after;
        } else {
            matched |= low == c;
            i = next;
        }
    }
    Some((matched != negated, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildmatch_follows_git() {
        assert!(wildmatch(b"*.txt", b"a.txt", false));
        assert!(!wildmatch(b"*.txt", b"a.txd", false));
        assert!(wildmatch(b"docs/*.md", b"docs/a.md", true));
        assert!(!wildmatch(b"docs/*.md", b"docs/x/a.md", true));
        assert!(wildmatch(b"docs/**/*.md", b"docs/a.md", true));
        assert!(wildmatch(b"docs/**/*.md", b"docs/x/y/a.md", true));
        assert!(wildmatch(b"**/foo", b"a/b/foo", true));
        assert!(wildmatch(b"**/foo", b"foo", true));
        assert!(wildmatch(b"a/**", b"a/b/c", true));
        assert!(wildmatch(b"[a-c]?.[!x]", b"bq.y", false));
        assert!(!wildmatch(b"[a-c]?.[!x]", b"bq.x", false));
        assert!(wildmatch(b"[[:digit:]]x", b"7x", false));
        assert!(wildmatch(b"\\*x", b"*x", false));
        assert!(!wildmatch(b"\\*x", b"ax", false));
    }

    #[test]
    fn precedence_and_macros() {
        let attrs = Attributes::new(
            Path::new("/nonexistent"),
            None,
            vec![
                (
                    b"".to_vec(),
                    b"[attr]mine text eol=crlf\n* text=auto\n*.bin binary\n*.m mine\n".to_vec(),
                ),
                (b"sub/".to_vec(), b"*.txt -text\n/top.m eol=lf\n".to_vec()),
            ],
        );
        let names: [&[u8]; 2] = [b"text", b"eol"];
        assert_eq!(
            attrs.lookup(b"a.txt", names),
            [State::Value(b"auto".to_vec()), State::Unspecified]
        );
        assert_eq!(attrs.lookup(b"sub/a.txt", names)[0], State::Unset);
        assert_eq!(attrs.lookup(b"x/a.bin", names)[0], State::Unset);
        assert_eq!(
            attrs.lookup(b"a.m", names),
            [State::Set, State::Value(b"crlf".to_vec())]
        );
        assert_eq!(
            attrs.lookup(b"sub/top.m", names),
            [State::Set, State::Value(b"lf".to_vec())]
        );
    }
}
