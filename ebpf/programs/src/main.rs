//! labctl's socket-less service load balancer: two tc classifiers for a
//! pod's eth0, in the spirit of Cilium's and Terway's eBPF service handling.
//!
//! - `lb_egress` (tc egress): an IPv4 TCP/UDP packet whose destination is a
//!   service (`LB_SERVICES`) gets a backend (the flow's remembered one, else
//!   the pinned slot, else `flow_hash % count`), its destination address and
//!   port rewritten, the flow remembered in both flow maps and an event sent;
//!   the frame then leaves again by `bpf_redirect_neigh` (`TC_ACT_REDIRECT`).
//! - `lb_ingress` (tc ingress): a packet from a backend to a client that
//!   `LB_FLOWS` remembers gets its source rewritten back to the service.
//!
//! So the service address never appears on any interface, the pod's own
//! eth0 included: capture taps see egress packets after tc and ingress
//! packets before it.
//!
//! Packets are read and written with `bpf_skb_load_bytes` /
//! `bpf_skb_store_bytes` rather than direct packet access: the helpers work
//! on non-linear skbs (the headers may not all be in the linear head) and
//! take a variable offset, which IP options (ihl > 5) need, without bounds
//! gymnastics for the verifier. Checksums are patched incrementally with
//! `bpf_l3_csum_replace` / `bpf_l4_csum_replace`; the L4 address change
//! carries `BPF_F_PSEUDO_HDR` so CHECKSUM_PARTIAL packets (locally generated
//! TCP/UDP with offload) stay right, and UDP uses `BPF_F_MARK_MANGLED_0` so a
//! zero ("no checksum") UDP checksum stays zero. Fragments are passed
//! untouched: only the first carries the ports.
//!
//! Helpers used: map lookup/update, skb load/store bytes, l3/l4 csum
//! replace (all <= 4.x), ring buffer output (5.8) and `bpf_redirect_neigh`
//! (5.10).
#![no_std]
#![no_main]

use aya_ebpf::helpers::bpf_redirect_neigh;
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    btf_maps::{HashMap, LruHashMap, RingBuf},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use labctl_ebpf_common::{
    BackendKey, DIR_REPLY, DIR_REQUEST, EVENTS_BYTES, Endpoint, Event, FlowKey, MAX_BACKENDS,
    MAX_FLOWS, MAX_SERVICES, PROTO_TCP, PROTO_UDP, Service, ServiceKey, flow_hash,
};

// BTF map definitions (the `.maps` section), not aya's legacy `maps`
// section: libbpf 1.0 and later refuse the legacy ones, and the script of
// `labctl plan -o script` loads this object with `bpftool prog loadall`,
// which pins every map itself (`pinmaps`). labctl's loader pins them by
// name too (`labctl_lb::Lb::load_pinned`), so both ways share one layout.

#[btf_map]
static LB_SERVICES: HashMap<ServiceKey, Service, { MAX_SERVICES as usize }> = HashMap::new();

#[btf_map]
static LB_BACKENDS: HashMap<BackendKey, Endpoint, { MAX_BACKENDS as usize }> = HashMap::new();

/// client + service -> backend: keeps a connection on its backend even when
/// the backend set or the pin changes (Cilium's CT entry plays this role).
#[btf_map]
static LB_CONNS: LruHashMap<FlowKey, Endpoint, { MAX_FLOWS as usize }> = LruHashMap::new();

/// client + backend -> service: the reverse translation for replies.
#[btf_map]
static LB_FLOWS: LruHashMap<FlowKey, Endpoint, { MAX_FLOWS as usize }> = LruHashMap::new();

/// Events of [`Event`]. The element type is `()`: a ring buffer's value
/// size is 0, and libbpf refuses a definition whose `value` type says
/// otherwise ("conflicting value size").
#[btf_map]
static LB_EVENTS: RingBuf<(), { EVENTS_BYTES as usize }> = RingBuf::new();

// tc verdicts (linux/pkt_cls.h), as the classifier returns them.
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
// Offsets inside the IPv4 header.
const IP_FRAG_OFF: usize = 6;
const IP_PROTO: usize = 9;
const IP_CSUM: usize = 10;
const IP_SADDR: usize = 12;
const IP_DADDR: usize = 16;
// More-fragments flag and fragment offset, host order.
const IP_MF_OFFSET: u16 = 0x3fff;
// Offsets inside the L4 header.
const L4_SPORT: usize = 0;
const L4_DPORT: usize = 2;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;

