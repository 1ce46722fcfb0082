//! TLS: building clients for `rediss://` URLs, and telling a refused
//! certificate from an unreachable server.

use byok_core::error::ConfigError;

use crate::options::RedisOptions;

/// Whether `url` asks for TLS.
pub(crate) fn is_tls_url(url: &str) -> bool {
    let lower = url
        .trim_start()
        .get(..7)
        .unwrap_or(url)
        .to_ascii_lowercase();
    lower.starts_with("rediss")
}

/// A client for one server, with the certificate authorities of `options`.
pub(crate) fn client(url: &str, options: &RedisOptions) -> Result<redis::Client, ConfigError> {
    if is_tls_url(url) {
        prepare()?;
    }
    let opened = match options.root_certificates() {
        None => redis::Client::open(url),
        #[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
        Some(pem) => redis::Client::build_with_tls(url, certificates(pem)),
        #[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
        Some(_) => return Err(no_tls_feature()),
    };
    opened.map_err(|e| {
        let message =
            if is_tls_url(url) && !cfg!(any(feature = "tls-rustls", feature = "tls-native-tls")) {
                "the Redis URL is not usable: rediss:// needs a TLS feature of byok-redis \
             (tls, tls-rustls or tls-native-tls)"
            } else {
                "the Redis URL is not usable"
            };
        ConfigError::new(message).with_source(e)
    })
}

/// The cluster builder's TLS settings from `options`.
#[cfg(feature = "cluster")]
pub(crate) fn cluster_builder(
    builder: redis::cluster::ClusterClientBuilder,
    urls: &[&str],
    options: &RedisOptions,
) -> Result<redis::cluster::ClusterClientBuilder, ConfigError> {
    if urls.iter().any(|u| is_tls_url(u)) {
        prepare()?;
    }
    match options.root_certificates() {
        None => Ok(builder),
        // The redis crate takes a cluster's certificates through rustls only.
        #[cfg(feature = "tls-rustls")]
        Some(pem) => Ok(builder.certs(certificates(pem))),
        #[cfg(not(feature = "tls-rustls"))]
        Some(_) => Err(ConfigError::new(
            "RedisOptions::with_root_certificates needs the tls-rustls feature of byok-redis \
             for a Redis Cluster",
        )),
    }
}

#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

#[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
fn no_tls_feature() -> ConfigError {
    ConfigError::new(
        "RedisOptions::with_root_certificates needs a TLS feature of byok-redis \
         (tls, tls-rustls or tls-native-tls)",
    )
}

/// Makes rustls usable: it needs a process-wide crypto provider, which is
/// ambiguous when several crates enable different ones. Installs `ring`'s
/// unless the application installed one.
fn prepare() -> Result<(), ConfigError> {
    #[cfg(feature = "tls-rustls")]
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    #[cfg(not(any(feature = "tls-rustls", feature = "tls-native-tls")))]
    return Err(ConfigError::new(
        "rediss:// needs a TLS feature of byok-redis (tls, tls-rustls or tls-native-tls)",
    ));
    #[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
    Ok(())
}

/// Whether a failed connection was a TLS handshake that refused the
/// server's certificate (an untrusted authority, a wrong host name, an
/// expired certificate), rather than a server out of reach.
pub(crate) fn is_certificate_error(e: &redis::RedisError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        #[cfg(feature = "tls-rustls")]
        if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>() {
            return true;
        }
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("certificate verify failed") || text.contains("invalid peer certificate") {
            return true;
        }
        source = err.source();
    }
    false
}
