//! The URL redactor: a secret put into any connection-string form the crate
//! takes (PostgreSQL URL user info and `?password=`, libpq key-value pairs,
//! Redis user info, `redis+unix://…?pass=`, a Deno KV Connect token in
//! `denokv+https://`, a Workers KV API token in `cfworkers://`) never
//! survives in the redacted text, in `SecretUrl`'s `Display`/`Debug`, or in
//! what `BackendConfig::from_url` shows (its `Debug`, or its error), raw or
//! percent-decoded.
#![no_main]

use arbitrary::Unstructured;
use kvtower::__fuzz::redact::{redact_url, secrets};
use kvtower::config::{BackendConfig, SecretUrl};
use libfuzzer_sys::fuzz_target;

/// `s` with every byte outside `[A-Za-z0-9._~-]` percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._~-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A plain identifier from fuzz text (user names and hosts stay simple so
/// that the secret's part of the URL is the only interesting one).
fn plain(s: &str, fallback: &str) -> String {
    let s: String = s.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    if s.is_empty() { fallback.to_owned() } else { s }
}

/// The connection string of form `form` holding `secret`, and the secret as
/// written in it (escaped the way that form escapes it).
fn connection_string(form: u8, user: &str, host: &str, secret: &str) -> Option<(String, String)> {
    Some(match form % 8 {
        // tokio-postgres: the user info runs to the first `@`.
        0 if !secret.contains('@') => (
            format!("postgres://{user}:{secret}@{host}:5432/test"),
            secret.to_owned(),
        ),
        1 => {
            let enc = percent_encode(secret);
            (format!("postgresql://{user}@{host}/test?sslmode=disable&password={enc}"), enc)
        }
        2 => {
            let quoted = secret.replace('\\', "\\\\").replace('\'', "\\'");
            (format!("host={host} user={user} password='{quoted}' dbname=test"), quoted)
        }
        3 => {
            let enc = percent_encode(secret);
            (format!("redis://{user}:{enc}@{host}:6379/0"), enc)
        }
        4 => {
            let enc = percent_encode(secret);
            (format!("redis+unix:///tmp/{host}.sock?db=0&pass={enc}"), enc)
        }
        5 => {
            let enc = percent_encode(secret);
            (format!("rediss://:{enc}@{host}:6380"), enc)
        }
        6 => {
            // A KV Connect access token in the user info.
            let enc = percent_encode(secret);
            (format!("denokv+https://:{enc}@{host}/connect"), enc)
        }
        7 => {
            // A Workers KV API token in the user info.
            let enc = percent_encode(secret);
            (format!("cfworkers://:{enc}@{host}/namespace"), enc)
        }
        _ => return None,
    })
}

/// Everything the crate shows of `url`.
fn shown(url: &str) -> Vec<String> {
    let mut shown = vec![redact_url(url)];
    let secret_url = SecretUrl::new(url.to_owned());
    shown.push(secret_url.to_string());
    shown.push(format!("{secret_url:?}"));
    match BackendConfig::from_url(url) {
        Ok(config) => shown.push(format!("{config:?}")),
        Err(e) => shown.push(format!("{e} {e:?}")),
    }
    shown
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let form: u8 = u.arbitrary().unwrap_or_default();
    let user: String = u.arbitrary().unwrap_or_default();
    let host: String = u.arbitrary().unwrap_or_default();
    let secret: String = u.arbitrary().unwrap_or_default();
    // Short secrets would match ordinary words of the URL; control
    // characters are no password a driver takes in these forms.
    if secret.chars().count() < 6 || secret.chars().any(char::is_control) {
        return;
    }
    let user = plain(&user, "app");
    let host = plain(&host, "db");
    let Some((url, written)) = connection_string(form, &user, &host, &secret) else {
        return;
    };
    // Only secrets that are no ordinary text of these outputs: the same URL
    // with a placeholder secret must not already show them (a secret
    // "namespa" is in every `Debug` of a Redis config).
    let Some((plain_url, _)) = connection_string(form, &user, &host, "QqQqQqQq") else {
        return;
    };
    if shown(&plain_url)
        .iter()
        .any(|text| text.contains(&secret) || text.contains(&written))
    {
        return;
    }
    for text in shown(&url) {
        assert!(
            !text.contains(&secret) && !text.contains(&written),
            "the secret of {url:?} survives in {text:?}"
        );
    }
    // The redactor knows what it hid: the written secret is among them.
    assert!(
        secrets(&url).iter().any(|s| s.contains(&written) || written.contains(s.as_str())),
        "{url:?}: {:?}",
        secrets(&url)
    );
});