/// The fields of an IPv4 TCP/UDP packet the programs look at.
struct Tuple {
    l4: usize,
    proto: u8,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
}

/// Parses an unfragmented IPv4 TCP/UDP packet; `None` for anything else.
#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Tuple> {
    let eth_proto: u16 = ctx.load(12).ok()?;
    if u16::from_be(eth_proto) != ETH_P_IP {
        return None;
    }
    let ver_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let frag: u16 = ctx.load(ETH_HLEN + IP_FRAG_OFF).ok()?;
    if u16::from_be(frag) & IP_MF_OFFSET != 0 {
        return None;
    }
    let proto: u8 = ctx.load(ETH_HLEN + IP_PROTO).ok()?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let l4 = ETH_HLEN + ihl;
    Some(Tuple {
        l4,
        proto,
        saddr: ctx.load(ETH_HLEN + IP_SADDR).ok()?,
        daddr: ctx.load(ETH_HLEN + IP_DADDR).ok()?,
        sport: ctx.load(l4 + L4_SPORT).ok()?,
        dport: ctx.load(l4 + L4_DPORT).ok()?,
    })
}

/// One address and port to rewrite: the destination on egress, the source
/// on ingress.
#[derive(Clone, Copy)]
struct Nat {
    /// Offset of the address from the start of the IP header.
    addr_off: usize,
    old_addr: u32,
    new_addr: u32,
    /// Offset of the port from the start of the L4 header.
    port_off: usize,
    old_port: u16,
    new_port: u16,
}

/// Applies `nat` to the packet, fixing the IP and L4 checksums.
#[inline(always)]
fn rewrite(ctx: &mut TcContext, t: &Tuple, nat: &Nat) -> Result<(), i64> {
    let Nat {
        addr_off,
        old_addr,
        new_addr,
        port_off,
        old_port,
        new_port,
    } = *nat;
    let (csum_off, mangled) = if t.proto == PROTO_TCP {
        (t.l4 + TCP_CSUM, 0)
    } else {
        (t.l4 + UDP_CSUM, u64::from(BPF_F_MARK_MANGLED_0))
    };
    if old_addr != new_addr {
        // The address is part of the L4 pseudo header: hence BPF_F_PSEUDO_HDR.
        ctx.l4_csum_replace(
            csum_off,
            u64::from(old_addr),
            u64::from(new_addr),
            u64::from(BPF_F_PSEUDO_HDR) | mangled | 4,
        )?;
        ctx.l3_csum_replace(
            ETH_HLEN + IP_CSUM,
            u64::from(old_addr),
            u64::from(new_addr),
            4,
        )?;
        ctx.store(ETH_HLEN + addr_off, &new_addr, 0)?;
    }
    if old_port != new_port {
        ctx.l4_csum_replace(
            csum_off,
            u64::from(old_port),
            u64::from(new_port),
            mangled | 2,
        )?;
        ctx.store(t.l4 + port_off, &new_port, 0)?;
    }
    Ok(())
}

#[inline(always)]
fn emit(t: &Tuple, client: (u32, u16), service: &Endpoint, backend: &Endpoint, direction: u8) {
    let event = Event {
        client_addr: client.0,
        service_addr: service.addr,
        backend_addr: backend.addr,
        client_port: client.1,
        service_port: service.port,
        backend_port: backend.port,
        proto: t.proto,
        direction,
    };
    // A full ring buffer loses the event, never the packet.
    let _ = LB_EVENTS.output_untyped::<Event>(&event, 0);
}

/// Service translation on the way out of the pod.
#[classifier]
pub fn lb_egress(mut ctx: TcContext) -> i32 {
    match try_egress(&mut ctx) {
        Ok(action) => action,
        // A failed rewrite may have left a half-patched packet: drop it
        // rather than send it with a wrong checksum.
        Err(_) => TC_ACT_SHOT,
    }
}

