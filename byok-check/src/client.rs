//! [`CheckClient`]: the one HTTP client of key checks, safe by construction.
//!
//! A settings page that checks keys against a URL its user typed must not
//! become a way to probe the application's own network, nor a way to leak
//! the key. So every request of a check goes through this client, which:
//!
//! * speaks `https` only, unless the [`CheckPolicy`] allows plain `http`;
//! * refuses loopback, private, link-local, shared (CGNAT), multicast and
//!   unspecified addresses unless allowed, both for IP literals and for the
//!   addresses a host name *resolves* to (a name that resolves to
//!   `127.0.0.1` is refused too), with the check made on the very
//!   addresses the connection then uses;
//! * follows at most three redirects, and only to the same scheme, host
//!   and port;
//! * uses no proxy (a proxy would resolve names where the check cannot see);
//! * gives up after a short timeout (10 s in all, 5 s to connect, unless
//!   set otherwise) and reads at most 1 MiB of a body;
//! * sends the key only in a header marked sensitive, never in a URL.
//!
//! TLS is rustls with the `ring` provider and Mozilla's root certificates
//! (`webpki-roots`), plus any root that the policy adds.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use url::{Host, Url};

use crate::classify::retry_after;
use crate::error::{CheckError, Result};
use crate::result::Unavailable;

/// What key checks may do on the network. The defaults suit a check of a
/// key that a user typed against a provider on the public Internet.
///
/// ```
/// use std::time::Duration;
/// use byok_check::CheckPolicy;
/// let policy = CheckPolicy::default().timeout(Duration::from_secs(5));
/// assert!(!policy.allows_http());
/// ```
#[derive(Debug, Clone)]
pub struct CheckPolicy {
    allow_http: bool,
    allow_private: bool,
    timeout: Duration,
    connect_timeout: Duration,
    max_body: usize,
    extra_roots: Vec<Vec<u8>>,
}

/// The default time limit of one check.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time limit of connecting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default size cap of a body: 1 MiB, more than any provider's list of
/// models.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

impl Default for CheckPolicy {
    fn default() -> Self {
        CheckPolicy {
            allow_http: false,
            allow_private: false,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            extra_roots: Vec::new(),
        }
    }
}

impl CheckPolicy {
    /// Allows plain `http` URLs (a local gateway, tests). The key then
    /// crosses the network in clear text.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Allows loopback, private and link-local addresses (a self-hosted
    /// model server on the app's own network, tests).
    pub fn allow_private_addresses(mut self, allow: bool) -> Self {
        self.allow_private = allow;
        self
    }

    /// The time limit of one check, body included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The time limit of connecting.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The most bytes of a body that are read; a larger answer is
    /// classified by its status alone.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body = max;
        self
    }

    /// Trusts one more root certificate (DER), beside Mozilla's: a
    /// company's own CA, or a test server's.
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.extra_roots.push(der.into());
        self
    }

    /// Whether plain `http` is allowed.
    pub fn allows_http(&self) -> bool {
        self.allow_http
    }

    /// Whether private and loopback addresses are allowed.
    pub fn allows_private_addresses(&self) -> bool {
        self.allow_private
    }

    /// Checks a URL before anything is sent: scheme, credentials, and an
    /// address written as an IP literal. Host names are checked when they
    /// are resolved.
    pub fn check_url(&self, url: &Url) -> Result<()> {
        let target = url.host_str().unwrap_or("").to_owned();
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(CheckError::refused(target, "plain http is not allowed")),
            _ => {
                return Err(CheckError::refused(
                    target,
                    "only http(s) URLs can be checked",
                ));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CheckError::refused(target, "the URL carries credentials"));
        }
        let ip = match url.host() {
            None => return Err(CheckError::refused(target, "the URL has no host")),
            Some(Host::Domain(_)) => return Ok(()),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        };
        if !self.allow_private && !is_public(ip) {
            return Err(CheckError::refused(target, NOT_PUBLIC));
        }
        Ok(())
    }
}

const NOT_PUBLIC: &str = "the address is private, loopback or link-local";

