//! The request checks of state-changing routes: the same-origin check
//! against cross-site form posts, and the HTTPS policy for submitted keys.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use crate::rejection::ByokRejection;
use crate::web::{ByokWeb, full_path};

/// Refuses a state-changing request that a browser sent from another site.
///
/// The rules of Go's `net/http.CrossOriginProtection`, with a `Referer`
/// fallback: safe methods pass; an `Origin` among the trusted origins
/// passes; a `Sec-Fetch-Site` header (sent by every current browser) must
/// say `same-origin` or `none`; without it, the `Origin` header, or when
/// there is none the origin of the `Referer`, must name the site's own
/// host (or a trusted origin); a request with neither did not come from a
/// browser (or from one too old to send them) and passes, so API clients
/// such as `curl` need no token.
pub(crate) fn check_same_origin(web: &ByokWeb, parts: &Parts) -> Result<(), ByokRejection> {
    if matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return Ok(());
    }
    let refuse = |why: &'static str| {
        Err(ByokRejection::cross_site()
            .for_request(&parts.headers)
            .at(full_path(parts))
            .with_note(format!("; {} {}: {why}", parts.method, full_path(parts))))
    };
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    if origin.is_some_and(|o| web.is_trusted_origin(o)) {
        return Ok(());
    }
    if let Some(site) = parts.headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => Ok(()),
            _ => refuse("Sec-Fetch-Site is not same-origin"),
        };
    }
    let (source, what) = match (parts.headers.get(header::ORIGIN), origin) {
        (Some(_), Some(o)) => (o, "Origin"),
        (Some(_), None) => return refuse("Origin is not readable"),
        (None, _) => match parts.headers.get(header::REFERER) {
            None => return Ok(()),
            Some(r) => match r.to_str().ok().and_then(origin_of_url) {
                Some(o) => (o, "Referer"),
                None => return refuse("Referer is not a URL of this site"),
            },
        },
    };
    if web.is_trusted_origin(source) {
        return Ok(());
    }
    let source_host = source.split_once("://").map(|(_, host)| host);
    match (source_host, own_host(web, parts)) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ if what == "Origin" => refuse("Origin is not this host"),
        _ => refuse("Referer is not this host"),
    }
}

/// The `scheme://host[:port]` of an absolute URL.
fn origin_of_url(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty() {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + end])
}

/// The site's own host: `X-Forwarded-Host` behind a proxy that is
/// trusted to set it, otherwise `Host` (or the URI's authority).
fn own_host<'a>(web: &ByokWeb, parts: &'a Parts) -> Option<&'a str> {
    if web.trusts_forwarded_host()
        && let Some(host) = first_value(&parts.headers, "x-forwarded-host")
    {
        return Some(host);
    }
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
}

/// Whether the request reached the application (or its trusted proxy)
/// over HTTPS.
pub(crate) fn is_https(web: &ByokWeb, parts: &Parts) -> bool {
    if web.trusts_forwarded_proto()
        && let Some(proto) = first_value(&parts.headers, "x-forwarded-proto")
    {
        return proto.eq_ignore_ascii_case("https");
    }
    if let Some(scheme) = parts.uri.scheme_str() {
        return scheme.eq_ignore_ascii_case("https");
    }
    web.served_over_tls()
}

/// The first value of a comma-separated header (what the nearest proxy
/// saw).
fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?;
    value.split(',').next().map(str::trim)
}

/// Whether `host` (a `Host` header or the authority of an origin) names a
/// loopback address: `localhost` or a name under it, `127.0.0.0/8`, or
/// `[::1]`, with any port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, _)) => ip,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    if name.eq_ignore_ascii_case("localhost")
        || name
            .get(name.len().saturating_sub(10)..)
            .is_some_and(|end| end.eq_ignore_ascii_case(".localhost"))
    {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request came from a browser on this machine to a loopback
/// address over no proxy: a context that browsers count as secure.
fn is_loopback(parts: &Parts) -> bool {
    let h = &parts.headers;
    for proxy in [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    ] {
        if h.contains_key(proxy) {
            return false;
        }
    }
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if !is_loopback_host(host) {
        return false;
    }
    for name in [header::ORIGIN, header::REFERER] {
        if let Some(v) = h.get(&name) {
            let loopback = v
                .to_str()
                .ok()
                .and_then(origin_of_url)
                .and_then(|o| o.split_once("://"))
                .is_some_and(|(_, host)| is_loopback_host(host));
            if !loopback {
                return false;
            }
        }
    }
    match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => peer.ip().is_loopback(),
        None => true,
    }
}

/// Whether a key may travel over this request: HTTPS is not required,
/// or the request came over HTTPS, or over loopback where that is allowed.
pub(crate) fn transport_is_secure(web: &ByokWeb, parts: &Parts) -> bool {
    !web.byok().config().require_https
        || is_https(web, parts)
        || (web.allows_loopback_http() && is_loopback(parts))
}

