//! Redaction of credentials in URLs, applied to everything that is logged or returned.
//!
//! Works on free text too (GStreamer error messages quote locations), so callers can pass any
//! string through [`redact`] without knowing whether it holds a URL.

use std::fmt;

/// Displays a string with the user-info of every URL in it replaced by `***`.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(self.0))
    }
}

/// Replace `user:pass@` in every `scheme://user:pass@host` of `text` with `***@`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_user_info_everywhere() {
        assert_eq!(redact("rtsp://admin:s3cret@10.0.0.5:554/s1"), "rtsp://***@10.0.0.5:554/s1");
        assert_eq!(redact("redis://:s3cret@localhost"), "redis://***@localhost");
        assert_eq!(
            redact("could not open rtsp://u:p@cam/x, then tried postgres://a:b@db/v"),
            "could not open rtsp://***@cam/x, then tried postgres://***@db/v"
        );
        assert_eq!(redact("rtsp://cam/path?user=x@y"), "rtsp://cam/path?user=x@y");
        assert_eq!(redact("no url here"), "no url here");
    }
}
