//! Credentials: where a request carries its token (RFC 6750 `Authorization: Bearer`, a
//! cookie, a query parameter) and how to find it there. Pure functions over strings; no
//! transport types, no I/O. Whether the token is any good is [`crate::token`]'s question,
//! what it may do is [`crate::decision`]'s; this module never logs what it finds.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::config::TokenSources;

/// The header names the check reads, lower-case as every adapter looks them up.
pub const AUTHORIZATION: &str = "authorization";
pub const COOKIE: &str = "cookie";

/// Header lookup for the transport adapters.
pub trait Headers {
    /// The value of header `name` (lower-case), all values joined as the proxy sent them.
    fn get(&self, name: &str) -> Option<&str>;

    /// Whether header `name` arrived as more than one field (a proxy that keeps repeated
    /// headers apart instead of joining them).
    fn repeated(&self, name: &str) -> bool;
}

/// Where to look for a token, in order header, cookie, query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    header: bool,
    cookie: Option<String>,
    query: Vec<String>,
}

impl Sources {
    /// `Authorization: Bearer` alone: what the login API accepts.
    pub const HEADER_ONLY: Sources = Sources {
        header: true,
        cookie: None,
        query: Vec::new(),
    };

    pub fn new(cfg: &TokenSources) -> Self {
        Self {
            header: cfg.header,
            cookie: (!cfg.cookie.is_empty()).then(|| cfg.cookie.clone()),
            query: cfg.query.clone(),
        }
    }

    /// Whether `Authorization: Bearer` may carry the token.
    pub fn header(&self) -> bool {
        self.header
    }

    /// The cookie that may carry the token.
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    /// The query parameters that may carry the token.
    pub fn query(&self) -> &[String] {
        &self.query
    }
}

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Cookie,
    Query,
}

/// Result of looking for a token.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'r> {
    None,
    Token(Cow<'r, str>, Source),
    /// Something was there but cannot be a token (wrong shape, duplicated, oversized).
    Malformed,
}

/// Finds the token in `sources`, in order header, cookie, query.
pub fn find_token<'r>(sources: &Sources, headers: &'r dyn Headers, raw_path: &'r str) -> Found<'r> {
    if sources.header
        && let Some(value) = headers.get(AUTHORIZATION)
    {
        match bearer(value) {
            Bearer::Token(t) => return Found::Token(Cow::Borrowed(t), Source::Header),
            Bearer::Malformed => return Found::Malformed,
            Bearer::OtherScheme => {}
        }
    }
    if let Some(name) = sources.cookie()
        && let Some(cookies) = headers.get(COOKIE)
        && let Some(v) = cookie(cookies, name)
    {
        return Found::Token(Cow::Borrowed(v), Source::Cookie);
    }
    if let Some(query) = raw_path.split_once('?').map(|(_, q)| q) {
        let query = query.split('#').next().unwrap_or("");
        for name in &sources.query {
            let mut values = query_values(query, name);
            if let Some(first) = values.next() {
                if values.next().is_some() {
                    return Found::Malformed;
                }
                let decoded = match percent_decode_str(first).decode_utf8() {
                    Ok(v) => v,
                    Err(_) => return Found::Malformed,
                };
                // `authorization=Bearer%20<jwt>` as some EventSource clients send it.
                let token = match decoded {
                    Cow::Borrowed(s) => Cow::Borrowed(strip_bearer(s)),
                    Cow::Owned(s) => Cow::Owned(strip_bearer(&s).to_owned()),
                };
                return Found::Token(token, Source::Query);
            }
        }
    }
    Found::None
}

fn strip_bearer(s: &str) -> &str {
    match s.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => s,
    }
}

enum Bearer<'a> {
    Token(&'a str),
    OtherScheme,
    Malformed,
}

/// RFC 6750 2.1: `Bearer 1*SP b64token`, scheme case-insensitive.
fn bearer(value: &str) -> Bearer<'_> {
    let value = value.trim();
    let Some((scheme, rest)) = value.split_once(' ') else {
        return if value.eq_ignore_ascii_case("bearer") {
            Bearer::Malformed
        } else {
            Bearer::OtherScheme
        };
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::OtherScheme;
    }
    let token = rest.trim_start_matches(' ');
    // A proxy joins repeated headers with ','; two credentials is a malformed request.
    if token.is_empty() || memchr::memchr2(b',', b' ', token.as_bytes()).is_some() {
        return Bearer::Malformed;
    }
    Bearer::Token(token)
}

