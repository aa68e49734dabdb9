//! The crate's one redactor of connection strings: what `Debug`, `Display`
//! and error messages show of a URL that may hold a password or token.
//!
//! It finds credentials the way the drivers read them, so that what a driver
//! would send as a password is never shown:
//!
//! * **PostgreSQL URLs** (`postgres://`, `postgresql://`), as tokio-postgres
//!   reads them: the user info runs to the *first* `@` anywhere (so a
//!   password may hold `#`, `?` or `/`), and `#` is no fragment.
//! * **Other URLs** (`redis://`, `rediss://`, `redis+unix://`, `https://`,
//!   ...), as the `url` crate reads them: the user info runs to the last `@`
//!   of the authority.
//! * In both, query parameters whose name, percent-decoded, looks like a
//!   secret (`password`, `p%61ssword`, `pass`, `token`, ...) have their value
//!   hidden.
//! * **libpq's key-value form** (`host=db password='a b'`), as
//!   tokio-postgres parses it: quoted values and `\` escapes included.
//!
//! When in doubt it hides more: a URL whose reading is ambiguous (an `@`
//! after the authority with a `:` before it, a port that is not a number)
//! shows its scheme only (`redis://***`), and text that is neither a URL nor
//! key-value pairs is hidden unless it cannot hold a credential.

use std::borrow::Cow;

use crate::error::Error;

/// What stands for a hidden secret.
const HIDDEN: &str = "***";

/// Whether a query parameter or key-value keyword names a secret. Broad on
/// purpose: hiding a harmless value costs nothing.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "auth",
        "key",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// One way a text was read: the byte ranges of its secrets.
struct Reading {
    /// Ranges (start, end) of secret text, in order, not overlapping.
    secrets: Vec<(usize, usize)>,
    /// The text could not be read unambiguously: show only `keep` bytes of
    /// it (the scheme), then `***`.
    opaque: Option<usize>,
}

/// Reads `text` as a connection string.
fn read(text: &str) -> Reading {
    match text.find("://") {
        Some(i) if is_scheme(&text[..i]) => read_url(text, i + 3),
        _ if text.contains('=') => read_key_value(text),
        // Neither a URL nor key-value pairs: a word with no `@`, `:` or `=`
        // cannot hold a credential in any driver's syntax; anything else
        // might be a mistyped URL with a password.
        _ if !text.contains(['@', ':']) => Reading {
            secrets: Vec::new(),
            opaque: None,
        },
        _ => Reading {
            secrets: Vec::new(),
            opaque: Some(0),
        },
    }
}

fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `text` is `scheme://rest`, `rest` starting at byte `start`.
fn read_url(text: &str, start: usize) -> Reading {
    let scheme = text[..start - 3].to_ascii_lowercase();
    if ["memory", "sqlite", "denokv"].contains(&scheme.as_str()) {
        // A path (`sqlite://:memory:`, `denokv:///kv.sqlite3`): no credentials.
        return Reading {
            secrets: Vec::new(),
            opaque: None,
        };
    }
    let postgres = scheme == "postgres" || scheme == "postgresql";
    let rest = &text[start..];
    let opaque = Reading {
        secrets: Vec::new(),
        opaque: Some(start),
    };
    let mut secrets = Vec::new();
    // tokio-postgres ends the host at `/` or `?`; the url crate also at `#`
    // (and at `\` for special schemes).
    let host_ends: &[char] = if postgres {
        &['/', '?']
    } else {
        &['/', '?', '#', '\\']
    };
    let authority_end = rest.find(host_ends).unwrap_or(rest.len());
    let at = if postgres {
        // The first `@` anywhere: tokio-postgres's credentials.
        rest.find('@')
    } else {
        match rest[..authority_end].rfind('@') {
            Some(at) => Some(at),
            // An `@` past the authority with a `:` before it: a password
            // holding `/`, `?` or `#` that another reader would take.
            None => match rest.find('@') {
                Some(at) if rest[..at].contains(':') => return opaque,
                _ => None,
            },
        }
    };
    let host_start = match at {
        Some(at) => {
            if let Some(colon) = rest[..at].find(':') {
                secrets.push((start + colon + 1, start + at));
            }
            at + 1
        }
        None => 0,
    };
    let after_host = &rest[host_start..];
    let host_end = host_start + after_host.find(host_ends).unwrap_or(after_host.len());
    if !hosts_are_plain(&rest[host_start..host_end]) {
        return opaque;
    }
    // Query parameters: to the end for tokio-postgres, to `#` otherwise.
    let tail = &rest[host_end..];
    if let Some(q) = tail.find('?') {
        let query_start = host_end + q + 1;
        let query_end = if postgres {
            rest.len()
        } else {
            rest[query_start..]
                .find('#')
                .map_or(rest.len(), |h| query_start + h)
        };
        let mut pair_start = query_start;
        for pair in rest[query_start..query_end].split('&') {
            if let Some((name, _)) = pair.split_once('=') {
                let name = name.replace('+', " ");
                if is_secret_name(&percent_decode(&name)) {
                    let value_start = start + pair_start + pair.find('=').unwrap_or(0) + 1;
                    secrets.push((value_start, start + pair_start + pair.len()));
                }
            }
            pair_start += pair.len() + 1;
        }
    }
    // A fragment no driver reads may still hold the end of a password
    // written unescaped: hidden.
    if !postgres {
        if let Some(h) = tail.find('#') {
            let fragment_start = start + host_end + h + 1;
            if fragment_start < text.len() {
                secrets.push((fragment_start, text.len()));
            }
        }
    }
    Reading {
        secrets,
        opaque: None,
    }
}

