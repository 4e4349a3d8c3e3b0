//! The hubs a run talks to: `--url` (the scorekeeper node, where games are
//! created, events posted and states read) and the `--fan-url` nodes fans
//! connect to, each checked and turned into an HTTP and a WebSocket base.
//!
//! Every URL must point at this machine (loopback) unless `--allow-remote` is
//! given: a load test aimed at someone else's server by a typo is an attack.

use std::net::IpAddr;

use anyhow::{Context, Result, bail, ensure};

/// One hub's addresses, both without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HubUrls {
    /// `http://host:port`: the HTTP API (health, state reads).
    pub(crate) http: String,
    /// `ws://host:port`: where `/v1/ws` is, and the key of the node in the report.
    pub(crate) ws: String,
}

/// Checks `--url`: plain `http://`, a base URL, on this machine unless
/// `allow_remote`.
pub(crate) fn scorekeeper_url(url: &str, allow_remote: bool) -> Result<HubUrls> {
    hub_urls("--url", url, &["http"], allow_remote)
}

/// Checks every `--fan-url` (`ws://` or `http://`; the other scheme is derived)
/// and returns the nodes fans are spread over, in the order given. Without any
/// `--fan-url`, fans go to the scorekeeper node.
pub(crate) fn fan_nodes(
    fan_urls: &[String],
    scorekeeper: &HubUrls,
    allow_remote: bool,
) -> Result<Vec<HubUrls>> {
    if fan_urls.is_empty() {
        return Ok(vec![scorekeeper.clone()]);
    }
    let mut nodes: Vec<HubUrls> = Vec::with_capacity(fan_urls.len());
    for url in fan_urls {
        let node = hub_urls("--fan-url", url, &["ws", "http"], allow_remote)?;
        ensure!(
            !nodes.contains(&node),
            "--fan-url {url:?} is given twice (as {}); name each node once",
            node.ws
        );
        nodes.push(node);
    }
    Ok(nodes)
}

/// Checks one hub URL given with `flag` and derives both bases from it.
fn hub_urls(flag: &str, url: &str, schemes: &[&str], allow_remote: bool) -> Result<HubUrls> {
    let parsed =
        reqwest::Url::parse(url).with_context(|| format!("{flag} {url:?} is not a URL"))?;
    let allowed: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
    ensure!(
        schemes.contains(&parsed.scheme()),
        "{flag} {url:?}: only {} is supported (the load test speaks plain HTTP and ws://)",
        allowed.join(" or ")
    );
    ensure!(
        parsed.query().is_none() && parsed.fragment().is_none(),
        "{flag} {url:?}: give the base URL only, without ?query or #fragment"
    );
    let host = parsed
        .host_str()
        .with_context(|| format!("{flag} {url:?} has no host"))?;
    if !allow_remote && !is_loopback(host) {
        bail!(
            "{flag} {url:?} is not on this machine; pass --allow-remote to load a remote hub \
             (make sure you may)"
        );
    }
    let base = parsed.as_str().trim_end_matches('/');
    ensure!(
        !base.ends_with("/v1/ws"),
        "{flag} {url:?}: give the hub's base URL (scheme://host:port), not its /v1/ws endpoint"
    );
    // The scheme is one of `http` and `ws`, so the rest of the URL is the same
    // for both; only the prefix changes.
    let rest = &base[parsed.scheme().len()..];
    Ok(HubUrls {
        http: format!("http{rest}"),
        ws: format!("ws{rest}"),
    })
}

/// True for `localhost` and loopback IP addresses (`[::1]` included).
fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::{HubUrls, fan_nodes, is_loopback, scorekeeper_url};

    fn hub(http: &str, ws: &str) -> HubUrls {
        HubUrls {
            http: http.into(),
            ws: ws.into(),
        }
    }

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn only_loopback_hubs_unless_allowed() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("[::1]"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("10.0.0.1"));
        assert!(scorekeeper_url("http://example.com:8080", false).is_err());
        assert!(scorekeeper_url("http://example.com:8080", true).is_ok());
        assert!(scorekeeper_url("https://127.0.0.1:8080", false).is_err());
    }

    #[test]
    fn websocket_base_follows_the_http_base() {
        let urls = scorekeeper_url("http://127.0.0.1:8080/", false).expect("valid");
        assert_eq!(urls, hub("http://127.0.0.1:8080", "ws://127.0.0.1:8080"));
    }

    #[test]
    fn the_scorekeeper_url_is_http_only() {
        let err = scorekeeper_url("ws://127.0.0.1:8080", false).expect_err("ws:// refused");
        assert!(err.to_string().starts_with("--url "), "{err}");
        assert!(scorekeeper_url("http://127.0.0.1:8080/?x=1", false).is_err());
    }

    #[test]
    fn fans_use_the_scorekeeper_node_without_fan_urls() {
        let sk = scorekeeper_url("http://127.0.0.1:8080", false).expect("valid");
        let nodes = fan_nodes(&[], &sk, false).expect("valid");
        assert_eq!(nodes, vec![sk]);
    }

    #[test]
    fn fan_urls_take_ws_or_http_and_keep_their_order() {
        let sk = scorekeeper_url("http://127.0.0.1:8080", false).expect("valid");
        let nodes = fan_nodes(
            &urls(&[
                "ws://127.0.0.1:8081/",
                "http://[::1]:8082",
                "ws://localhost:8080",
            ]),
            &sk,
            false,
        )
        .expect("valid");
        assert_eq!(
            nodes,
            vec![
                hub("http://127.0.0.1:8081", "ws://127.0.0.1:8081"),
                hub("http://[::1]:8082", "ws://[::1]:8082"),
                hub("http://localhost:8080", "ws://localhost:8080"),
            ]
        );
    }

    #[test]
    fn fan_urls_follow_the_loopback_rule() {
        let sk = scorekeeper_url("http://127.0.0.1:8080", false).expect("valid");
        let remote = urls(&["ws://127.0.0.1:8081", "ws://10.0.0.2:8080"]);
        let err = fan_nodes(&remote, &sk, false).expect_err("remote refused");
        let text = err.to_string();
        assert!(text.contains("--fan-url \"ws://10.0.0.2:8080\""), "{text}");
        assert!(text.contains("--allow-remote"), "{text}");
        assert_eq!(fan_nodes(&remote, &sk, true).expect("allowed").len(), 2);
    }

    #[test]
    fn bad_fan_urls_are_refused_clearly() {
        let sk = scorekeeper_url("http://127.0.0.1:8080", false).expect("valid");
        for (url, says) in [
            ("wss://127.0.0.1:8081", "only ws:// or http://"),
            ("https://127.0.0.1:8081", "only ws:// or http://"),
            ("localhost:8081", "only ws:// or http://"),
            ("127.0.0.1:8081", "is not a URL"),
            ("ws://127.0.0.1:8081/v1/ws", "not its /v1/ws endpoint"),
            ("ws://127.0.0.1:8081/?games=lt:g1", "without ?query"),
        ] {
            let err = fan_nodes(&urls(&[url]), &sk, false).expect_err(url);
            let text = err.to_string();
            assert!(text.starts_with("--fan-url "), "{url}: {text}");
            assert!(text.contains(says), "{url}: {text}");
        }
    }

    #[test]
    fn a_fan_node_named_twice_is_refused() {
        let sk = scorekeeper_url("http://127.0.0.1:8080", false).expect("valid");
        let twice = urls(&["ws://127.0.0.1:8081", "http://127.0.0.1:8081/"]);
        let err = fan_nodes(&twice, &sk, false).expect_err("duplicate");
        assert!(err.to_string().contains("given twice"), "{err}");
    }
}
