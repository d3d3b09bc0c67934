//! labctl's overlay router: two tc classifiers doing what Cilium's
//! `bpf_lxc` and `bpf_overlay` do for pod-to-pod traffic in VXLAN mode
//! (seed 001's Cilium section, SCENARIOS.md section 4), with none of the
//! policy, conntrack or service handling around it.
//!
//! - `route_from_container` (tc ingress of a pod's host-side `lxc` device,
//!   i.e. what the pod sends): an IPv4 packet for a local endpoint
//!   (`ROUTE_ENDPOINTS`) is delivered to it at once; one for a remote node's
//!   CIDR (`ROUTE_TUNNELS`, longest prefix) gets a tunnel key (remote = that
//!   node's underlay address, VNI = the sending endpoint's security
//!   identity, as Cilium puts the source identity in the VNI) and is
//!   redirected out of the node's collect-metadata VXLAN device
//!   (`ROUTE_CONFIG`), which encapsulates it. Anything else goes on to the
//!   node's stack untouched.
//! - `route_from_overlay` (tc ingress of that VXLAN device, i.e. what it
//!   decapsulated): a packet for a local endpoint is delivered to it;
//!   anything else goes on untouched.
//!
//! Delivery to an endpoint is Cilium's `ipv4_local_delivery`: the TTL is
//! decremented (the node routes), the source MAC becomes the endpoint's
//! `lxc` MAC and the destination the pod's own, and the frame is
//! redirected to the pod, in one of Cilium's two ways (the node's
//! `ROUTE_CONFIG` says which; seed 002's host networking, SCENARIOS.md
//! section 5 K4): `bpf_redirect(lxc, 0)` sends it out of the `lxc` device,
//! whose tap sees it leave, into the pod; `bpf_redirect_peer(lxc, 0)` puts
//! it straight on the ingress of the device's peer, the pod's `eth0`, and
//! the `lxc` device sees nothing (only valid from tc ingress, where both
//! programs run). Neither `cilium_host` nor `cilium_net` is on the way, and
//! the node needs no route, neighbour entry or bridge per pod.
//!
//! Helpers used: map lookup, skb load/store bytes, l3 csum replace,
//! `bpf_skb_set_tunnel_key` (4.3), `bpf_redirect` (4.4) and
//! `bpf_redirect_peer` (5.10).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_ZERO_CSUM_TX, bpf_tunnel_key},
    btf_maps::{Array, HashMap, LpmTrie, lpm_trie::Key},
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_set_tunnel_key},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use labctl_ebpf_common::{
    MAX_ROUTE_ENDPOINTS, MAX_ROUTE_TUNNELS, ROUTE_REDIRECT_PEER, RouteConfig, RouteEndpoint,
    RouteTunnel,
};

// BTF map definitions, as the load balancer's (see main.rs): bpftool's
// libbpf (1.0+), which the plan's script loads the object with, refuses
// legacy map sections; the loaders pin each map by its name.

/// Pod IPv4 address (network order) -> local endpoint.
#[btf_map]
static ROUTE_ENDPOINTS: HashMap<u32, RouteEndpoint, { MAX_ROUTE_ENDPOINTS as usize }> =
    HashMap::new();

/// Remote node CIDR -> that node's underlay address.
#[btf_map]
static ROUTE_TUNNELS: LpmTrie<u32, RouteTunnel, { MAX_ROUTE_TUNNELS as usize }> = LpmTrie::new();

/// Slot 0: the VXLAN device to encapsulate through, and how local
/// endpoints are delivered to.
#[btf_map]
static ROUTE_CONFIG: Array<RouteConfig, 1> = Array::new();

// tc verdicts (linux/pkt_cls.h).
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
// Offsets inside the IPv4 header.
const IP_TTL: usize = 8;
const IP_CSUM: usize = 10;
const IP_SADDR: usize = 12;
const IP_DADDR: usize = 16;
/// The TTL of the outer header, Linux's default (`IPDEFTTL`), as Cilium
/// sets it.
const TUNNEL_TTL: u8 = 64;
/// How much of `bpf_tunnel_key` is passed: up to `tunnel_label`, the size
/// every kernel since 4.3 accepts (the kernel zeroes the rest; the
/// `local_ipv4` field of newer ones is not needed: the route picks the
/// source address).
const TUNNEL_KEY_SIZE: u32 = 24;

/// The addresses of an IPv4 packet; `None` for anything else.
#[inline(always)]
fn ipv4(ctx: &TcContext) -> Option<(u32, u32)> {
    let eth_proto: u16 = ctx.load(12).ok()?;
    if u16::from_be(eth_proto) != ETH_P_IP {
        return None;
    }
    let ver_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
    if ver_ihl >> 4 != 4 || ver_ihl & 0x0f < 5 {
        return None;
    }
    Some((
        ctx.load(ETH_HLEN + IP_SADDR).ok()?,
        ctx.load(ETH_HLEN + IP_DADDR).ok()?,
    ))
}

