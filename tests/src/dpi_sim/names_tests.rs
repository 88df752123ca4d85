use super::*;
use crate::tls_client::client_hello;

#[test]
fn whole_client_hello_yields_its_sni() {
    let hello = client_hello("Blocked.Test");
    assert_eq!(scan(&hello), Scan::Name(Proto::Tls, "blocked.test".into()));
    assert_eq!(first_record_len(&hello), Some(hello.len()));
}

#[test]
fn client_hello_cut_inside_the_sni_is_partial() {
    let hello = client_hello("blocked.test");
    let at = hello
        .windows(7)
        .position(|w| w == b"blocked")
        .expect("the name is in the ClientHello");
    assert_eq!(scan(&hello[..at + 3]), Scan::Partial(Proto::Tls));
    assert_eq!(scan(&hello[..1]), Scan::Partial(Proto::Tls));
    // The second part starts mid-record: nothing to see.
    assert_eq!(scan(&hello[at + 3..]), Scan::Other);
}

#[test]
fn client_hello_cut_after_the_sni_still_yields_it() {
    let hello = client_hello("blocked.test");
    let end = hello
        .windows(12)
        .position(|w| w == b"blocked.test")
        .expect("the name is in the ClientHello")
        + 12;
    assert_eq!(
        scan(&hello[..end]),
        Scan::Name(Proto::Tls, "blocked.test".into())
    );
}

#[test]
fn http_host_counts_only_when_its_line_is_complete() {
    let request = b"GET / HTTP/1.1\r\nUser-Agent: t\r\nHost: Blocked.test:80\r\n\r\n";
    assert_eq!(
        scan(request),
        Scan::Name(Proto::Http, "blocked.test".into())
    );
    let cut = request.len() - 8;
    assert_eq!(scan(&request[..cut]), Scan::Partial(Proto::Http));
    assert_eq!(
        scan(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
        Scan::NoName(Proto::Http)
    );
    assert_eq!(scan(b"\x00\x01binary"), Scan::Other);
}

#[test]
fn blocklist_matches_the_name_and_its_subdomains_only() {
    let list = Blocklist::new(["blocked.test".to_string()]);
    assert_eq!(list.matching("blocked.test"), Some("blocked.test"));
    assert_eq!(list.matching("www.blocked.test"), Some("blocked.test"));
    assert_eq!(list.matching("notblocked.test"), None);
    assert_eq!(list.matching("allowed.test"), None);
}
