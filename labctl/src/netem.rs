//! netem's `TCA_OPTIONS`, built by hand.
//!
//! netlink-packet-route 0.34 knows the options of two qdiscs only
//! (fq_codel and ingress), and netem's do not fit its model anyway: they
//! are not a list of attributes but a `struct tc_netem_qopt` followed by
//! `TCA_NETEM_*` attributes, in one `TCA_OPTIONS` attribute without
//! `NLA_F_NESTED` (the kernel's `parse_attr` in `net/sched/sch_netem.c`
//! skips the struct and parses what follows). The layout is the kernel's
//! `include/uapi/linux/pkt_sched.h`; the values are those iproute2's
//! `tc/q_netem.c` sends for the same `tc qdisc ... netem` words, so the
//! kernel sees the same request either way (the unit tests pin the bytes).

use labctl_topology::Netem;

/// `TCA_KIND` and `TCA_OPTIONS` of `enum { TCA_UNSPEC, TCA_KIND, TCA_OPTIONS, ... }`.
pub const TCA_OPTIONS: u16 = 2;
/// The qdisc's kind.
pub const KIND: &str = "netem";

const TCA_NETEM_REORDER: u16 = 3;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_RATE64: u16 = 8;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;

/// iproute2's default queue length (`limit 1000`).
const LIMIT: u32 = 1000;

/// The psched clock ticks at 1/64 ns (`PSCHED_SHIFT` 6 in
/// `include/net/pkt_sched.h`): the 32-bit `latency` and `jitter` of
/// `tc_netem_qopt` are in those ticks. The 64-bit attributes, which the
/// kernel prefers when present, are in nanoseconds.
fn ticks(ns: u64) -> u32 {
    u32::try_from(ns >> 6).unwrap_or(u32::MAX)
}

/// The value of `TCA_OPTIONS` for `tc qdisc replace dev IF root netem
/// ARGS` ([`Netem::tc_args`]).
pub fn options(n: &Netem) -> Vec<u8> {
    let gap: u32 = if n.reorder.is_zero() { 0 } else { 1 };
    // struct tc_netem_qopt { latency, limit, loss, gap, duplicate, jitter }
    let mut out = Vec::with_capacity(64);
    for v in [
        ticks(n.delay_ns),
        LIMIT,
        n.loss.to_u32_fraction(),
        gap,
        0,
        ticks(n.jitter_ns),
    ] {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    if n.delay_ns > 0 {
        attr(
            &mut out,
            TCA_NETEM_LATENCY64,
            &(n.delay_ns as i64).to_ne_bytes(),
        );
    }
    if n.jitter_ns > 0 {
        attr(
            &mut out,
            TCA_NETEM_JITTER64,
            &(n.jitter_ns as i64).to_ne_bytes(),
        );
    }
    if !n.reorder.is_zero() {
        // struct tc_netem_reorder { probability, correlation }
        let mut r = n.reorder.to_u32_fraction().to_ne_bytes().to_vec();
        r.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut out, TCA_NETEM_REORDER, &r);
    }
    if n.rate_bps > 0 {
        // netem's rate is in bytes per second; past 32 bits the 32-bit
        // field says ~0 and TCA_NETEM_RATE64 carries it.
        let bytes = n.rate_bps / 8;
        let rate32 = match u32::try_from(bytes) {
            Ok(r) => r,
            Err(_) => {
                attr(&mut out, TCA_NETEM_RATE64, &bytes.to_ne_bytes());
                u32::MAX
            }
        };
        // struct tc_netem_rate { rate, packet_overhead, cell_size, cell_overhead }
        let mut r = rate32.to_ne_bytes().to_vec();
        r.extend_from_slice(&[0; 12]);
        attr(&mut out, TCA_NETEM_RATE, &r);
    }
    out
}

/// `RTM_NEWQDISC` for `tc qdisc replace dev IF root netem ARGS`
/// (rtnetlink's qdisc request cannot carry options).
pub fn replace_root(
    ifindex: u32,
    n: &Netem,
) -> netlink_packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage> {
    use netlink_packet_core::{
        DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    };
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle::ROOT;
    msg.attributes.push(TcAttribute::Kind(KIND.to_string()));
    msg.attributes
        .push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options(n))));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    req
}