/// Whether a URL's host part (`h1:port,h2,[::1]:port`) holds nothing but
/// hosts and numeric ports: anything else (`:secret` where a port goes) is
/// a misread credential.
fn hosts_are_plain(hosts: &str) -> bool {
    hosts.split(',').all(|host| {
        let port = match host.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((_, "")) => None,
                Some((_, after)) => match after.strip_prefix(':') {
                    Some(port) => Some(port),
                    None => return false,
                },
                None => return false,
            },
            None => host.split_once(':').map(|(_, port)| port),
        };
        port.is_none_or(|port| port.bytes().all(|b| b.is_ascii_digit()))
            && !host.contains(|c: char| c.is_whitespace() || c == '@')
    })
}

/// libpq's `keyword = value` pairs, as tokio-postgres parses them.
fn read_key_value(text: &str) -> Reading {
    let bytes = text.as_bytes();
    let mut secrets = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && (bytes[i] as char).is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i >= bytes.len() {
            break;
        }
        let keyword_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !(bytes[i] as char).is_ascii_whitespace() {
            i += 1;
        }
        let keyword = &text[keyword_start..i];
        i = skip_ws(i);
        let plain = keyword
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if i >= bytes.len() || bytes[i] != b'=' || !plain {
            // Not key-value after all: whatever follows may be a secret.
            return Reading {
                secrets,
                opaque: Some(keyword_start),
            };
        }
        i = skip_ws(i + 1);
        let value_start = i;
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => {
                        // Unterminated: the rest is the value.
                        secrets.push((value_start, text.len()));
                        return Reading {
                            secrets,
                            opaque: None,
                        };
                    }
                    Some(b'\\') => i += 2,
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        } else {
            while i < bytes.len() && !(bytes[i] as char).is_ascii_whitespace() {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
        }
        let value_end = i.min(text.len());
        if is_secret_name(keyword) && value_end > value_start {
            secrets.push((value_start, value_end));
        }
    }
    Reading {
        secrets,
        opaque: None,
    }
}

