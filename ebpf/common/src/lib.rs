//! Map keys, map values and ring-buffer events shared by the tc programs in
//! `ebpf/programs` (the load balancer's and the overlay router's) and their
//! loader `labctl-lb`.
//!
//! Everything is `#[repr(C)]` plain old data with explicit padding fields,
//! so both sides agree on the layout byte for byte and no uninitialised
//! padding reaches the kernel (a hash map compares keys as raw bytes).
//! Addresses and ports are kept in network byte order, exactly as they sit in
//! the packet: the programs compare and copy them without swapping. Use
//! [`addr_be`] / [`port_be`] and [`addr_from_be`] / [`port_from_be`] to
//! convert on the userspace side.
//!
//! With the `user` feature the types implement `aya::Pod`, which the
//! userspace map wrappers require.
#![no_std]

/// `IPPROTO_TCP`.
pub const PROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const PROTO_UDP: u8 = 17;

/// Name of the services map (`ServiceKey` -> [`Service`]), also its pin file.
pub const MAP_SERVICES: &str = "LB_SERVICES";
/// Name of the backends map (`BackendKey` -> [`Endpoint`]).
pub const MAP_BACKENDS: &str = "LB_BACKENDS";
/// Name of the forward flow map (client + service [`FlowKey`] -> backend
/// [`Endpoint`]): keeps a connection on its backend.
pub const MAP_CONNS: &str = "LB_CONNS";
/// Name of the reverse flow map (client + backend [`FlowKey`] -> service
/// [`Endpoint`]): turns replies back into the service address.
pub const MAP_FLOWS: &str = "LB_FLOWS";
/// Name of the ring buffer carrying [`Event`]s.
pub const MAP_EVENTS: &str = "LB_EVENTS";
/// Every map the programs pin, in the order a teardown may remove them.
pub const PINNED_MAPS: [&str; 5] = [MAP_SERVICES, MAP_BACKENDS, MAP_CONNS, MAP_FLOWS, MAP_EVENTS];

/// Maximum number of services.
pub const MAX_SERVICES: u32 = 1024;
/// Maximum number of backend slots over all services.
pub const MAX_BACKENDS: u32 = 16384;
/// Maximum number of remembered flows (each LRU map).
pub const MAX_FLOWS: u32 = 65536;
/// Size of the event ring buffer in bytes (a power-of-two number of pages).
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// [`Service::pinned`] value meaning "no pinned backend: hash the flow".
pub const NO_PIN: u32 = u32::MAX;

/// A service frontend: `vip:port/proto`, like a row of `cilium bpf lb list`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    /// Virtual IPv4 address, network order.
    pub addr: u32,
    /// Port, network order.
    pub port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Always 0.
    pub pad: u8,
}

/// A service's backend set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Service {
    /// Number of backend slots `0..count` present in the backends map.
    pub count: u32,
    /// Slot every new flow goes to, or [`NO_PIN`] to spread flows by hash.
    pub pinned: u32,
}

/// One backend slot of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BackendKey {
    /// The service this slot belongs to.
    pub service: ServiceKey,
    /// Slot index, `0..Service::count`.
    pub index: u32,
}

/// An IPv4 address and port: a backend, or the original service address of
/// a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Endpoint {
    /// IPv4 address, network order.
    pub addr: u32,
    /// Port, network order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
}

/// A client and the peer it talks to, in the client's view: the service
/// address (forward map) or the chosen backend (reverse map).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Client IPv4 address, network order.
    pub client_addr: u32,
    /// Service or backend IPv4 address, network order.
    pub peer_addr: u32,
    /// Client port, network order.
    pub client_port: u16,
    /// Service or backend port, network order.
    pub peer_port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Always 0.
    pub pad: [u8; 3],
}

/// [`Event::direction`] of a request translated on egress.
pub const DIR_REQUEST: u8 = 0;
/// [`Event::direction`] of a reply translated back on ingress.
pub const DIR_REPLY: u8 = 1;

/// One translation, sent to the `LB_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Event {
    /// Client IPv4 address, network order.
    pub client_addr: u32,
    /// Service (original destination) IPv4 address, network order.
    pub service_addr: u32,
    /// Backend (translated destination) IPv4 address, network order.
    pub backend_addr: u32,
    /// Client port, network order.
    pub client_port: u16,
    /// Service port, network order.
    pub service_port: u16,
    /// Backend port, network order.
    pub backend_port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// [`DIR_REQUEST`] or [`DIR_REPLY`].
    pub direction: u8,
}