/// The local endpoint with this address (network order), copied out.
#[inline(always)]
fn endpoint(addr: u32) -> Option<RouteEndpoint> {
    // SAFETY: the value is copied out at once; userspace replaces entries
    // whole.
    unsafe { ROUTE_ENDPOINTS.get(&addr) }.copied()
}

/// Cilium's `ipv4_local_delivery`: TTL - 1, MACs of the endpoint's veth
/// pair, then out of its `lxc` device into the pod (`bpf_redirect`) or,
/// when the config says so, straight into the pod's `eth0`
/// (`bpf_redirect_peer`). A packet whose TTL runs out is dropped (Cilium
/// would answer with an ICMP error).
#[inline(always)]
fn deliver(ctx: &mut TcContext, ep: &RouteEndpoint) -> Result<i32, i64> {
    let ttl: u8 = ctx.load(ETH_HLEN + IP_TTL)?;
    if ttl <= 1 {
        return Ok(TC_ACT_SHOT);
    }
    // The TTL shares a 16-bit checksum word with the protocol (TTL first).
    let proto: u8 = ctx.load(ETH_HLEN + IP_TTL + 1)?;
    let old = u16::from_be_bytes([ttl, proto]);
    let new = u16::from_be_bytes([ttl - 1, proto]);
    ctx.l3_csum_replace(
        ETH_HLEN + IP_CSUM,
        u64::from(old.to_be()),
        u64::from(new.to_be()),
        2,
    )?;
    ctx.store(ETH_HLEN + IP_TTL, &(ttl - 1), 0)?;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&ep.pod_mac);
    macs[6..].copy_from_slice(&ep.lxc_mac);
    ctx.store(0, &macs, 0)?;
    let peer = ROUTE_CONFIG
        .get(0)
        .is_some_and(|c| c.redirect == ROUTE_REDIRECT_PEER);
    let action = if peer {
        // SAFETY: a helper call with plain integers; both programs run on
        // tc ingress, where `bpf_redirect_peer` is valid.
        unsafe { bpf_redirect_peer(ep.ifindex, 0) }
    } else {
        // SAFETY: a helper call with plain integers.
        unsafe { bpf_redirect(ep.ifindex, 0) }
    };
    Ok(action as i32)
}

/// What a pod sends, on its `lxc` device's tc ingress.
#[classifier]
pub fn route_from_container(mut ctx: TcContext) -> i32 {
    match try_from_container(&mut ctx) {
        Ok(action) => action,
        // A failed rewrite may have left a half-patched packet.
        Err(_) => TC_ACT_SHOT,
    }
}

fn try_from_container(ctx: &mut TcContext) -> Result<i32, i64> {
    let Some((saddr, daddr)) = ipv4(ctx) else {
        return Ok(TC_ACT_OK);
    };
    if let Some(ep) = endpoint(daddr) {
        return deliver(ctx, &ep);
    }
    // The VNI is the sender's identity: only a known endpoint is sent.
    let Some(source) = endpoint(saddr) else {
        return Ok(TC_ACT_OK);
    };
    let Some(tunnel) = ROUTE_TUNNELS.get(&Key::new(32, daddr)).copied() else {
        return Ok(TC_ACT_OK);
    };
    let Some(config) = ROUTE_CONFIG.get(0).copied() else {
        return Ok(TC_ACT_OK);
    };
    if config.tunnel_ifindex == 0 {
        return Ok(TC_ACT_OK);
    }
    // SAFETY: all-zero is a valid `bpf_tunnel_key` (integers and unions
    // of integers).
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = source.identity;
    // The helper takes the remote address in host order.
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(tunnel.remote);
    key.tunnel_ttl = TUNNEL_TTL;
    // SAFETY: `skb` is the context's valid `__sk_buff`, `key` a live local
    // of at least TUNNEL_KEY_SIZE bytes. No UDP checksum on the outer
    // header, as Cilium sends it (BPF_F_ZERO_CSUM_TX).
    let ret = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            TUNNEL_KEY_SIZE,
            u64::from(BPF_F_ZERO_CSUM_TX),
        )
    };
    if ret != 0 {
        return Ok(TC_ACT_SHOT);
    }
    // SAFETY: a helper call with plain integers.
    Ok(unsafe { bpf_redirect(config.tunnel_ifindex, 0) } as i32)
}

/// What the node's VXLAN device decapsulated, on its tc ingress.
#[classifier]
pub fn route_from_overlay(mut ctx: TcContext) -> i32 {
    match try_from_overlay(&mut ctx) {
        Ok(action) => action,
        Err(_) => TC_ACT_SHOT,
    }
}

fn try_from_overlay(ctx: &mut TcContext) -> Result<i32, i64> {
    let Some((_, daddr)) = ipv4(ctx) else {
        return Ok(TC_ACT_OK);
    };
    match endpoint(daddr) {
        Some(ep) => deliver(ctx, &ep),
        None => Ok(TC_ACT_OK),
    }
}

/// Programs are loaded only if the verifier proves they cannot panic, so
/// this is never reached.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The license the kernel sees. `bpf_skb_set_tunnel_key`, `bpf_redirect`
/// and `bpf_redirect_peer` are not GPL-only, so the project's own license is
/// declared.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
