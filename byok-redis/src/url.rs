//! Storage URLs: one server, a Unix socket, or the seed nodes of a cluster.

use std::fmt;

use byok_core::error::ConfigError;

/// Where a storage URL points: one server, or the nodes of a cluster. Made
/// by [`parse_urls`].
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RedisUrls {
    urls: Vec<String>,
    cluster: bool,
}

impl RedisUrls {
    /// The URL of each node: `redis://`, `rediss://`, or for one server on
    /// a Unix socket `redis+unix://` or `unix://`.
    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Whether these are the nodes of a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }
}

impl fmt::Debug for RedisUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrls")
            .field("nodes", &describe_nodes(&self.urls))
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Parses a storage URL for Redis.
///
/// * `redis://…` or `rediss://…`: one server.
/// * `redis+unix:///path/to/socket` (also `unix://`): one server on a Unix
///   socket.
/// * `redis+cluster://[user:password@]host1:port1,host2:port2[/]` (also
///   `rediss+cluster://`, `redis-cluster://`): the seed nodes of a cluster,
///   sharing the credentials.
/// * Several `redis://` or `rediss://` URLs separated by commas: the seed
///   nodes of a cluster. Commas separate nodes only when every part starts
///   with `redis://` or `rediss://`; otherwise the whole string is one URL,
///   so a password may hold a comma (percent-encoding it as `%2C` is
///   never ambiguous).
///
/// Errors never repeat the URL, which may hold a password.
///
pub(crate) fn parse_urls(url: &str) -> Result<RedisUrls, ConfigError> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        ConfigError::new(
            "a Redis URL must start with redis://, rediss://, redis+unix:// or redis+cluster://",
        )
    })?;
    let scheme = scheme.to_ascii_lowercase();
    let cluster_scheme = match scheme.as_str() {
        "redis+cluster" | "redis-cluster" => Some("redis"),
        "rediss+cluster" | "rediss-cluster" => Some("rediss"),
        "redis" | "rediss" => None,
        "redis+unix" | "unix" => {
            check_socket_url(url)?;
            return Ok(RedisUrls {
                urls: vec![url.to_owned()],
                cluster: false,
            });
        }
        _ => {
            return Err(ConfigError::new(
                "a Redis URL must start with redis://, rediss://, redis+unix:// or redis+cluster://",
            ));
        }
    };
    if let Some(node_scheme) = cluster_scheme {
        let rest = rest.trim_end_matches('/');
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (Some(auth), hosts),
            None => (None, rest),
        };
        let urls: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| match auth {
                Some(a) => format!("{node_scheme}://{a}@{h}"),
                None => format!("{node_scheme}://{h}"),
            })
            .collect();
        if urls.is_empty() || hosts.contains('/') {
            return Err(ConfigError::new(
                "a redis+cluster:// URL must list host:port pairs separated by commas",
            ));
        }
        for u in &urls {
            check_url(u)?;
        }
        return Ok(RedisUrls {
            urls,
            cluster: true,
        });
    }
    let parts: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let is_node = |u: &str| {
        let lower = u.get(..9).unwrap_or(u).to_ascii_lowercase();
        lower.starts_with("redis://") || lower.starts_with("rediss://")
    };
    if url.contains(',') && !parts.is_empty() && parts.iter().all(|u| is_node(u)) {
        for u in &parts {
            check_url(u)?;
        }
        let cluster = parts.len() > 1;
        return Ok(RedisUrls {
            urls: parts.into_iter().map(str::to_owned).collect(),
            cluster,
        });
    }
    check_url(url).map_err(|e| {
        if url.contains(',') {
            ConfigError::new(
                "a Redis URL could not be parsed (to list the nodes of a cluster, start every \
                 comma-separated part with redis:// or rediss://, or use redis+cluster://)",
            )
        } else {
            e
        }
    })?;
    Ok(RedisUrls {
        urls: vec![url.to_owned()],
        cluster: false,
    })
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    match url::Url::parse(url) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => Err(ConfigError::new("a Redis URL must name a host")),
        Err(e) => Err(ConfigError::new("a Redis URL could not be parsed").with_source(e)),
    }
}