/// Name of the overlay router's endpoint map (pod IPv4 address, network
/// order -> [`RouteEndpoint`]), like Cilium's endpoint map
/// (`cilium bpf endpoint list`).
pub const MAP_ROUTE_ENDPOINTS: &str = "ROUTE_ENDPOINTS";
/// Name of the overlay router's tunnel map (LPM trie: node CIDR ->
/// [`RouteTunnel`]), like Cilium's tunnel map (`cilium bpf tunnel list`).
pub const MAP_ROUTE_TUNNELS: &str = "ROUTE_TUNNELS";
/// Name of the overlay router's one-slot configuration array
/// ([`RouteConfig`]), what Cilium compiles into its programs.
pub const MAP_ROUTE_CONFIG: &str = "ROUTE_CONFIG";
/// Every map the router pins.
pub const ROUTE_PINNED_MAPS: [&str; 3] = [MAP_ROUTE_ENDPOINTS, MAP_ROUTE_TUNNELS, MAP_ROUTE_CONFIG];
/// Maximum number of local endpoints of a node.
pub const MAX_ROUTE_ENDPOINTS: u32 = 1024;
/// Maximum number of remote node CIDRs.
pub const MAX_ROUTE_TUNNELS: u32 = 1024;

/// A local endpoint (a pod on this node), the value of the endpoint map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RouteEndpoint {
    /// The ifindex of the pod's host-side device (`lxc...`): traffic for
    /// the pod is redirected out of it.
    pub ifindex: u32,
    /// The pod's security identity: the VNI of what it sends to other
    /// nodes.
    pub identity: u32,
    /// The host-side device's MAC: the source of frames delivered to the
    /// pod (Cilium's `node_mac` of the endpoint).
    pub lxc_mac: [u8; 6],
    /// The pod's own MAC: the destination of frames delivered to it.
    pub pod_mac: [u8; 6],
}

/// A remote node CIDR's tunnel endpoint, the value of the tunnel map. Its
/// key is an LPM trie key: the prefix length, then the CIDR's address in
/// network order (aya's `Key<u32>` on both sides).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RouteTunnel {
    /// The remote node's underlay IPv4 address, network order.
    pub remote: u32,
}

/// The router's configuration, slot 0 of `ROUTE_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RouteConfig {
    /// The ifindex of the node's collect-metadata VXLAN device
    /// (`cilium_vxlan`); 0 when unset, and then nothing is encapsulated.
    pub tunnel_ifindex: u32,
    /// How a packet for a local endpoint is delivered:
    /// [`ROUTE_REDIRECT_EGRESS`] (0, also any unknown value) or
    /// [`ROUTE_REDIRECT_PEER`].
    pub redirect: u32,
}

/// Local delivery by `bpf_redirect(lxc, 0)`: out of the endpoint's `lxc`
/// device, whose tap sees the frame leave, into the pod.
pub const ROUTE_REDIRECT_EGRESS: u32 = 0;
/// Local delivery by `bpf_redirect_peer(lxc, 0)` (5.10): straight into the
/// ingress of the `lxc` device's peer, the pod's `eth0`; the `lxc` device
/// sees nothing. Valid from tc ingress only, where both programs run.
pub const ROUTE_REDIRECT_PEER: u32 = 1;

/// Hash of a flow's 5-tuple (fields as in the packet), used to pick a backend
/// slot: `flow_hash(..) % count`. Deterministic, so userspace and tests can
/// predict the choice. A murmur3-style finaliser over the folded tuple: cheap
/// in BPF (no loops, 32-bit multiplies) and spreads neighbouring ports.
#[inline(always)]
pub const fn flow_hash(saddr: u32, sport: u16, daddr: u32, dport: u16, proto: u8) -> u32 {
    let mut h = saddr ^ daddr.rotate_left(16);
    h ^= ((sport as u32) << 16) | dport as u32;
    h ^= (proto as u32).wrapping_mul(0x9e37_79b9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// An IPv4 address as the programs store it (network order in a `u32`).
pub const fn addr_be(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// The octets of an address stored by [`addr_be`].
pub const fn addr_from_be(addr: u32) -> [u8; 4] {
    addr.to_ne_bytes()
}

/// A port as the programs store it (network order in a `u16`).
pub const fn port_be(port: u16) -> u16 {
    port.to_be()
}

/// The host-order port of a port stored by [`port_be`].
pub const fn port_from_be(port: u16) -> u16 {
    u16::from_be(port)
}

#[cfg(feature = "user")]
mod pod {
    use super::{
        BackendKey, Endpoint, Event, FlowKey, RouteConfig, RouteEndpoint, RouteTunnel, Service,
        ServiceKey,
    };

    // SAFETY: each type is `repr(C)`, `Copy`, made of integers only, with
    // explicit padding fields, so every bit pattern is valid and there are
    // no implicit padding bytes (checked by the size tests below).
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Service {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BackendKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RouteEndpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RouteTunnel {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RouteConfig {}
}

// No implicit padding anywhere: the sizes equal the sum of the fields.
const _: () = assert!(size_of::<ServiceKey>() == 8);
const _: () = assert!(size_of::<Service>() == 8);
const _: () = assert!(size_of::<BackendKey>() == 12);
const _: () = assert!(size_of::<Endpoint>() == 8);
const _: () = assert!(size_of::<FlowKey>() == 16);
const _: () = assert!(size_of::<Event>() == 20);
const _: () = assert!(size_of::<RouteEndpoint>() == 20);
const _: () = assert!(size_of::<RouteTunnel>() == 4);
const _: () = assert!(size_of::<RouteConfig>() == 8);
