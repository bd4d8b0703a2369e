//! The patterns health checks match replies with (`expect-body`, `expect`): a small regular
//! expression language over bytes, matched in time linear in the reply (a Pike VM: every thread
//! advances in step, so no pattern can make a check backtrack for ever).
//!
//! Syntax: literal bytes; `.` any byte; `[a-z0-9_]` and `[^...]` classes; `\d \D \w \W \s \S`;
//! `\n \r \t`; `\` before any other punctuation makes it literal; `^` and `$` the start and end
//! of the reply; `(...)` and `(?:...)` groups; `|` alternation; `*`, `+`, `?` repetition. A
//! pattern matches anywhere in the reply unless anchored. Braces must be escaped (`\{`), so that
//! counted repetition can be added later without changing what a pattern means.

use std::fmt;

/// A pattern that compiled, with its source.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    program: Vec<Inst>,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why a pattern was refused, with the byte offset it was found at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at offset {offset}")]
pub struct PatternError {
    pub offset: usize,
    pub reason: &'static str,
}

/// The longest pattern taken: patterns are written by people, and the matcher's cost grows with it.
pub const MAX_PATTERN_LEN: usize = 1024;

type ByteSet = Box<[bool; 256]>;

#[derive(Debug, Clone)]
enum Node {
    Set(ByteSet),
    Start,
    End,
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Star(Box<Node>),
    Plus(Box<Node>),
    Quest(Box<Node>),
}