/// Whether an address is one that a check may reach without
/// [`CheckPolicy::allow_private_addresses`].
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                // Shared address space (carrier-grade NAT), 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
                // IETF protocol assignments, 192.0.0.0/24.
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                // Benchmarking, 198.18.0.0/15; reserved, 240.0.0.0/4.
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let first = segments[0];
            // An address that carries an IPv4 one is judged by it: the
            // deprecated IPv4-compatible ::a.b.c.d, and 6to4 (2002::/16),
            // whose relay could lead to a private IPv4 address.
            if segments[..6] == [0; 6] && !(v6.is_loopback() || v6.is_unspecified()) {
                return false;
            }
            if first == 0x2002 {
                let [hi, lo] = [segments[1], segments[2]];
                let v4 =
                    std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                // NAT64 (64:ff9b::/96) could reach an IPv4 private address;
                // documentation, 2001:db8::/32; site-local, fec0::/10.
                || first == 0x64
                || (first == 0x2001 && v6.segments()[1] == 0xdb8)
                || (first & 0xffc0) == 0xfec0)
        }
    }
}

/// The resolver error when every address of a name is refused.
#[derive(Debug, thiserror::Error)]
#[error("{NOT_PUBLIC}")]
struct AddressRefused;

/// The resolver error when a name does not resolve.
#[derive(Debug, thiserror::Error)]
#[error("the host name did not resolve")]
struct DnsFailed(#[source] std::io::Error);

/// The redirect error when a redirect leaves the first host.
#[derive(Debug, thiserror::Error)]
#[error("a redirect to another host, scheme or port")]
struct RedirectRefused;

/// Resolves with the system's resolver, then drops every address the
/// policy refuses, so that the connection uses only checked addresses.
#[derive(Debug)]
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(DnsFailed)?
                .collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(AddressRefused) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client of key checks. Cloning is cheap and clones share
/// connections.
///
/// ```
/// use byok_check::{CheckClient, CheckPolicy};
/// let client = CheckClient::new(CheckPolicy::default())?;
/// assert!(!client.policy().allows_http());
/// # Ok::<(), byok_check::CheckError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CheckClient {
    http: reqwest::Client,
    policy: Arc<CheckPolicy>,
}

/// A request of a probe. The key goes in through
/// [`secret_header`](Self::secret_header) only.
#[derive(Debug)]
pub struct ProbeRequest {
    method: reqwest::Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

impl ProbeRequest {
    /// A `GET` of `url`.
    pub fn get(url: Url) -> Self {
        ProbeRequest {
            method: reqwest::Method::GET,
            url,
            headers: HeaderMap::new(),
            body: None,
        }
    }

    /// A `POST` of a JSON body to `url`.
    pub fn post_json(url: Url, body: &serde_json::Value) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        ProbeRequest {
            method: reqwest::Method::POST,
            url,
            headers,
            body: Some(body.to_string().into_bytes()),
        }
    }

    /// Adds a header that is not secret.
    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        self
    }

    /// Adds the key as a header marked sensitive, after `prefix` (such as
    /// `"Bearer "`). Fails, naming neither the key nor its content, when
    /// the key cannot be sent as a header value.
    pub fn secret_header(
        mut self,
        name: &'static str,
        prefix: &str,
        key: &SecretString,
    ) -> Result<Self> {
        let key = byok_core::validate::api_key(key.expose_secret())
            .map_err(byok_core::ByokError::from)?;
        let unsendable = || {
            CheckError::Byok(byok_core::ByokError::from(byok_core::InvalidInput::new(
                byok_core::error::Field::ApiKey,
                byok_core::error::Problem::Other(
                    "no provider key holds spaces or characters outside ASCII",
                ),
            )))
        };
        // HTTP would send other bytes as they are; no provider's keys have
        // them, so such a key is a paste error, not something to send.
        if !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(unsendable());
        }
        let mut value =
            HeaderValue::from_str(&format!("{prefix}{key}")).map_err(|_| unsendable())?;
        value.set_sensitive(true);
        self.headers.insert(HeaderName::from_static(name), value);
        Ok(self)
    }

    /// The URL (which never holds the key).
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// What came back from a provider.
#[derive(Debug)]
#[non_exhaustive]
pub enum Reply {
    /// An answer.
    Answer {
        /// Its status.
        status: u16,
        /// The wait its headers asked for.
        retry_after: Option<Duration>,
        /// Its body, or `None` when over the cap or cut off.
        body: Option<Vec<u8>>,
    },
    /// No answer.
    Failed(Unavailable),
}

