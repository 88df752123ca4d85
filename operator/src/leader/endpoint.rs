//! Where the leader serves its HTTP API, as written on the Lease: the
//! annotation [`ENDPOINT_ANNOTATION`] holds a base URL such as
//! `http://10.0.0.7:7070`. The holder writes it with every take-over and
//! renewal (and removes it when it has none to advertise, or releases the
//! Lease), so followers can hand `/v1/` requests to it.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::coordination::v1::Lease;
use reqwest::Url;

/// The Lease annotation naming the holder's API base URL.
pub const ENDPOINT_ANNOTATION: &str = "veil.dev/endpoint";

/// The URL this replica advertises: `flag` (`--advertise-url`) if given;
/// else `https://$POD_IP:<listen port>` when `pod_ip` is an IP address;
/// else `https://<listen>` when `listen` names a specific address (not
/// `0.0.0.0` or `::`); else none (followers then answer 503). `http://`
/// instead when the API serves plain HTTP (`https` false).
pub fn advertised(
    flag: Option<&Url>,
    listen: SocketAddr,
    pod_ip: Option<&str>,
    https: bool,
) -> Option<Url> {
    if let Some(url) = flag {
        return Some(url.clone());
    }
    let pod_ip = pod_ip.map(str::trim).filter(|ip| !ip.is_empty());
    let address = match pod_ip.map(str::parse::<IpAddr>) {
        Some(Ok(ip)) => SocketAddr::new(ip, listen.port()),
        Some(Err(_)) => {
            tracing::warn!(pod_ip = ?pod_ip, "POD_IP is not an IP address; ignored");
            listen
        }
        None => listen,
    };
    if address.ip().is_unspecified() {
        return None;
    }
    let scheme = if https { "https" } else { "http" };
    Url::parse(&format!("{scheme}://{address}")).ok()
}

/// The endpoint a Lease advertises, if it names a usable `http(s)` URL.
pub fn read(lease: &Lease) -> Option<Url> {
    let value = lease
        .metadata
        .annotations
        .as_ref()?
        .get(ENDPOINT_ANNOTATION)?;
    match Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        _ => {
            tracing::debug!(value = %value, "the Lease's endpoint annotation is not an http(s) URL; ignored");
            None
        }
    }
}

/// Sets (or, with `None`, removes) the endpoint annotation on `lease`.
pub fn write(lease: &mut Lease, endpoint: Option<&Url>) {
    match endpoint {
        Some(url) => {
            lease
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(ENDPOINT_ANNOTATION.to_owned(), url.to_string());
        }
        None => {
            if let Some(annotations) = lease.metadata.annotations.as_mut() {
                annotations.remove(ENDPOINT_ANNOTATION);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn listen(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_flag_wins_then_pod_ip_then_a_specific_listen_address() {
        let flag = Url::parse("https://veil-0.veil:7443/").unwrap();
        assert_eq!(
            advertised(Some(&flag), listen("0.0.0.0:7070"), Some("10.1.2.3"), false),
            Some(flag)
        );
        assert_eq!(
            advertised(None, listen("0.0.0.0:7070"), Some("10.1.2.3"), false)
                .unwrap()
                .as_str(),
            "http://10.1.2.3:7070/"
        );
        assert_eq!(
            advertised(None, listen("[::]:7070"), Some("fd00::7"), false)
                .unwrap()
                .as_str(),
            "http://[fd00::7]:7070/"
        );
        assert_eq!(
            advertised(None, listen("127.0.0.1:9000"), None, false)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(
            advertised(None, listen("0.0.0.0:7070"), Some("10.1.2.3"), true)
                .unwrap()
                .as_str(),
            "https://10.1.2.3:7070/"
        );
    }

    #[test]
    fn an_unspecified_listen_address_without_pod_ip_advertises_nothing() {
        assert_eq!(advertised(None, listen("0.0.0.0:7070"), None, false), None);
        assert_eq!(advertised(None, listen("[::]:7070"), Some(""), false), None);
        assert_eq!(
            advertised(None, listen("0.0.0.0:7070"), Some("not-an-ip"), false),
            None
        );
    }

    #[test]
    fn the_annotation_round_trips_and_bad_values_are_ignored() {
        let mut lease = Lease::default();
        assert_eq!(read(&lease), None);
        let url = Url::parse("http://10.1.2.3:7070/").unwrap();
        write(&mut lease, Some(&url));
        assert_eq!(read(&lease), Some(url));
        write(&mut lease, None);
        assert_eq!(read(&lease), None);
        for bad in ["", "10.1.2.3:7070", "ftp://x/", "not a url"] {
            lease
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(ENDPOINT_ANNOTATION.to_owned(), bad.to_owned());
            assert_eq!(read(&lease), None, "{bad:?}");
        }
    }
}
