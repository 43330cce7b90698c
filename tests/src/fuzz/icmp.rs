//! ICMP errors about a translated flow's packets, as they must leave the
//! programs (svc-ebpf icmp.rs, as designed). An error about a packet the
//! node sent to a backend (from the client, or from the flow's NAT
//! address) goes back to the client quoting the packet the client sent:
//! the quoted destination becomes the frontend, and with source NAT the
//! quoted source and the outer destination become the client; when the
//! backend itself reports, the outer source becomes the frontend too. The
//! IP header checksums (outer and quoted) and the ICMP checksum follow
//! every change; the quoted L4 checksum is left (no stack checks it).
use super::{
    frames::{End, be16, set_addr, set_port, updated_checksum},
    parse::{IP, Quote},
};

/// `frame`, an ICMP error quoting a packet of a flow to `frontend` (with
/// source NAT: from `snat_client`), translated back.
pub(super) fn translated_back(
    frame: &[u8],
    quote: &Quote,
    frontend: End,
    snat_client: Option<End>,
) -> Vec<u8> {
    let mut out = frame.to_vec();
    let (inner, inner_l4) = (quote.inner, quote.inner_l4);
    set_addr(&mut out, inner + 16, frontend.0);
    set_port(&mut out, inner_l4 + 2, frontend.1);
    if let Some(client) = snat_client {
        set_addr(&mut out, inner + 12, client.0);
        set_port(&mut out, inner_l4, client.1);
        set_addr(&mut out, IP + 16, client.0);
    }
    let backend_reports = frame[IP + 12..IP + 16] == quote.tuple.dst.0.octets();
    if backend_reports {
        set_addr(&mut out, IP + 12, frontend.0);
    }
    let addresses = |at: usize| at + 12..at + 20;
    let inner_csum = updated_checksum(
        be16(frame, inner + 10),
        &frame[addresses(inner)],
        &out[addresses(inner)],
    );
    out[inner + 10..inner + 12].copy_from_slice(&inner_csum.to_be_bytes());
    let outer_csum = updated_checksum(
        be16(frame, IP + 10),
        &frame[addresses(IP)],
        &out[addresses(IP)],
    );
    out[IP + 10..IP + 12].copy_from_slice(&outer_csum.to_be_bytes());
    // The ICMP checksum covers the whole message (its own field aside).
    let message = |bytes: &[u8]| {
        let mut message = bytes[quote.icmp..quote.end].to_vec();
        message[2..4].fill(0);
        message
    };
    let icmp_csum = updated_checksum(be16(frame, quote.icmp + 2), &message(frame), &message(&out));
    out[quote.icmp + 2..quote.icmp + 4].copy_from_slice(&icmp_csum.to_be_bytes());
    out
}