impl CheckClient {
    /// A client that follows `policy`.
    pub fn new(policy: CheckPolicy) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for der in &policy.extra_roots {
            roots
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| CheckError::Client(Box::new(e)))?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CheckError::Client(Box::new(e)))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];

        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first();
            let same = first.is_some_and(|f| {
                f.scheme() == attempt.url().scheme()
                    && f.host_str() == attempt.url().host_str()
                    && f.port_or_known_default() == attempt.url().port_or_known_default()
            });
            if !same {
                attempt.error(RedirectRefused)
            } else if attempt.previous().len() > 3 {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .no_proxy()
            .redirect(redirects)
            .referer(false)
            .timeout(policy.timeout)
            .connect_timeout(policy.connect_timeout)
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: policy.allow_private,
            }))
            .user_agent(concat!("byok-check/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CheckError::Client(Box::new(e.without_url())))?;
        Ok(CheckClient {
            http,
            policy: Arc::new(policy),
        })
    }

    /// The policy this client follows.
    pub fn policy(&self) -> &CheckPolicy {
        &self.policy
    }

    /// Sends `request` under the policy and reads the answer, at most
    /// [`CheckPolicy::max_body_bytes`] of it. A refused address is an
    /// error; a provider that cannot be reached is a [`Reply::Failed`].
    pub async fn send(&self, request: ProbeRequest) -> Result<Reply> {
        self.policy.check_url(&request.url)?;
        let target = request.url.host_str().unwrap_or("").to_owned();
        let mut builder = self
            .http
            .request(request.method, request.url)
            .headers(request.headers);
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return failure(&e, target).map(Reply::Failed),
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let wait = retry_after(
            header("retry-after").as_deref(),
            header("retry-after-ms").as_deref(),
        );
        let cap = self.policy.max_body;
        if response.content_length().is_some_and(|n| n > cap as u64) {
            return Ok(Reply::Answer {
                status,
                retry_after: wait,
                body: None,
            });
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > cap {
                        return Ok(Reply::Answer {
                            status,
                            retry_after: wait,
                            body: None,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Ok(Reply::Failed(Unavailable::Timeout)),
                Err(_) => {
                    return Ok(Reply::Answer {
                        status,
                        retry_after: wait,
                        body: None,
                    });
                }
            }
        }
        Ok(Reply::Answer {
            status,
            retry_after: wait,
            body: Some(body),
        })
    }
}

/// Sorts a failed request into a refusal (an error) or an unreachable
/// provider, from the causes in the error's chain.
fn failure(e: &reqwest::Error, target: String) -> Result<Unavailable> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    let mut dns = false;
    while let Some(c) = cause {
        if c.is::<AddressRefused>() {
            return Err(CheckError::refused(target, NOT_PUBLIC));
        }
        if c.is::<RedirectRefused>() {
            return Err(CheckError::refused(
                target,
                "it redirected to another host, scheme or port",
            ));
        }
        dns |= c.is::<DnsFailed>();
        cause = c.source();
    }
    Ok(if e.is_timeout() {
        Unavailable::Timeout
    } else if dns {
        Unavailable::Dns
    } else {
        Unavailable::Connect
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_private_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "192.0.0.1",
            "::7f00:1",
            "::a00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!is_public(ip), "{private} was taken as public");
        }
        for public in [
            "1.1.1.1",
            "104.18.6.192",
            "2606:4700::1111",
            "2002:101:101::1",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(is_public(ip), "{public} was taken as private");
        }
    }

    #[test]
    fn urls_are_checked_before_sending() {
        let strict = CheckPolicy::default();
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(strict.check_url(&url("https://api.openai.com/v1")).is_ok());
        for refused in [
            "http://api.openai.com/v1",
            "https://127.0.0.1/v1",
            "https://[::1]/v1",
            "https://169.254.169.254/latest",
            "https://user:pw@api.openai.com/v1",
            "ftp://api.openai.com/",
        ] {
            assert!(
                matches!(
                    strict.check_url(&url(refused)),
                    Err(CheckError::Refused { .. })
                ),
                "{refused} was allowed"
            );
        }
        let loose = CheckPolicy::default()
            .allow_http(true)
            .allow_private_addresses(true);
        assert!(loose.check_url(&url("http://127.0.0.1:8080/v1")).is_ok());
    }
}