/// Applies `ByokConfig::require_https` to a request that submits a key:
/// over plain HTTP from another machine it is refused in production (one
/// `WARN` line that says how to configure it) and allowed with a warning
/// in development.
pub(crate) fn check_key_transport(web: &ByokWeb, parts: &Parts) -> Result<(), ByokRejection> {
    if transport_is_secure(web, parts) {
        return Ok(());
    }
    let warning = "security warning: an API key was submitted over plain HTTP";
    if web.is_production() {
        Err(ByokRejection::insecure_transport()
            .for_request(&parts.headers)
            .at(full_path(parts))
            .with_note(format!(
                "; key refused: {warning}, and production requires HTTPS. Serve the app over \
                 TLS (ByokWebBuilder::served_over_tls), or behind a proxy that sets \
                 X-Forwarded-Proto (trust_forwarded_proto), or open it on localhost; \
                 for development on another address, use production(false)"
            )))
    } else {
        tracing::warn!(
            %warning,
            path = full_path(parts),
            "key accepted in development mode; production would refuse it"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use byok_core::{Byok, ByokConfig, Keyring, MasterKey};

    fn web(f: impl FnOnce(crate::ByokWebBuilder) -> crate::ByokWebBuilder) -> ByokWeb {
        let config = ByokConfig::for_tests();
        let byok = Byok::new(
            std::sync::Arc::new(byok_memory::MemoryStorage::new()),
            Keyring::new(1, MasterKey::generate()),
            config,
        )
        .unwrap();
        f(ByokWeb::builder(
            byok,
            crate::TrustedHeader::new("x-user".parse().unwrap()),
        ))
        .build()
        .unwrap()
    }

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
        let w = web(|b| b);
        let host = ("host", "app.test:8443");
        let ok = [
            vec![],
            vec![("sec-fetch-site", "same-origin")],
            vec![("sec-fetch-site", "none")],
            vec![host, ("origin", "https://app.test:8443")],
            vec![host, ("origin", "https://APP.test:8443")],
            vec![host, ("referer", "https://app.test:8443/settings?x=1")],
            // Sec-Fetch-Site decides when present.
            vec![
                host,
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://x.test"),
            ],
        ];
        for headers in ok {
            assert!(
                check_same_origin(&w, &parts(Method::POST, &headers)).is_ok(),
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
            vec![host, ("referer", "https://evil.test/page")],
            vec![host, ("referer", "https://app.test:8443.evil.test/")],
            vec![host, ("referer", "not a url")],
        ];
        for headers in refused {
            let r = check_same_origin(&w, &parts(Method::DELETE, &headers)).unwrap_err();
            assert_eq!(r.status(), axum::http::StatusCode::FORBIDDEN, "{headers:?}");
            assert_eq!(r.kind(), crate::RejectionKind::CrossSiteRequest);
        }
        // Reads are never refused.
        let cross = [("sec-fetch-site", "cross-site")];
        assert!(check_same_origin(&w, &parts(Method::GET, &cross)).is_ok());
    }

    #[test]
    fn trusted_origins_and_forwarded_host() {
        let w = web(|b| {
            b.trusted_origins(["https://Public.example/"])
                .trust_forwarded_host(true)
        });
        let internal = ("host", "10.0.0.5:3000");
        for headers in [
            vec![internal, ("origin", "https://public.example")],
            vec![internal, ("referer", "https://public.example/chat")],
            vec![
                internal,
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://public.example"),
            ],
            vec![
                internal,
                ("x-forwarded-host", "app.test"),
                ("origin", "https://app.test"),
            ],
        ] {
            assert!(
                check_same_origin(&w, &parts(Method::POST, &headers)).is_ok(),
                "{headers:?}"
            );
        }
        for headers in [
            vec![internal, ("origin", "https://public.example.evil.test")],
            vec![internal, ("origin", "http://public.example:8080")],
            vec![
                internal,
                ("x-forwarded-host", "app.test"),
                ("origin", "https://10.0.0.5:3000"),
            ],
        ] {
            assert!(
                check_same_origin(&w, &parts(Method::POST, &headers)).is_err(),
                "{headers:?}"
            );
        }
        // Without trust, X-Forwarded-Host is ignored.
        let w = web(|b| b);
        let headers = [
            internal,
            ("x-forwarded-host", "app.test"),
            ("origin", "https://app.test"),
        ];
        assert!(check_same_origin(&w, &parts(Method::POST, &headers)).is_err());
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:3000",
            "app.localhost:8080",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:3000",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "localhost.evil.test",
            "evillocalhost",
            "128.0.0.1",
            "10.0.0.1:3000",
            "[::2]:3000",
            "[::1",
            "example.test",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        let loop_parts = |headers: &[(&str, &str)]| is_loopback(&parts(Method::PUT, headers));
        assert!(loop_parts(&[("host", "127.0.0.1:3000")]));
        assert!(loop_parts(&[
            ("host", "localhost:3000"),
            ("origin", "http://localhost:3000")
        ]));
        assert!(!loop_parts(&[]));
        assert!(!loop_parts(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "http://public.example")
        ]));
        assert!(!loop_parts(&[
            ("host", "127.0.0.1:3000"),
            ("referer", "http://public.example/x")
        ]));
        assert!(!loop_parts(&[
            ("host", "127.0.0.1:3000"),
            ("x-forwarded-for", "203.0.113.9")
        ]));
        let mut p = parts(Method::PUT, &[("host", "127.0.0.1:3000")]);
        p.extensions
            .insert(ConnectInfo(SocketAddr::from(([203, 0, 113, 9], 5000))));
        assert!(!is_loopback(&p), "a remote peer");
        p.extensions
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 5000))));
        assert!(is_loopback(&p));
    }

    #[test]
    fn forwarded_proto_takes_the_nearest_proxy() {
        let p = parts(Method::PUT, &[("x-forwarded-proto", "https, http")]);
        assert_eq!(first_value(&p.headers, "x-forwarded-proto"), Some("https"));
        let p = parts(Method::PUT, &[]);
        assert_eq!(first_value(&p.headers, "x-forwarded-proto"), None);
    }
}
