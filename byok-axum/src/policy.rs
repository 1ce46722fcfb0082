//! The request checks of state-changing routes: the same-origin check
//! against cross-site form posts, and the HTTPS policy for submitted keys.

use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use byok_core::SecurityWarning;
use byok_core::error::SecurityIssue;

use crate::rejection::ByokRejection;
use crate::web::ByokWeb;

/// Refuses a state-changing request that a browser sent from another site.
///
/// The rules of Go's `net/http.CrossOriginProtection`: safe methods pass;
/// a `Sec-Fetch-Site` header (sent by every current browser) must say
/// `same-origin` or `none`; without it, an `Origin` header must name the
/// request's own host; a request with neither did not come from a browser
/// (or from one too old to send them) and passes, so API clients such as
/// `curl` need no token.
pub(crate) fn check_same_origin(parts: &Parts) -> Result<(), ByokRejection> {
    if matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return Ok(());
    }
    let refuse = |why: &'static str| {
        tracing::warn!(
            method = %parts.method,
            path = parts.uri.path(),
            why,
            "cross-site request refused"
        );
        Err(ByokRejection::cross_site().for_request(&parts.headers))
    };
    if let Some(site) = parts.headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => Ok(()),
            _ => refuse("Sec-Fetch-Site is not same-origin"),
        };
    }
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host);
    let own_host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    match (origin_host, own_host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => refuse("Origin is not this host"),
    }
}

/// Whether the request reached the application (or its trusted proxy)
/// over HTTPS.
pub(crate) fn is_https(web: &ByokWeb, parts: &Parts) -> bool {
    if web.trusts_forwarded_proto()
        && let Some(proto) = forwarded_proto(&parts.headers)
    {
        return proto.eq_ignore_ascii_case("https");
    }
    if let Some(scheme) = parts.uri.scheme_str() {
        return scheme.eq_ignore_ascii_case("https");
    }
    web.served_over_tls()
}

/// The protocol the client used, as the nearest proxy saw it (the first
/// value of `X-Forwarded-Proto`).
fn forwarded_proto(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("x-forwarded-proto")?.to_str().ok()?;
    value.split(',').next().map(str::trim)
}

/// Applies `ByokConfig::require_https` to a request that submits a key:
/// over plain HTTP it is refused in production and allowed with a warning
/// in development. Both log a [`SecurityWarning`].
pub(crate) fn check_key_transport(web: &ByokWeb, parts: &Parts) -> Result<(), ByokRejection> {
    if !web.byok().config().require_https || is_https(web, parts) {
        return Ok(());
    }
    let warning = SecurityWarning::new(
        SecurityIssue::InsecureTransport,
        "an API key was submitted over plain HTTP",
    );
    if web.is_production() {
        tracing::warn!(%warning, path = parts.uri.path(), "key refused: production requires HTTPS");
        Err(ByokRejection::insecure_transport().for_request(&parts.headers))
    } else {
        tracing::warn!(%warning, path = parts.uri.path(), "key accepted in development mode; production would refuse it");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder()
            .method(method)
            .uri("/settings/api-keys/openai");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn same_origin_rules() {
        let host = ("host", "app.test:8443");
        let ok = [
            vec![],
            vec![("sec-fetch-site", "same-origin")],
            vec![("sec-fetch-site", "none")],
            vec![host, ("origin", "https://app.test:8443")],
            vec![host, ("origin", "https://APP.test:8443")],
            // Sec-Fetch-Site decides when present.
            vec![
                host,
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://x.test"),
            ],
        ];
        for headers in ok {
            assert!(
                check_same_origin(&parts(Method::POST, &headers)).is_ok(),
                "{headers:?}"
            );
        }
        let refused = [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![
                host,
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://app.test:8443"),
            ],
            vec![host, ("origin", "https://app.test")],
            vec![host, ("origin", "https://app.test:8443.evil.test")],
            vec![host, ("origin", "null")],
            vec![("origin", "https://app.test:8443")],
        ];
        for headers in refused {
            let r = check_same_origin(&parts(Method::DELETE, &headers)).unwrap_err();
            assert_eq!(r.status(), axum::http::StatusCode::FORBIDDEN, "{headers:?}");
            assert_eq!(r.kind(), crate::RejectionKind::CrossSiteRequest);
        }
        // Reads are never refused.
        let cross = [("sec-fetch-site", "cross-site")];
        assert!(check_same_origin(&parts(Method::GET, &cross)).is_ok());
    }

    #[test]
    fn forwarded_proto_takes_the_nearest_proxy() {
        let p = parts(Method::PUT, &[("x-forwarded-proto", "https, http")]);
        assert_eq!(forwarded_proto(&p.headers), Some("https"));
        let p = parts(Method::PUT, &[]);
        assert_eq!(forwarded_proto(&p.headers), None);
    }
}
