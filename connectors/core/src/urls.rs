//! URLs from configuration and in error text.
//!
//! - A configured URL is checked and normalised when it is read ([`http_url`],
//!   [`http_url_string`]): `http` or `https` only, no `user:password@` (credentials belong under
//!   `auth`, where they are secrets; in a URL they reach every log line that names it), no
//!   fragment, and runs of `/` in the path collapsed, so `${BASE}/oauth_token.do` with a
//!   trailing slash in `BASE` still names the token endpoint.
//! - Any text about to reach a log or an error goes through [`strip_userinfo`], which removes
//!   `user:password@` from every URL in it (reqwest and oauth2 errors print the URL);
//!   [`error_chain`] puts an error and its causes on one line that way.

use std::sync::OnceLock;

use serde::{Deserialize, Deserializer};

/// Checks and normalises one configured URL; the error never repeats the URL's credentials.
pub fn normalize_http_url(raw: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(raw.trim()).map_err(|e| format!("not a URL ({e}): {}", strip_userinfo(raw)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {} is not http or https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the URL carries credentials (user:password@); remove them and configure them under auth, where they are kept secret".into(),
        );
    }
    if url.fragment().is_some() {
        return Err(format!("the URL has a #fragment: {}", url.as_str()));
    }
    let path = url.path().to_owned();
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    if collapsed != path {
        url.set_path(&collapsed);
    }
    Ok(url)
}

/// `deserialize_with` for a `url::Url` field: [`normalize_http_url`].
pub fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<url::Url, D::Error> {
    let raw = String::deserialize(d)?;
    normalize_http_url(&raw).map_err(serde::de::Error::custom)
}

/// `deserialize_with` for an optional `url::Url` field.
pub fn http_url_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(raw) => normalize_http_url(&raw).map(Some).map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

/// `deserialize_with` for a URL kept as a `String` (an OAuth token endpoint).
pub fn http_url_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    http_url(d).map(String::from)
}

/// An error and its causes on one line, `outer: inner: …` (reqwest, hyper and sqlx put the
/// useful part in causes), with credentials removed from any URL in them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    strip_userinfo(&parts.join(": "))
}

/// `text` with the `user:password@` part removed from every URL in it.
pub fn strip_userinfo(text: &str) -> String {
    static PATTERN: OnceLock<regex::Regex> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| regex::Regex::new(r#"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#@\s"'<>()\[\]]*@"#).expect("static regex"));
    pattern.replace_all(text, "$1").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_never_survive() {
        assert_eq!(
            strip_userinfo("error sending request for url (http://svc:S3cr%40t@host:8080/x?y=1): refused"),
            "error sending request for url (http://host:8080/x?y=1): refused"
        );
        assert_eq!(
            strip_userinfo("postgres://u:p@db/x and https://a@b/c"),
            "postgres://db/x and https://b/c"
        );
        assert_eq!(strip_userinfo("no url here: a@b"), "no url here: a@b");
        let err = normalize_http_url("https://svc:hunter2@acme.service-now.com").expect_err("refused");
        assert!(!err.contains("hunter2"), "{err}");
        let err = normalize_http_url("not a url with p4ss").expect_err("refused");
        assert!(err.contains("not a URL"), "{err}");
    }

    #[test]
    fn paths_are_normalised() {
        let u = normalize_http_url("https://acme.service-now.com//oauth_token.do").expect("ok");
        assert_eq!(u.as_str(), "https://acme.service-now.com/oauth_token.do");
        assert_eq!(
            normalize_http_url("https://x.example/jira/").expect("ok").as_str(),
            "https://x.example/jira/"
        );
        assert!(normalize_http_url("ftp://x.example").is_err());
        assert!(normalize_http_url("https://x.example/#frag").is_err());
    }
}
