//! The smallest SOCKS5 client a probe needs (RFC 1928): no authentication,
//! `CONNECT` to a host *name* so the proxy resolves it (remote DNS — a
//! VLESS Strategy's probe must not leak the lookup to the local network).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why the proxy did not connect.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SocksError {
    #[error("the SOCKS proxy does not offer `no authentication`")]
    NoAcceptableMethod,
    #[error("the SOCKS proxy answered out of protocol")]
    Protocol,
    #[error("the host name is longer than 255 bytes")]
    NameTooLong,
    /// The proxy's reply code (1 general failure … 8 address type).
    #[error("the SOCKS proxy could not connect: {}", reply_text(*.0))]
    Refused(u8),
}

/// The reply code's meaning (RFC 1928 §6).
fn reply_text(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "not allowed by its rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown reply",
    }
}

/// Asks the proxy on `stream` to connect to `host:port`; on `Ok` the
/// stream carries the target's bytes.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    port: u16,
) -> io::Result<Result<(), SocksError>> {
    let name = host.as_bytes();
    let Ok(len) = u8::try_from(name.len()) else {
        return Ok(Err(SocksError::NameTooLong));
    };
    stream.write_all(&[5, 1, 0]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice[0] != 5 {
        return Ok(Err(SocksError::Protocol));
    }
    if choice[1] != 0 {
        return Ok(Err(SocksError::NoAcceptableMethod));
    }
    let mut request = Vec::with_capacity(7 + name.len());
    request.extend_from_slice(&[5, 1, 0, 3, len]);
    request.extend_from_slice(name);
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Ok(Err(SocksError::Protocol));
    }
    if head[1] != 0 {
        return Ok(Err(SocksError::Refused(head[1])));
    }
    // The bound address, which a CONNECT client ignores.
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            usize::from(len[0]) + 2
        }
        _ => return Ok(Err(SocksError::Protocol)),
    };
    let mut bound = vec![0u8; rest];
    stream.read_exact(&mut bound).await?;
    Ok(Ok(()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    /// A scripted proxy: checks what the client sends, answers `replies`.
    async fn proxy(expect: Vec<u8>, reply: Vec<u8>) -> Result<(), SocksError> {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let mut greeting = [0u8; 3];
            server.read_exact(&mut greeting).await.unwrap();
            assert_eq!(greeting, [5, 1, 0]);
            server.write_all(&[5, 0]).await.unwrap();
            let mut request = vec![0u8; expect.len()];
            server.read_exact(&mut request).await.unwrap();
            assert_eq!(request, expect);
            server.write_all(&reply).await.unwrap();
        });
        let result = connect(&mut client, "blocked.test", 443).await.unwrap();
        server.await.unwrap();
        result
    }

    fn request() -> Vec<u8> {
        let mut request = vec![5, 1, 0, 3, 12];
        request.extend_from_slice(b"blocked.test");
        request.extend_from_slice(&443u16.to_be_bytes());
        request
    }

    #[tokio::test]
    async fn the_name_goes_to_the_proxy_unresolved() {
        let ok = proxy(request(), vec![5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]).await;
        assert_eq!(ok, Ok(()));
    }

    #[tokio::test]
    async fn a_refusal_names_the_reply() {
        let refused = proxy(request(), vec![5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await;
        assert_eq!(refused, Err(SocksError::Refused(5)));
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("connection refused")
        );
    }
}