/// Send [`replace_root`] on `handle` and wait for the kernel's answer: the
/// errno it refused with, if it did.
pub async fn send_replace_root(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    n: &Netem,
) -> Result<(), String> {
    use futures::StreamExt;
    let mut h = handle.clone();
    let mut answers = h
        .request(replace_root(ifindex, n))
        .map_err(|e| e.to_string())?;
    while let Some(m) = answers.next().await {
        if let netlink_packet_core::NetlinkPayload::Error(e) = m.payload
            && let Some(code) = e.code
        {
            return Err(error_text(-code.get()));
        }
    }
    Ok(())
}

/// A netem request's errno in words, with the likely cause.
fn error_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    if errno == nix::libc::ENOENT {
        // The kernel answers a qdisc kind it cannot find or load with
        // ENOENT.
        format!("{text}: this kernel has no netem (CONFIG_NET_SCH_NETEM, module sch_netem)")
    } else {
        text
    }
}

/// Append one netlink attribute, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).expect("netem attributes are small");
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use labctl_topology::{Percent, parse_duration, parse_rate};

    use super::*;

    fn words(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// `tc qdisc add dev X root netem delay 50ms`, as iproute2 6.x sends
    /// it (`strace -x -e sendmsg`): the struct with the delay in ticks and
    /// limit 1000, then TCA_NETEM_LATENCY64 (12 bytes, type 10) in ns.
    #[test]
    fn delay_only_matches_iproute2() {
        let n = Netem {
            delay_ns: parse_duration("50ms").unwrap(),
            ..Netem::default()
        };
        let b = options(&n);
        assert_eq!(b.len(), 24 + 12);
        assert_eq!(words(&b[..24]), [781_250, 1000, 0, 0, 0, 0]);
        assert_eq!(&b[24..28], [12, 0, 10, 0]);
        assert_eq!(
            i64::from_ne_bytes(b[28..36].try_into().unwrap()),
            50_000_000
        );
    }

    #[test]
    fn every_impairment_is_in_the_payload() {
        let n = Netem {
            delay_ns: parse_duration("20ms").unwrap(),
            jitter_ns: parse_duration("5ms").unwrap(),
            loss: Percent::parse("1%").unwrap(),
            rate_bps: parse_rate("10mbit").unwrap(),
            reorder: Percent::parse("25%").unwrap(),
        };
        let b = options(&n);
        // loss: rint(0.01 * UINT32_MAX), as iproute2's get_percent; gap 1
        // with reorder, as iproute2 sets it.
        assert_eq!(words(&b[..24]), [312_500, 1000, 42_949_673, 1, 0, 78_125]);
        let mut rest = &b[24..];
        let mut seen = Vec::new();
        while !rest.is_empty() {
            let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
            let kind = u16::from_ne_bytes([rest[2], rest[3]]);
            seen.push((kind, rest[4..len].to_vec()));
            rest = &rest[len.next_multiple_of(4)..];
        }
        let kinds: Vec<u16> = seen.iter().map(|s| s.0).collect();
        assert_eq!(
            kinds,
            [
                TCA_NETEM_LATENCY64,
                TCA_NETEM_JITTER64,
                TCA_NETEM_REORDER,
                TCA_NETEM_RATE
            ]
        );
        assert_eq!(words(&seen[2].1), [1_073_741_824, 0]);
        // 10 mbit/s is 1.25 MB/s.
        assert_eq!(words(&seen[3].1), [1_250_000, 0, 0, 0]);
    }

    #[test]
    fn rates_past_32_bits_use_rate64() {
        let n = Netem {
            rate_bps: parse_rate("40gbit").unwrap(),
            ..Netem::default()
        };
        let b = options(&n);
        // RATE64 (12 bytes) before RATE (20 bytes), RATE saying ~0.
        assert_eq!(b.len(), 24 + 12 + 20);
        assert_eq!(&b[26..28], TCA_NETEM_RATE64.to_ne_bytes());
        assert_eq!(
            u64::from_ne_bytes(b[28..36].try_into().unwrap()),
            5_000_000_000
        );
        assert_eq!(words(&b[40..44]), [u32::MAX]);
    }
}
