//! Redaction of credentials in URLs, applied to everything that is logged or returned.
//!
//! Works on free text too (GStreamer and database error messages quote locations), so callers
//! can pass any string through [`redact`] without knowing whether it holds a URL. Two places in
//! a URL carry secrets: the user-info (`rtsp://user:pass@host`) and query parameters
//! (`postgres://h/db?password=…`, `rtsp://cam/live?token=…`, `?sslpassword=…`).

use std::fmt;

/// Displays a string with the user-info and secret query values of every URL in it replaced by `***`.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(self.0))
    }
}

/// Query keys whose values are secrets: any key containing one of these, case-insensitively.
/// Covers libpq's `password`/`sslpassword`, cameras' `token`/`auth`/`key`, and signed links' `sig`.
const SECRET_KEYS: &[&str] = &["pass", "pwd", "secret", "token", "auth", "key", "sig", "credential", "session"];

/// Replace `user:pass@` in every `scheme://user:pass@host` of `text` with `***@`, and the value
/// of every secret-looking query parameter (see [`SECRET_KEYS`]) with `***`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let url_end = tail.find(|c: char| c.is_whitespace() || "\"'<>`".contains(c)).unwrap_or(tail.len());
        let (url, after) = tail.split_at(url_end);
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let (authority, path) = url.split_at(authority_end);
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        out.push_str(&redact_query(path));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `path?query#fragment` with the values of secret query keys replaced.
fn redact_query(path_and_query: &str) -> String {
    let Some(q) = path_and_query.find('?') else { return path_and_query.to_string() };
    let (path, query) = path_and_query.split_at(q + 1);
    let (query, fragment) = query.split_at(query.find('#').unwrap_or(query.len()));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}{}{fragment}", pairs.join("&"))
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| key.contains(s))
}

/// Just the host (and port) of a URL: what may name an endpoint whose path or query can hold a
/// secret (Slack, Discord and Teams webhooks carry their key in the path). `None` if it has no host.
pub fn host_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// Standard error with every write passed through [`redact`]: the log's last line of defence,
/// for a message that quotes a URL its call site did not know about. The log formatter writes
/// each event whole, so a URL is never split between two writes.
pub struct RedactedStderr;

impl std::io::Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(redact(&String::from_utf8_lossy(buf)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::{host_of, redact};

    #[test]
    fn hides_user_info_everywhere() {
        assert_eq!(redact("rtsp://admin:s3cret@10.0.0.5:554/s1"), "rtsp://***@10.0.0.5:554/s1");
        assert_eq!(redact("redis://:s3cret@localhost"), "redis://***@localhost");
        assert_eq!(
            redact("could not open rtsp://u:p@cam/x, then tried postgres://a:b@db/v"),
            "could not open rtsp://***@cam/x, then tried postgres://***@db/v"
        );
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn hides_secret_query_values() {
        assert_eq!(
            redact("postgres://db/v?sslmode=require&password=s3cret&sslpassword=s3cret"),
            "postgres://db/v?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(redact("rtsp://cam/live?channel=1&Token=abc#x"), "rtsp://cam/live?channel=1&Token=***#x");
        assert_eq!(redact("rtsp://cam/path?user=x@y"), "rtsp://cam/path?user=x@y");
        assert_eq!(redact("at `rtsp://cam/a?auth=z` failed"), "at `rtsp://cam/a?auth=***` failed");
    }

    #[test]
    fn host_only() {
        assert_eq!(host_of("https://hooks.slack.com/services/T0/B0/XYZ?x=1").as_deref(), Some("hooks.slack.com"));
        assert_eq!(host_of("http://u:p@127.0.0.1:9000/k").as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(host_of("nonsense"), None);
    }
}