/// Value of cookie `name` in a `Cookie` header (RFC 6265 `name=value; name2=value2`).
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The `Cookie` header without cookie `name`; `None` when nothing else is left.
pub fn without_cookie(header: &str, name: &str) -> Option<String> {
    let rest: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').is_none_or(|(k, _)| k != name))
        .collect();
    (!rest.is_empty()).then(|| rest.join("; "))
}

fn query_values<'a>(query: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
    query
        .split('&')
        .filter_map(move |pair| match pair.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if pair == name => Some(""),
            _ => None,
        })
}

/// Query parameter names among `names` that occur in `raw_path`'s query.
pub fn present_query_params<'n>(
    raw_path: &str,
    names: impl Iterator<Item = &'n str>,
) -> Vec<String> {
    let Some((_, query)) = raw_path.split_once('?') else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if query_values(query, name).next().is_some() && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    struct H(HashMap<&'static str, String>);
    impl Headers for H {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(name).map(String::as_str)
        }
        fn repeated(&self, _: &str) -> bool {
            false
        }
    }

    fn defaults() -> Sources {
        Sources::new(&TokenSources::default())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> H {
        H(pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect())
    }

    #[test]
    fn finds_tokens_in_order() {
        let s = defaults();
        let h = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("cookie", "authgate_access=c.c.c"),
        ]);
        assert_eq!(
            find_token(&s, &h, "/x?access_token=q.q.q"),
            Found::Token("a.b.c".into(), Source::Header)
        );
        let h = headers(&[("cookie", "x=1; authgate_access=c.c.c")]);
        assert_eq!(
            find_token(&s, &h, "/x"),
            Found::Token("c.c.c".into(), Source::Cookie)
        );
        let h = headers(&[]);
        assert_eq!(
            find_token(&s, &h, "/x?a=1&access_token=q.q.q"),
            Found::Token("q.q.q".into(), Source::Query)
        );
        assert_eq!(
            find_token(&s, &h, "/x?authorization=Bearer%20q.q.q"),
            Found::Token("q.q.q".into(), Source::Query)
        );
        assert_eq!(find_token(&s, &h, "/x"), Found::None);
        let h = headers(&[("authorization", "alice:deadbeef")]);
        assert_eq!(find_token(&s, &h, "/x"), Found::None);
    }

    #[test]
    fn malformed_credentials() {
        let s = defaults();
        for value in [
            "Bearer",
            "Bearer ",
            "Bearer a.b.c, Bearer d.e.f",
            "bearer a b",
        ] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(find_token(&s, &h, "/x"), Found::Malformed, "{value}");
        }
        let h = headers(&[]);
        assert_eq!(
            find_token(&s, &h, "/x?access_token=a&access_token=b"),
            Found::Malformed
        );
        assert_eq!(find_token(&s, &h, "/x?access_token=%ff"), Found::Malformed);
    }

    #[test]
    fn sources_can_be_disabled() {
        let s = Sources::new(&TokenSources {
            header: false,
            query: vec![],
            cookie: String::new(),
        });
        let h = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("cookie", "authgate_access=c"),
        ]);
        assert_eq!(find_token(&s, &h, "/x?access_token=q"), Found::None);
    }

    #[test]
    fn header_only_ignores_cookie_and_query() {
        let h = headers(&[("cookie", "authgate_access=c.c.c")]);
        assert_eq!(
            find_token(&Sources::HEADER_ONLY, &h, "/x?access_token=q.q.q"),
            Found::None
        );
        let h = headers(&[("authorization", "Bearer a.b.c")]);
        assert_eq!(
            find_token(&Sources::HEADER_ONLY, &h, "/x"),
            Found::Token("a.b.c".into(), Source::Header)
        );
    }

    #[test]
    fn cookies_are_found_and_removed() {
        assert_eq!(cookie("a=1; b=\"2\"", "b"), Some("2"));
        assert_eq!(cookie("a=1", "b"), None);
        assert_eq!(
            without_cookie("a=1; b=2; c=3", "b").as_deref(),
            Some("a=1; c=3")
        );
        assert_eq!(without_cookie("b=2", "b"), None);
    }

    proptest! {
        #[test]
        fn token_extraction_never_panics(auth in ".{0,80}", cookie in ".{0,80}", query in ".{0,80}") {
            let s = defaults();
            let h = headers(&[("authorization", &auth), ("cookie", &cookie)]);
            let path = format!("/x?{query}");
            let _ = find_token(&s, &h, &path);
        }
    }
}