/// `text` (a URL or libpq key-value string) with its passwords and tokens
/// replaced by `***`; see the [module docs](self) for how it reads them.
pub(crate) fn redact_url(text: &str) -> String {
    let reading = read(text);
    if let Some(keep) = reading.opaque {
        return format!("{}{HIDDEN}", &text[..keep]);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end) in reading.secrets {
        out.push_str(&text[last..start]);
        out.push_str(HIDDEN);
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

/// The secrets of `text` as a driver may print them: raw, percent-decoded,
/// unquoted and unescaped. For scrubbing error messages that may quote them.
pub(crate) fn secrets(text: &str) -> Vec<String> {
    let reading = read(text);
    let mut raw: Vec<&str> = reading
        .secrets
        .iter()
        .map(|&(start, end)| &text[start..end])
        .collect();
    if let Some(keep) = reading.opaque {
        // Ambiguous: every part a reader might take for a password (but
        // not bits so short they would blank ordinary words).
        let rest = &text[keep..];
        raw.push(rest);
        raw.extend(
            rest.split(['@', '/', '?', '#', ':', '&', '=', ' ', ','])
                .filter(|part| part.len() >= 3),
        );
        // And from the first `:` to each `@`: a password holding `@`.
        if let Some(colon) = rest.find(':') {
            raw.extend(
                rest.match_indices('@')
                    .filter(|&(at, _)| at > colon + 1)
                    .map(|(at, _)| &rest[colon + 1..at]),
            );
        }
    }
    let mut out = Vec::new();
    for secret in raw {
        let unquoted = secret
            .strip_prefix('\'')
            .map(|s| s.strip_suffix('\'').unwrap_or(s))
            .unwrap_or(secret);
        for form in [
            Cow::Borrowed(secret),
            Cow::Borrowed(unquoted),
            Cow::Owned(unescape(unquoted)),
            percent_decode(unquoted),
            percent_decode(&unquoted.replace('+', " ")),
        ] {
            if !form.is_empty() && !out.iter().any(|s: &String| s == form.as_ref()) {
                out.push(form.into_owned());
            }
        }
    }
    out
}

/// A `\`-escaped libpq value, unescaped.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `%XX`-decodes `text` (lossily, for comparison only).
fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(String::from_utf8_lossy(&percent_decode_bytes(text)).into_owned())
}

/// The bytes `text` stands for, each valid `%XX` decoded (any other `%`
/// kept as it is).
pub(crate) fn percent_decode_bytes(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Redacts every connection string quoted in a free text (an error message
/// quoting a configuration line, say): each word holding `://`, and each
/// `keyword=value` pair whose keyword names a secret.
pub(crate) fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The URL starts after the last delimiter before the scheme separator.
        let start = rest[..i]
            .rfind(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '=' | ',' | '['))
            .map_or(0, |d| d + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ']'))
            .map_or(rest.len(), |e| i + e);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    redact_key_values_in_text(&out)
}

/// `password=x`, `password = 'a b'` and the like, inside free text.
fn redact_key_values_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            i += 1;
            continue;
        }
        // The keyword before `=` (spaces allowed around it).
        let mut k_end = i;
        while k_end > 0 && bytes[k_end - 1] == b' ' {
            k_end -= 1;
        }
        let k_start = text[..k_end]
            .rfind(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '%' | '.')))
            .map_or(0, |p| p + 1);
        let mut v = i + 1;
        while v < bytes.len() && bytes[v] == b' ' {
            v += 1;
        }
        if k_start < k_end && is_secret_name(&percent_decode(&text[k_start..k_end])) {
            let value_end = if bytes.get(v) == Some(&b'\'') {
                let mut j = v + 1;
                loop {
                    match bytes.get(j) {
                        None => break text.len(),
                        Some(b'\\') => j += 2,
                        Some(b'\'') => break j + 1,
                        Some(_) => j += 1,
                    }
                }
                .min(text.len())
            } else {
                text[v..]
                    .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | '`' | ','))
                    .map_or(text.len(), |e| v + e)
            };
            if value_end > v && !text[v..value_end].starts_with(HIDDEN) {
                out.push_str(&text[last..v]);
                out.push_str(HIDDEN);
                last = value_end;
                i = value_end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[last..]);
    out
}

/// `err` with every secret of the connection strings `texts` replaced by
/// `***`, in its message and its source chain (a driver's message may quote
/// the URL). An error that holds none comes back unchanged, source included.
pub(crate) fn scrub<'a>(err: Error, texts: impl IntoIterator<Item = &'a str>) -> Error {
    scrub_secrets(err, texts.into_iter().flat_map(secrets))
}

