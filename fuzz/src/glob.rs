//! Redis's glob matcher, `stringmatchlen` (`src/util.c`, Redis 7.x), ported
//! line by line: `SCAN MATCH` and `KEYS` use it, so a pattern matches a key
//! here exactly when it does on the server. Case-sensitive (`nocase = 0`, as
//! `SCAN` calls it).
//!
//! The C code reads `pattern[0]`/`pattern[1]` one past the end, where the
//! sds string's NUL terminator is: `at` returns that NUL. `char` is signed on
//! the platforms Redis runs on, which matters for `[a-z]` ranges over bytes
//! `>= 0x80`: ranges compare `i8`s.
//!
//! Checked against a Redis 7.0 server's `KEYS` for the cases in the tests.
//! Shared by the library's unit tests (`src/stores/redis/encoding.rs`
//! includes this file) and the `redis_key` fuzz target.

/// Whether `pattern` matches all of `string`, as Redis decides it.
pub fn string_match(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer_matches = false;
    match_impl(pattern, string, &mut skip_longer_matches, 0)
}

fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

fn match_impl(mut p: &[u8], mut s: &[u8], skip_longer_matches: &mut bool, nesting: u32) -> bool {
    // Protection against abusive patterns.
    if nesting > 1000 {
        return false;
    }
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while !p.is_empty() && at(p, 1) == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_impl(&p[1..], s, skip_longer_matches, nesting + 1) {
                        return true;
                    }
                    if *skip_longer_matches {
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer_matches = true;
                return false;
            }
            b'?' => {
                s = &s[1..];
            }
            b'[' => {
                p = &p[1..];
                let not = at(p, 0) == b'^';
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                // An index into the original pattern would be closer to
                // the C; a "rewind by one" (the `patternLen == 0` branch)
                // is modelled by `unterminated`.
                let mut unterminated = false;
                loop {
                    if at(p, 0) == b'\\' && p.len() >= 2 {
                        p = &p[1..];
                        if p[0] == s[0] {
                            matched = true;
                        }
                    } else if at(p, 0) == b']' {
                        break;
                    } else if p.is_empty() {
                        // C: `pattern--; patternLen++; break;` so that the
                        // `pattern++` below lands on the end again.
                        unterminated = true;
                        break;
                    } else if p.len() >= 3 && p[1] == b'-' {
                        let (mut start, mut end) = (p[0] as i8, p[2] as i8);
                        let c = s[0] as i8;
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p = &p[2..];
                        if c >= start && c <= end {
                            matched = true;
                        }
                    } else if p[0] == s[0] {
                        matched = true;
                    }
                    p = &p[1..];
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s = &s[1..];
                // Undo the rewind: the common `pattern++` below is skipped
                // for an unterminated class (the pattern is already empty).
                if unterminated {
                    if s.is_empty() {
                        break;
                    }
                    continue;
                }
            }
            b'\\' => {
                if p.len() >= 2 {
                    p = &p[1..];
                }
                if p[0] != s[0] {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if c != s[0] {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while at(p, 0) == b'*' {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::string_match;

    #[test]
    fn redis_semantics() {
        assert!(string_match(b"a*", b"abc"));
        assert!(string_match(b"a*", b"a"));
        assert!(!string_match(b"a*", b""));
        // As on a Redis 7.0 server (`KEYS **` skips the key ""; a lone `*` is
        // short-cut by the server before the matcher runs, so is not modelled).
        assert!(!string_match(b"**", b""));
        assert!(string_match(b"a\\*", b"a*"));
        assert!(!string_match(b"a\\*", b"ab"));
        assert!(string_match(b"h?llo", b"hello"));
        assert!(string_match(b"h[ae]llo", b"hallo"));
        assert!(!string_match(b"h[^e]llo", b"hello"));
        assert!(string_match(b"h[a-b]llo", b"hbllo"));
        assert!(string_match(b"h[b-a]llo", b"hbllo"));
        assert!(string_match(b"a\\", b"a\\"));
        assert!(string_match(b"[\\]]", b"]"));
        assert!(string_match(b"[abc", b"c"));
    }
}