#[derive(Debug, Clone)]
enum Inst {
    Byte(ByteSet),
    Split(usize, usize),
    Jmp(usize),
    Start,
    End,
    Match,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, PatternError> {
        if source.len() > MAX_PATTERN_LEN {
            return Err(PatternError {
                offset: MAX_PATTERN_LEN,
                reason: "pattern longer than 1024 bytes",
            });
        }
        let mut parser = Parser {
            bytes: source.as_bytes(),
            pos: 0,
            depth: 0,
        };
        let node = parser.alternation()?;
        if parser.pos < parser.bytes.len() {
            return Err(parser.error("unmatched )"));
        }
        let mut program = Vec::new();
        compile(&node, &mut program);
        program.push(Inst::Match);
        Ok(Pattern {
            source: source.to_string(),
            program,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches somewhere in `text`.
    pub fn is_match(&self, text: &[u8]) -> bool {
        let n = self.program.len();
        let mut current = Threads::new(n);
        let mut next = Threads::new(n);
        for pos in 0..=text.len() {
            // A new thread starts at every position: the search is unanchored.
            if self.add(&mut current, 0, pos, text.len()) {
                return true;
            }
            let Some(&byte) = text.get(pos) else {
                break;
            };
            next.clear();
            for i in 0..current.len {
                let pc = current.dense[i];
                if let Inst::Byte(set) = &self.program[pc] {
                    if set[usize::from(byte)] && self.add(&mut next, pc + 1, pos + 1, text.len()) {
                        return true;
                    }
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        false
    }

    /// Adds the thread at `pc` and every thread its empty moves reach; true when one matches.
    fn add(&self, threads: &mut Threads, pc: usize, pos: usize, len: usize) -> bool {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if !threads.insert(pc) {
                continue;
            }
            match &self.program[pc] {
                Inst::Match => return true,
                Inst::Jmp(to) => stack.push(*to),
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::Start if pos == 0 => stack.push(pc + 1),
                Inst::End if pos == len => stack.push(pc + 1),
                Inst::Start | Inst::End | Inst::Byte(_) => {}
            }
        }
        false
    }
}

/// A sparse set of program counters: clearing is O(1), so a step costs the live threads only.
struct Threads {
    dense: Vec<usize>,
    sparse: Vec<usize>,
    len: usize,
}

impl Threads {
    fn new(n: usize) -> Threads {
        Threads {
            dense: vec![0; n],
            sparse: vec![0; n],
            len: 0,
        }
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn insert(&mut self, pc: usize) -> bool {
        let i = self.sparse[pc];
        if i < self.len && self.dense[i] == pc {
            return false;
        }
        self.dense[self.len] = pc;
        self.sparse[pc] = self.len;
        self.len += 1;
        true
    }
}

fn compile(node: &Node, out: &mut Vec<Inst>) {
    match node {
        Node::Set(set) => out.push(Inst::Byte(set.clone())),
        Node::Start => out.push(Inst::Start),
        Node::End => out.push(Inst::End),
        Node::Concat(nodes) => nodes.iter().for_each(|n| compile(n, out)),
        Node::Alt(branches) => {
            // split b1, next; b1; jmp end; split b2, next; b2; jmp end; ...; bn
            let mut jumps = Vec::new();
            for (i, branch) in branches.iter().enumerate() {
                let last = i + 1 == branches.len();
                let split = out.len();
                if !last {
                    out.push(Inst::Split(split + 1, 0));
                }
                compile(branch, out);
                if !last {
                    jumps.push(out.len());
                    out.push(Inst::Jmp(0));
                    let next = out.len();
                    out[split] = Inst::Split(split + 1, next);
                }
            }
            let end = out.len();
            for j in jumps {
                out[j] = Inst::Jmp(end);
            }
        }
        Node::Star(inner) => {
            let split = out.len();
            out.push(Inst::Split(split + 1, 0));
            compile(inner, out);
            out.push(Inst::Jmp(split));
            let end = out.len();
            out[split] = Inst::Split(split + 1, end);
        }
        Node::Plus(inner) => {
            let start = out.len();
            compile(inner, out);
            let after = out.len() + 1;
            out.push(Inst::Split(start, after));
        }
        Node::Quest(inner) => {
            let split = out.len();
            out.push(Inst::Split(split + 1, 0));
            compile(inner, out);
            let end = out.len();
            out[split] = Inst::Split(split + 1, end);
        }
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

/// Groups nested deeper than this are refused: the parser and compiler recurse.
const MAX_DEPTH: usize = 32;

impl Parser<'_> {
    fn error(&self, reason: &'static str) -> PatternError {
        PatternError {
            offset: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn alternation(&mut self) -> Result<Node, PatternError> {
        let mut branches = vec![self.concat()?];
        while self.peek() == Some(b'|') {
            self.pos += 1;
            branches.push(self.concat()?);
        }
        Ok(if branches.len() == 1 {
            branches.swap_remove(0)
        } else {
            Node::Alt(branches)
        })
    }

    fn concat(&mut self) -> Result<Node, PatternError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == b'|' || c == b')' {
                break;
            }
            let atom = self.atom()?;
            let item = match self.peek() {
                Some(q @ (b'*' | b'+' | b'?')) => {
                    if matches!(atom, Node::Start | Node::End) {
                        return Err(self.error("repetition of an anchor"));
                    }
                    self.pos += 1;
                    if matches!(self.peek(), Some(b'*' | b'+' | b'?')) {
                        return Err(self.error("repetition of a repetition"));
                    }
                    let inner = Box::new(atom);
                    match q {
                        b'*' => Node::Star(inner),
                        b'+' => Node::Plus(inner),
                        _ => Node::Quest(inner),
                    }
                }
                _ => atom,
            };
            items.push(item);
        }
        Ok(Node::Concat(items))
    }

    fn atom(&mut self) -> Result<Node, PatternError> {
        let Some(c) = self.peek() else {
            return Err(self.error("pattern ends early"));
        };
        self.pos += 1;
        match c {
            b'.' => Ok(Node::Set(Box::new([true; 256]))),
            b'^' => Ok(Node::Start),
            b'$' => Ok(Node::End),
            b'*' | b'+' | b'?' => {
                self.pos -= 1;
                Err(self.error("repetition of nothing"))
            }
            b'{' | b'}' => {
                self.pos -= 1;
                Err(self.error("braces must be escaped (\\{ \\})"))
            }
            b'(' => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(self.error("groups nested too deep"));
                }
                if self.bytes[self.pos..].starts_with(b"?:") {
                    self.pos += 2;
                }
                let inner = self.alternation()?;
                if self.peek() != Some(b')') {
                    return Err(self.error("unclosed ("));
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(inner)
            }
            b'[' => self.class(),
            b'\\' => self.escape(false).map(Node::Set),
            _ => Ok(Node::Set(single(c))),
        }
    }

    /// After a backslash; `in_class` allows `-` and `]` to be escaped too.
    fn escape(&mut self, in_class: bool) -> Result<ByteSet, PatternError> {
        let Some(c) = self.peek() else {
            return Err(self.error("pattern ends after \\"));
        };
        self.pos += 1;
        let set = match c {
            b'd' => predicate(|b| b.is_ascii_digit()),
            b'D' => predicate(|b| !b.is_ascii_digit()),
            b'w' => predicate(is_word),
            b'W' => predicate(|b| !is_word(b)),
            b's' => predicate(|b| b.is_ascii_whitespace()),
            b'S' => predicate(|b| !b.is_ascii_whitespace()),
            b'n' => single(b'\n'),
            b'r' => single(b'\r'),
            b't' => single(b'\t'),
            c if c.is_ascii_punctuation() || (in_class && c == b'-') => single(c),
            _ => {
                self.pos -= 1;
                return Err(self.error("unknown escape"));
            }
        };
        Ok(set)
    }

    fn class(&mut self) -> Result<Node, PatternError> {
        let negated = self.peek() == Some(b'^');
        if negated {
            self.pos += 1;
        }
        let mut set = Box::new([false; 256]);
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("unclosed ["));
            };
            if c == b']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            self.pos += 1;
            let low = if c == b'\\' {
                let escaped = self.escape(true)?;
                match only(&escaped) {
                    Some(b) => b,
                    None => {
                        merge(&mut set, &escaped);
                        continue;
                    }
                }
            } else {
                c
            };
            let is_range =
                self.peek() == Some(b'-') && self.bytes.get(self.pos + 1).is_some_and(|&n| n != b']');
            if !is_range {
                set[usize::from(low)] = true;
                continue;
            }
            self.pos += 1;
            let Some(mut high) = self.peek() else {
                return Err(self.error("unclosed ["));
            };
            self.pos += 1;
            if high == b'\\' {
                let escaped = self.escape(true)?;
                high = only(&escaped).ok_or_else(|| self.error("a class cannot end a range"))?;
            }
            if high < low {
                return Err(self.error("range out of order"));
            }
            for b in low..=high {
                set[usize::from(b)] = true;
            }
        }
        if negated {
            set.iter_mut().for_each(|b| *b = !*b);
        }
        Ok(Node::Set(set))
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn single(c: u8) -> ByteSet {
    let mut set = Box::new([false; 256]);
    set[usize::from(c)] = true;
    set
}

fn predicate(f: impl Fn(u8) -> bool) -> ByteSet {
    let mut set = Box::new([false; 256]);
    for b in 0..=255u8 {
        set[usize::from(b)] = f(b);
    }
    set
}

/// The one byte a set holds, if it holds exactly one.
fn only(set: &[bool; 256]) -> Option<u8> {
    let mut members = (0..=255u8).filter(|&b| set[usize::from(b)]);
    let first = members.next()?;
    members.next().is_none().then_some(first)
}

fn merge(into: &mut [bool; 256], from: &[bool; 256]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a |= *b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, text: &str) -> bool {
        Pattern::new(p).unwrap().is_match(text.as_bytes())
    }

    #[test]
    fn literals_match_anywhere_unless_anchored() {
        assert!(m("ok", "status: ok\n"));
        assert!(!m("ok", "status: OK"));
        assert!(m("^status", "status: ok"));
        assert!(!m("^ok", "status: ok"));
        assert!(m("ok$", "status: ok"));
        assert!(!m("ok$", "status: ok\n"));
        assert!(m("", "anything"));
        assert!(m("^$", ""));
        assert!(!m("^$", "x"));
    }

    #[test]
    fn classes_repetition_groups_and_alternation() {
        assert!(m(r#""status":\s*"(up|ok)""#, r#"{"status": "ok"}"#));
        assert!(!m(r#""status":\s*"(up|ok)""#, r#"{"status": "down"}"#));
        assert!(m("^[a-c]+x?$", "abcab"));
        assert!(!m("^[a-c]+x?$", "abcd"));
        assert!(m("^[^0-9]*$", "no digits"));
        assert!(!m("^[^0-9]*$", "one 1"));
        assert!(m(r"^\d\d\d \w+$", "200 OK_1"));
        assert!(m("^a(?:bc)*d$", "abcbcd") && m("^a(?:bc)*d$", "ad") && !m("^a(?:bc)*d$", "abd"));
        assert!(m("^(a|b|)c$", "c") && m("^(a|b|)c$", "bc"));
        assert!(m(r"\{\}\.", "x{}.") && !m(r"\.", "x"));
        assert!(m("[-a]", "-") && m(r"[\]x]", "]") && m("[]a]", "]"));
        assert!(m("^.$", "\n"));
        // Empty loops end: the thread set stops them.
        assert!(m("^(a*)*b$", "aaab") && !m("^(a*)*b$", "aaac"));
    }

    #[test]
    fn a_pathological_pattern_takes_linear_time() {
        let text = "a".repeat(20_000);
        let p = Pattern::new("^(a|a)*(a|a)*(a|a)*b$").unwrap();
        let started = std::time::Instant::now();
        assert!(!p.is_match(text.as_bytes()));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_offset() {
        let e = |p: &str| Pattern::new(p).unwrap_err().to_string();
        assert_eq!(e("(ab"), "unclosed ( at offset 3");
        assert_eq!(e("ab)"), "unmatched ) at offset 2");
        assert_eq!(e("*a"), "repetition of nothing at offset 0");
        assert_eq!(e("a**"), "repetition of a repetition at offset 2");
        assert_eq!(e("^*"), "repetition of an anchor at offset 1");
        assert_eq!(e("[abc"), "unclosed [ at offset 4");
        assert_eq!(e("[z-a]"), "range out of order at offset 4");
        assert_eq!(e(r"\q"), "unknown escape at offset 1");
        assert_eq!(e("a\\"), "pattern ends after \\ at offset 2");
        assert_eq!(e("a{2}"), "braces must be escaped (\\{ \\}) at offset 1");
        assert_eq!(e(&"(".repeat(40)), "groups nested too deep at offset 33");
        assert_eq!(
            e(&"a".repeat(1025)),
            "pattern longer than 1024 bytes at offset 1024"
        );
    }
}