/// `err` with each of `secrets` (and any connection string its text quotes)
/// redacted, in its message and its source chain.
pub(crate) fn scrub_secrets(err: Error, secrets: impl IntoIterator<Item = String>) -> Error {
    let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
    // Longest first, so that a secret holding another is hidden whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    err.redacted(|text| {
        let text = secrets.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), HIDDEN)
        });
        redact_text(&text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn hides(url: &str, secret: &str) -> String {
        let shown = redact_url(url);
        assert!(!shown.contains(secret), "{url} shows {secret}: {shown}");
        assert!(
            secrets(url).iter().any(|s| s.contains(secret)),
            "{url}: {secret} is not among the secrets {:?}",
            secrets(url)
        );
        shown
    }

    #[test]
    fn plain_urls_keep_their_shape() {
        assert_eq!(
            redact_url("postgres://u:p4ss@h/db?password=x&sslmode=require"),
            "postgres://u:***@h/db?password=***&sslmode=require"
        );
        assert_eq!(redact_url("redis://:token@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("memory://"), "memory://");
        assert_eq!(redact_url("sqlite:///var/kv.db"), "sqlite:///var/kv.db");
        assert_eq!(
            redact_url("redis+unix:///run/r.sock?db=1"),
            "redis+unix:///run/r.sock?db=1"
        );
        assert_eq!(redact_url("redis://[::1]:6379/0"), "redis://[::1]:6379/0");
        assert_eq!(redact_url("postgres://a:1,b:2/db"), "postgres://a:1,b:2/db");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn postgres_passwords_with_url_delimiters() {
        for pw in ["a#b", "a?b", "a/b", "x/y?z#w", "12#34", "p@ss"] {
            let url = format!("postgres://app:{pw}@db:5432/test");
            let shown = hides(&url, pw);
            assert!(shown.starts_with("postgres://"), "{shown}");
        }
        // As tokio-postgres reads it: user `app`, host `db`.
        assert_eq!(
            redact_url("postgres://app:a/b?c#d@db/test"),
            "postgres://app:***@db/test"
        );
    }

    #[test]
    fn query_passwords_with_escaped_names() {
        for url in [
            "postgres://app@db/test?p%61ssword=s3cr3t",
            "postgres://app@db/test?%70assword=s3cr3t&sslmode=disable",
            "postgresql://db/test?PASSWORD=s3cr3t",
            "redis+unix:///run/redis.sock?pass=s3cr3t",
            "redis+unix:///run/redis.sock?db=0&password=s3cr3t",
            "redis://h/0?pa%73s=s3cr3t",
            "postgres://db/test?password=s3cr3t#frag",
            "redis://h/?token=s3cr3t",
        ] {
            hides(url, "s3cr3t");
        }
    }

    #[test]
    fn key_value_form() {
        assert_eq!(
            redact_url("host=db user=app password=s3cr3t dbname=test"),
            "host=db user=app password=*** dbname=test"
        );
        for text in [
            "host=db password='a b s3cr3t' user=app",
            "host=db password = s3cr3t",
            "host=db password='it\\'s s3cr3t'",
            "host=db password='s3cr3t unterminated",
            "password=s3cr3t",
            "host=db sslpassword=s3cr3t",
        ] {
            hides(text, "s3cr3t");
        }
        hides("host=db password=s3\\ cr3t", "cr3t");
        // Unescaped forms are among the secrets, for drivers that print them.
        assert!(secrets("password='it\\'s s3cr3t'").contains(&"it's s3cr3t".to_owned()));
    }

    #[test]
    fn ambiguous_text_shows_the_scheme_only() {
        assert_eq!(redact_url("redis://:a#b@host"), "redis://***");
        assert_eq!(redact_url("redis://:s3cr3t"), "redis://***");
        assert_eq!(redact_url("redis://u:s3cr3t/x@h"), "redis://***");
        hides("redis://:a#s3cr3t@host", "s3cr3t");
        assert_eq!(redact_url("u:s3cr3t@host"), "***");
        assert_eq!(redact_url("mysql//u:s3cr3t@db"), "***");
        assert_eq!(redact_url("postgresql//h/db?p%61ssword=s3cr3t"), "***");
        assert_eq!(redact_url("host=h weird/key=s3cr3t"), "host=h ***");
    }

    #[test]
    fn text_quoting_urls_and_pairs() {
        let text = "bad `postgres://u:s3cr3t@h/db` and host=h password='x y' or password = z9z9";
        let shown = redact_text(text);
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("x y") && !shown.contains("z9z9"),
            "{shown}"
        );
        assert!(shown.contains("postgres://u:***@h/db`"), "{shown}");
        assert_eq!(redact_text("nothing here"), "nothing here");
    }
}
