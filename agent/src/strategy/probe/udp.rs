//! UDP samples: one datagram out (the target's payload, or a STUN binding
//! request), any datagram back within `timeout` passes.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::time::timeout_at;
use veil_crds::strategy::UdpProbe;

use super::net::{resolve, udp_socket};
use super::{FailPhase, Phases, ProbeError, ProbeOptions, ProbeResult, Sample};

/// STUN's magic cookie (RFC 8489 §5).
const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;
/// STUN message type of a Binding request.
const STUN_BINDING_REQUEST: u16 = 0x0001;

/// A STUN Binding request without attributes: type 0x0001, length 0, the
/// magic cookie, a random 96-bit transaction id. Every STUN server answers
/// it, so it is the default UDP payload.
pub fn stun_binding_request() -> [u8; 20] {
    let mut message = [0u8; 20];
    message[0..2].copy_from_slice(&STUN_BINDING_REQUEST.to_be_bytes());
    message[4..8].copy_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
    message[8..20].copy_from_slice(&rand::random::<[u8; 12]>());
    message
}

/// How a UDP target is named in its sample: `udp://host:port`.
pub fn udp_target_name(udp: &UdpProbe) -> String {
    format!("udp://{}:{}", udp.host, udp.port.get())
}

/// One UDP sample of `udp`. `Err` only for local failures (socket, mark,
/// a payload that is not hex). A name that does not resolve is `DnsError`;
/// no reply within `timeout` is `Timeout`; an ICMP port unreachable (the
/// kernel's `ECONNREFUSED` on the connected socket) is `ConnectRefused`.
pub async fn probe_udp(
    udp: &UdpProbe,
    critical: bool,
    options: &ProbeOptions,
) -> Result<ProbeResult, ProbeError> {
    let payload = match &udp.payload_hex {
        Some(text) => hex::decode(text).map_err(|e| ProbeError::Payload {
            target: udp_target_name(udp),
            reason: e.to_string(),
        })?,
        None => stun_binding_request().to_vec(),
    };
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + options.timeout);
    let mut result = ProbeResult {
        sample: Sample {
            target: udp_target_name(udp),
            critical,
            passed: false,
            ttfb: None,
            fail_phase: None,
        },
        phases: Phases::default(),
        bytes_read: 0,
        stream_bytes: 0,
        http_status: None,
        tls_version: None,
        detail: None,
    };
    let fail = |mut result: ProbeResult, phase: FailPhase, detail: String| {
        result.sample.fail_phase = Some(phase);
        result.detail = Some(detail);
        Ok(result)
    };
    let ip = match timeout_at(deadline, resolve(&udp.host, &options.resolve)).await {
        Ok(Ok(ip)) => ip,
        Ok(Err(e)) => return fail(result, FailPhase::DnsError, e.to_string()),
        Err(_) => return fail(result, FailPhase::DnsError, "lookup timed out".into()),
    };
    result.phases.dns = Some(start.elapsed());
    let addr = SocketAddr::new(ip, udp.port.get());
    let socket = udp_socket(addr, options.mark).await?;
    let sent = Instant::now();
    let mut reply = [0u8; 2048];
    let exchange = async {
        socket.send(&payload).await?;
        socket.recv(&mut reply).await
    };
    match timeout_at(deadline, exchange).await {
        Ok(Ok(n)) => {
            result.sample.passed = true;
            result.sample.ttfb = Some(start.elapsed());
            result.phases.first_byte = Some(sent.elapsed());
            result.bytes_read = n as u64;
            result.stream_bytes = n as u64;
            Ok(result)
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            fail(result, FailPhase::ConnectRefused, e.to_string())
        }
        Ok(Err(e)) => fail(result, FailPhase::Timeout, e.to_string()),
        Err(_) => fail(
            result,
            FailPhase::Timeout,
            format!("no reply in {:?}", options.timeout),
        ),
    }
}
