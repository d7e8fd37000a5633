//! Host ranges of `processList@list`: `[0-100;2]^[10,20]`.
//!
//! Grammar: a set, then any number of exclusion sets each after `^`.
//! A set is `[item, item, …]`; an item is `n`, `a-b` or `a-b;step`.
//! The result keeps the order of the set and drops duplicates.

/// The most hosts one range may name: a typo like `[1-1000000000]` must
/// not exhaust memory.
pub(crate) const MAX_HOSTS: usize = 1_000_000;

/// A problem in a range, with the byte offset (in the range text) where it is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RangeError {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

/// The numbers a range names.
pub(crate) fn parse(text: &str) -> Result<Vec<u64>, RangeError> {
    let mut parser = Parser { text, pos: 0 };
    let mut included = parser.set()?;
    let mut excluded = Vec::new();
    loop {
        parser.skip_ws();
        match parser.peek() {
            None => break,
            Some(b'^') => {
                parser.pos += 1;
                excluded.extend(parser.set()?);
            }
            Some(_) => return Err(parser.error("expected `^[…]` or the end of the range")),
        }
    }
    let mut seen = std::collections::HashSet::new();
    let excluded: std::collections::HashSet<u64> = excluded.into_iter().collect();
    included.retain(|n| !excluded.contains(n) && seen.insert(*n));
    if included.is_empty() {
        return Err(RangeError {
            offset: 0,
            message: "the range names no host".into(),
        });
    }
    Ok(included)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn error(&self, message: &str) -> RangeError {
        RangeError {
            offset: self.pos.min(self.text.len()),
            message: message.into(),
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), RangeError> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn number(&mut self) -> Result<u64, RangeError> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if start == self.pos {
            self.pos = start;
            return Err(self.error("expected a number"));
        }
        self.text[start..self.pos].parse().map_err(|_| RangeError {
            offset: start,
            message: "number too large".into(),
        })
    }

    fn set(&mut self) -> Result<Vec<u64>, RangeError> {
        self.expect(b'[', "expected `[` to open a range such as [1-10]")?;
        let mut out = Vec::new();
        loop {
            let item_at = self.pos;
            let from = self.number()?;
            self.skip_ws();
            let (to, step) = if self.peek() == Some(b'-') {
                self.pos += 1;
                let to = self.number()?;
                self.skip_ws();
                let step = if self.peek() == Some(b';') {
                    self.pos += 1;
                    let step_at = self.pos;
                    let step = self.number()?;
                    if step == 0 {
                        return Err(RangeError {
                            offset: step_at,
                            message: "the step is zero".into(),
                        });
                    }
                    step
                } else {
                    1
                };
                (to, step)
            } else {
                (from, 1)
            };
            if to < from {
                return Err(RangeError {
                    offset: item_at,
                    message: format!("the range {from}-{to} goes backwards"),
                });
            }
            let count = (to - from) / step + 1;
            if out.len() as u64 + count > MAX_HOSTS as u64 {
                return Err(RangeError {
                    offset: item_at,
                    message: format!("the range names more than {MAX_HOSTS} hosts"),
                });
            }
            out.extend((from..=to).step_by(step as usize));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }
}

/// `fixedName` + number padded to `padding` digits + `.domain`.
pub(crate) fn host_name(fixed: &str, n: u64, padding: usize, domain: Option<&str>) -> String {
    match domain {
        Some(d) if !d.is_empty() => format!("{fixed}{n:0padding$}.{d}"),
        _ => format!("{fixed}{n:0padding$}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_lists_and_exclusions() {
        assert_eq!(parse("[1-5]"), Ok(vec![1, 2, 3, 4, 5]));
        assert_eq!(parse("[0-10;5]"), Ok(vec![0, 5, 10]));
        assert_eq!(parse("[1-4,9]^[2]"), Ok(vec![1, 3, 4, 9]));
        let hosts = parse("[0-100;2]^[10,20]").expect("valid");
        assert_eq!(hosts.len(), 49);
        assert!(!hosts.contains(&10) && !hosts.contains(&20) && hosts.contains(&100));
        assert_eq!(parse(" [ 1 - 3 ] ^ [ 2 - 3 ] "), Ok(vec![1]));
        assert_eq!(parse("[3,1,3]"), Ok(vec![3, 1]));
    }

    #[test]
    fn errors_point_into_the_range() {
        assert_eq!(parse("[5-1]").map_err(|e| e.offset), Err(1));
        assert_eq!(parse("[1-5;0]").map_err(|e| e.offset), Err(5));
        assert!(parse("1-5").is_err());
        assert!(parse("[1-5").is_err());
        assert!(parse("[1-5]x").is_err());
        assert!(parse("[1-3]^[1-3]").is_err());
        assert!(parse("[0-99999999999]").is_err());
        assert!(parse("[a]").is_err());
    }

    #[test]
    fn names_are_padded() {
        assert_eq!(
            host_name("node-", 7, 3, Some("grid.example")),
            "node-007.grid.example"
        );
        assert_eq!(host_name("n", 12, 1, None), "n12");
    }
}