fn try_egress(ctx: &mut TcContext) -> Result<i32, i64> {
    let Some(t) = parse(ctx) else {
        return Ok(TC_ACT_OK);
    };
    let skey = ServiceKey {
        addr: t.daddr,
        port: t.dport,
        proto: t.proto,
        pad: 0,
    };
    // SAFETY: the value is copied out at once; a concurrent update can at
    // worst give a stale count, which the backend lookup below tolerates.
    let Some(service) = (unsafe { LB_SERVICES.get(skey) }).copied() else {
        return Ok(TC_ACT_OK);
    };
    let conn = FlowKey {
        client_addr: t.saddr,
        peer_addr: t.daddr,
        client_port: t.sport,
        peer_port: t.dport,
        proto: t.proto,
        pad: [0; 3],
    };
    // SAFETY: copied out at once, as above.
    let backend = match (unsafe { LB_CONNS.get(conn) }).copied() {
        Some(backend) => backend,
        None => {
            if service.count == 0 {
                // A service without backends: like Cilium, drop rather
                // than let the packet leave with the virtual address.
                return Ok(TC_ACT_SHOT);
            }
            let index = if service.pinned < service.count {
                service.pinned
            } else {
                flow_hash(t.saddr, t.sport, t.daddr, t.dport, t.proto) % service.count
            };
            let bkey = BackendKey {
                service: skey,
                index,
            };
            // SAFETY: copied out at once, as above.
            let Some(backend) = (unsafe { LB_BACKENDS.get(bkey) }).copied() else {
                return Ok(TC_ACT_SHOT);
            };
            LB_CONNS.insert(conn, backend, 0)?;
            backend
        }
    };
    let service_ep = Endpoint {
        addr: t.daddr,
        port: t.dport,
        pad: 0,
    };
    let flow = FlowKey {
        client_addr: t.saddr,
        peer_addr: backend.addr,
        client_port: t.sport,
        peer_port: backend.port,
        proto: t.proto,
        pad: [0; 3],
    };
    // Written only when missing or pointing at another service (a new flow,
    // an entry the LRU evicted, a client port reused for another service on
    // the same backend): an update on every packet would allocate a new LRU
    // element on the hot path. A lookup already refreshes an LRU entry, and
    // lb_ingress looks this one up on every reply.
    // SAFETY: copied out at once, as above.
    if (unsafe { LB_FLOWS.get(flow) }).copied() != Some(service_ep) {
        LB_FLOWS.insert(flow, service_ep, 0)?;
    }
    rewrite(
        ctx,
        &t,
        &Nat {
            addr_off: IP_DADDR,
            old_addr: t.daddr,
            new_addr: backend.addr,
            port_off: L4_DPORT,
            old_port: t.dport,
            new_port: backend.port,
        },
    )?;
    emit(&t, (t.saddr, t.sport), &service_ep, &backend, DIR_REQUEST);
    // The pod's route was chosen for the service address (via the gateway),
    // so the frame is addressed to the gateway's MAC. Send it out again
    // with the backend's own neighbour, as Cilium does: a backend on the
    // same ipvlan ENI is then reached inside the node, not through the VPC.
    // SAFETY: `skb` is the context's valid `__sk_buff`; a null `params`
    // with length 0 asks the kernel to look the neighbour up itself.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let verdict = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
    Ok(verdict as i32)
}

/// Reverse translation of replies on the way into the pod.
#[classifier]
pub fn lb_ingress(mut ctx: TcContext) -> i32 {
    match try_ingress(&mut ctx) {
        Ok(action) => action,
        Err(_) => TC_ACT_SHOT,
    }
}

fn try_ingress(ctx: &mut TcContext) -> Result<i32, i64> {
    let Some(t) = parse(ctx) else {
        return Ok(TC_ACT_OK);
    };
    let flow = FlowKey {
        client_addr: t.daddr,
        peer_addr: t.saddr,
        client_port: t.dport,
        peer_port: t.sport,
        proto: t.proto,
        pad: [0; 3],
    };
    // SAFETY: copied out at once; entries are only ever replaced whole.
    let Some(service) = (unsafe { LB_FLOWS.get(flow) }).copied() else {
        return Ok(TC_ACT_OK);
    };
    rewrite(
        ctx,
        &t,
        &Nat {
            addr_off: IP_SADDR,
            old_addr: t.saddr,
            new_addr: service.addr,
            port_off: L4_SPORT,
            old_port: t.sport,
            new_port: service.port,
        },
    )?;
    let backend = Endpoint {
        addr: t.saddr,
        port: t.sport,
        pad: 0,
    };
    emit(&t, (t.daddr, t.dport), &service, &backend, DIR_REPLY);
    Ok(TC_ACT_OK)
}

/// Programs are loaded only if the verifier proves they cannot panic, so
/// this is never reached.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The license the kernel sees. None of the helpers used is GPL-only, so the
/// project's own license is declared.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