fn check_socket_url(url: &str) -> Result<(), ConfigError> {
    match url::Url::parse(url) {
        Ok(u) if u.path().len() > 1 => Ok(()),
        Ok(_) => Err(ConfigError::new(
            "a redis+unix:// URL must name the socket's path",
        )),
        Err(e) => Err(ConfigError::new("a Redis URL could not be parsed").with_source(e)),
    }
}

/// `host:port` of each URL, without credentials.
pub(crate) fn describe_nodes<S: AsRef<str>>(urls: &[S]) -> Vec<String> {
    urls.iter()
        .map(|u| match url::Url::parse(u.as_ref()) {
            Ok(p) => match p.host_str() {
                Some(h) if !h.is_empty() => {
                    format!("{h}:{}", p.port().unwrap_or(6379))
                }
                _ => format!("{}:<local>", p.scheme()),
            },
            Err(_) => "<unparsable URL>".to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_for_one_server_and_for_clusters() {
        let one = parse_urls("redis://:secret@127.0.0.1:6379/2").unwrap();
        assert!(!one.is_cluster());
        assert_eq!(one.urls(), ["redis://:secret@127.0.0.1:6379/2"]);

        let list = parse_urls("redis://a:1, redis://b:2,redis://c:3").unwrap();
        assert!(list.is_cluster());
        assert_eq!(list.urls().len(), 3);

        let c = parse_urls("rediss+cluster://u:pw@h1:7000,h2:7001/").unwrap();
        assert!(c.is_cluster());
        assert_eq!(c.urls(), ["rediss://u:pw@h1:7000", "rediss://u:pw@h2:7001"]);

        for bad in [
            "",
            "h1:7000",
            "http://x",
            "redis+cluster://",
            "redis://a:1,http://b",
            "redis://a:1, b:2",
            "redis+unix://",
            "unix:///",
        ] {
            assert!(parse_urls(bad).is_err(), "{bad:?}");
        }
        let hint = parse_urls("redis://a:1, b:2").unwrap_err();
        assert!(hint.to_string().contains("redis+cluster://"), "{hint}");
        let e = parse_urls("ftp://u:hunter2@h").unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        assert!(!format!("{c:?}").contains("pw"), "{c:?}");
    }

    #[test]
    fn commas_split_only_lists_of_urls() {
        // A password with a comma, unencoded: one server.
        let one = parse_urls("redis://user:p,a,ss@db:6379/1").unwrap();
        assert!(!one.is_cluster());
        assert_eq!(one.urls(), ["redis://user:p,a,ss@db:6379/1"]);
        let c = redis::Client::open(one.urls()[0].as_str()).unwrap();
        assert_eq!(
            c.get_connection_info().redis_settings().password(),
            Some("p,a,ss")
        );

        // Every part a URL: the nodes of a cluster, whatever their case.
        let list = parse_urls("REDIS://a:1,rediss://b:2").unwrap();
        assert!(list.is_cluster());
        assert_eq!(list.urls(), ["REDIS://a:1", "rediss://b:2"]);

        // A trailing comma after one URL: still one server.
        let trailing = parse_urls("redis://a:1,").unwrap();
        assert!(!trailing.is_cluster());
        assert_eq!(trailing.urls(), ["redis://a:1"]);
    }

    #[test]
    fn unix_socket_urls_name_one_server() {
        for url in [
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock?db=2",
        ] {
            let parsed = parse_urls(url).unwrap();
            assert!(!parsed.is_cluster(), "{url}");
            assert_eq!(parsed.urls(), [url]);
            assert!(redis::Client::open(url).is_ok(), "{url}");
        }
        // A comma in a socket path is part of the path.
        let odd = parse_urls("redis+unix:///tmp/a,b.sock").unwrap();
        assert_eq!(odd.urls(), ["redis+unix:///tmp/a,b.sock"]);
    }

    #[test]
    fn debug_of_nodes_has_no_credentials() {
        let d = describe_nodes(&["redis://user:hunter2@db.example:6380/0", "rediss://h"]);
        assert_eq!(d, ["db.example:6380", "h:6379"]);
    }
}
