//! The overlay router (`ebpf/programs/src/route.rs`): Cilium's VXLAN data
//! path between pods of different nodes, as tc programs on each pod's
//! `lxc` device and on the node's collect-metadata VXLAN device.
//!
//! Each node loads its own copy of the object ([`Router::load_pinned`],
//! maps pinned in a directory of its own), as each Cilium agent has its
//! own endpoint and tunnel maps; [`RouteMaps`] fills and reads them from
//! any later process, like `cilium bpf endpoint list` and
//! `cilium bpf tunnel list`. Attaching is the caller's: a netlink cls_bpf
//! filter carrying the fd of a pinned program ([`crate::pinned_program`]).

use std::{
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, lpm_trie::Key, lpm_trie::LpmTrie},
};
use labctl_ebpf_common::{
    self as common, MAP_ROUTE_CONFIG, MAP_ROUTE_ENDPOINTS, MAP_ROUTE_TUNNELS,
    ROUTE_REDIRECT_EGRESS, ROUTE_REDIRECT_PEER, RouteConfig, RouteEndpoint, RouteTunnel,
};

use crate::{Error, Result, TestRunOutput, maps::MapUpdate};

/// The router's object built by build.rs (empty when the toolchain was
/// missing).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/labctl-route"));

/// Where build.rs left the router's object: what the script of `labctl
/// plan -o script` gives `bpftool prog loadall`.
pub const ROUTE_OBJECT_PATH: &str = concat!(env!("OUT_DIR"), "/labctl-route");

/// One of the router's two tc programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteProgram {
    /// `route_from_container`: on a pod's `lxc` device's ingress.
    FromContainer,
    /// `route_from_overlay`: on the node's VXLAN device's ingress.
    FromOverlay,
}

impl RouteProgram {
    /// Both programs.
    pub const ALL: [Self; 2] = [Self::FromContainer, Self::FromOverlay];

    /// The program's (and its pin's) name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::FromContainer => "route_from_container",
            Self::FromOverlay => "route_from_overlay",
        }
    }

    /// The program of this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Where [`Router::pin_programs`] pins it: `pin_dir/NAME`.
    pub fn pin_path(self, pin_dir: &Path) -> PathBuf {
        pin_dir.join(self.name())
    }
}

/// A local endpoint, one row of `labctl show route` (like
/// `cilium bpf endpoint list`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointEntry {
    /// The pod's address.
    pub address: Ipv4Addr,
    /// Its host-side device's ifindex.
    pub ifindex: u32,
    /// Its security identity (the VNI of what it sends across nodes).
    pub identity: u32,
    /// The host-side device's MAC.
    pub lxc_mac: [u8; 6],
    /// The pod's MAC.
    pub pod_mac: [u8; 6],
}

impl EndpointEntry {
    fn value(&self) -> RouteEndpoint {
        RouteEndpoint {
            ifindex: self.ifindex,
            identity: self.identity,
            lxc_mac: self.lxc_mac,
            pod_mac: self.pod_mac,
        }
    }

    fn key(&self) -> u32 {
        common::addr_be(self.address.octets())
    }
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl fmt::Display for EndpointEntry {
    /// `10.244.1.154  ifindex 3  identity 48312  mac 0a:.. lxc mac 0e:..`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<15}  ifindex {:<4}  identity {:<8}  mac {}  lxc mac {}",
            self.address.to_string(),
            self.ifindex,
            self.identity,
            mac(&self.pod_mac),
            mac(&self.lxc_mac)
        )
    }
}

/// A remote node CIDR and the node it is tunnelled to, one row of
/// `labctl show route` (like `cilium bpf tunnel list`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelEntry {
    /// The CIDR's address (host bits zero).
    pub prefix: Ipv4Addr,
    /// Its prefix length, 0 to 32.
    pub prefix_len: u8,
    /// The remote node's underlay address.
    pub remote: Ipv4Addr,
}

impl TunnelEntry {
    fn key(&self) -> Key<u32> {
        Key::new(
            u32::from(self.prefix_len),
            common::addr_be(self.prefix.octets()),
        )
    }
}

impl fmt::Display for TunnelEntry {
    /// `10.244.6.0/24  -> 192.168.66.221`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cidr = format!("{}/{}", self.prefix, self.prefix_len);
        write!(f, "{cidr:<18}  -> {}", self.remote)
    }
}

/// How the router delivers a packet to a local endpoint (Cilium's two
/// ways, seed 002's host networking).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RedirectMode {
    /// `bpf_redirect(lxc, 0)`: out of the endpoint's `lxc` device, whose
    /// tap sees the frame leave with the rewritten MACs, into the pod.
    #[default]
    Egress,
    /// `bpf_redirect_peer(lxc, 0)`: straight into the pod's `eth0`
    /// ingress; the `lxc` device sees nothing.
    Peer,
}

impl RedirectMode {
    /// The mode's name, as the topology's `redirect:` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Peer => "peer",
        }
    }

    /// The value of `RouteConfig::redirect`.
    pub const fn value(self) -> u32 {
        match self {
            Self::Egress => ROUTE_REDIRECT_EGRESS,
            Self::Peer => ROUTE_REDIRECT_PEER,
        }
    }

    /// The mode the program takes a config value for: peer for
    /// [`ROUTE_REDIRECT_PEER`], egress for anything else.
    pub const fn from_value(value: u32) -> Self {
        if value == ROUTE_REDIRECT_PEER {
            Self::Peer
        } else {
            Self::Egress
        }
    }

    /// The helper the program calls.
    pub const fn helper(self) -> &'static str {
        match self {
            Self::Egress => "bpf_redirect",
            Self::Peer => "bpf_redirect_peer",
        }
    }
}

impl fmt::Display for RedirectMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a node's maps hold: its endpoints, the remote CIDRs, the VXLAN
/// device to encapsulate through (0: none) and how local endpoints are
/// delivered to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTables {
    /// Local endpoints, by address.
    pub endpoints: Vec<EndpointEntry>,
    /// Remote node CIDRs.
    pub tunnels: Vec<TunnelEntry>,
    /// The ifindex of the node's VXLAN device.
    pub tunnel_ifindex: u32,
    /// Local delivery.
    pub redirect: RedirectMode,
}

impl RouteTables {
    /// The entries [`RouteMaps::program`] writes, as bytes: what `labctl
    /// plan -o script` prints as `bpftool map update` lines (a fresh map
    /// has nothing to remove).
    pub fn updates(&self) -> Vec<MapUpdate> {
        let mut out = Vec::new();
        for e in &self.endpoints {
            let v = e.value();
            let mut value = Vec::with_capacity(20);
            value.extend(v.ifindex.to_ne_bytes());
            value.extend(v.identity.to_ne_bytes());
            value.extend(v.lxc_mac);
            value.extend(v.pod_mac);
            out.push(MapUpdate {
                map: MAP_ROUTE_ENDPOINTS,
                key: e.key().to_ne_bytes().to_vec(),
                value,
            });
        }
        for t in &self.tunnels {
            let mut key = u32::from(t.prefix_len).to_ne_bytes().to_vec();
            key.extend(common::addr_be(t.prefix.octets()).to_ne_bytes());
            out.push(MapUpdate {
                map: MAP_ROUTE_TUNNELS,
                key,
                value: common::addr_be(t.remote.octets()).to_ne_bytes().to_vec(),
            });
        }
        let mut config = self.tunnel_ifindex.to_ne_bytes().to_vec();
        config.extend(self.redirect.value().to_ne_bytes());
        out.push(MapUpdate {
            map: MAP_ROUTE_CONFIG,
            key: 0u32.to_ne_bytes().to_vec(),
            value: config,
        });
        out
    }
}

/// The router of one node: its programs loaded, its maps pinned.
pub struct Router {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Loads both programs with their maps pinned as `pin_dir/ROUTE_*`
    /// (reused when already there); one directory per node. Like
    /// `bpftool prog loadall OBJ PIN_DIR type classifier pinmaps PIN_DIR`.
    pub fn load_pinned(pin_dir: &Path) -> Result<Self> {
        Ok(Self {
            ebpf: crate::load_object(
                OBJECT,
                pin_dir,
                &RouteProgram::ALL.map(RouteProgram::name),
                &labctl_ebpf_common::ROUTE_PINNED_MAPS,
            )?,
            pin_dir: pin_dir.to_owned(),
        })
    }

    /// Pins both programs as [`RouteProgram::pin_path`], for netlink tc
    /// filters to attach by path.
    pub fn pin_programs(&mut self) -> Result<()> {
        crate::pin_programs(
            &mut self.ebpf,
            &self.pin_dir,
            &RouteProgram::ALL.map(RouteProgram::name),
        )
    }

    /// Runs a program once on `frame` with `BPF_PROG_TEST_RUN`; maps are
    /// used as for a real packet. A redirect is only reported (the action
    /// `TC_ACT_REDIRECT` = 7), not performed.
    pub fn test_run(&self, program: RouteProgram, frame: &[u8]) -> Result<TestRunOutput> {
        crate::test_run(&self.ebpf, program.name(), frame)
    }
}

/// A node's pinned router maps, opened by path.
pub struct RouteMaps {
    endpoints: HashMap<MapData, u32, RouteEndpoint>,
    tunnels: LpmTrie<MapData, u32, RouteTunnel>,
    config: Array<MapData, RouteConfig>,
}

impl fmt::Debug for RouteMaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteMaps").finish_non_exhaustive()
    }
}

fn map_err(map: &'static str, action: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |source| Error::Map {
        map,
        action,
        source: Box::new(source),
    }
}

impl RouteMaps {
    /// Opens the maps a [`Router`] pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self> {
        Ok(Self {
            endpoints: crate::maps::open(pin_dir, MAP_ROUTE_ENDPOINTS)?,
            tunnels: crate::maps::open(pin_dir, MAP_ROUTE_TUNNELS)?,
            config: crate::maps::open(pin_dir, MAP_ROUTE_CONFIG)?,
        })
    }

    /// Makes the maps hold exactly `tables`: entries not in it are
    /// removed, the others written (like the agent's sync of its endpoint
    /// and tunnel maps).
    pub fn program(&mut self, tables: &RouteTables) -> Result<()> {
        let wanted: Vec<u32> = tables.endpoints.iter().map(EndpointEntry::key).collect();
        let stale: Vec<u32> = self
            .endpoints
            .keys()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(map_err(MAP_ROUTE_ENDPOINTS, "list"))?
            .into_iter()
            .filter(|k| !wanted.contains(k))
            .collect();
        for k in stale {
            self.endpoints
                .remove(&k)
                .map_err(map_err(MAP_ROUTE_ENDPOINTS, "remove"))?;
        }
        for e in &tables.endpoints {
            self.endpoints
                .insert(e.key(), e.value(), 0)
                .map_err(map_err(MAP_ROUTE_ENDPOINTS, "update"))?;
        }
        let wanted: Vec<(u32, u32)> = tables
            .tunnels
            .iter()
            .map(|t| {
                let k = t.key();
                (k.prefix_len(), k.data())
            })
            .collect();
        let stale: Vec<Key<u32>> = self
            .tunnels
            .keys()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(map_err(MAP_ROUTE_TUNNELS, "list"))?
            .into_iter()
            .filter(|k| !wanted.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale {
            self.tunnels
                .remove(&k)
                .map_err(map_err(MAP_ROUTE_TUNNELS, "remove"))?;
        }
        for t in &tables.tunnels {
            let remote = RouteTunnel {
                remote: common::addr_be(t.remote.octets()),
            };
            self.tunnels
                .insert(&t.key(), remote, 0)
                .map_err(map_err(MAP_ROUTE_TUNNELS, "update"))?;
        }
        let config = RouteConfig {
            tunnel_ifindex: tables.tunnel_ifindex,
            redirect: tables.redirect.value(),
        };
        self.config
            .set(0, config, 0)
            .map_err(map_err(MAP_ROUTE_CONFIG, "update"))
    }

    /// What the maps hold, endpoints and tunnels sorted.
    pub fn tables(&self) -> Result<RouteTables> {
        let mut endpoints = Vec::new();
        for item in self.endpoints.iter() {
            let (k, v) = item.map_err(map_err(MAP_ROUTE_ENDPOINTS, "list"))?;
            endpoints.push(EndpointEntry {
                address: Ipv4Addr::from(common::addr_from_be(k)),
                ifindex: v.ifindex,
                identity: v.identity,
                lxc_mac: v.lxc_mac,
                pod_mac: v.pod_mac,
            });
        }
        endpoints.sort();
        let mut tunnels = Vec::new();
        for item in self.tunnels.iter() {
            let (k, v) = item.map_err(map_err(MAP_ROUTE_TUNNELS, "list"))?;
            tunnels.push(TunnelEntry {
                prefix: Ipv4Addr::from(common::addr_from_be(k.data())),
                prefix_len: u8::try_from(k.prefix_len()).unwrap_or(u8::MAX),
                remote: Ipv4Addr::from(common::addr_from_be(v.remote)),
            });
        }
        tunnels.sort();
        let config = self
            .config
            .get(&0, 0)
            .map_err(map_err(MAP_ROUTE_CONFIG, "read"))?;
        Ok(RouteTables {
            endpoints,
            tunnels,
            tunnel_ifindex: config.tunnel_ifindex,
            redirect: RedirectMode::from_value(config.redirect),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names_round_trip() {
        for p in RouteProgram::ALL {
            assert_eq!(RouteProgram::from_name(p.name()), Some(p));
        }
        assert_eq!(RouteProgram::from_name("lb_egress"), None);
    }

    /// The bytes of the script's `bpftool map update` lines are the
    /// common crate's layout: addresses in network order, the LPM key's
    /// prefix length first.
    #[test]
    fn updates_are_the_kernel_layout() {
        let tables = RouteTables {
            endpoints: vec![EndpointEntry {
                address: Ipv4Addr::new(10, 244, 1, 154),
                ifindex: 3,
                identity: 0x0102_0304,
                lxc_mac: [1, 2, 3, 4, 5, 6],
                pod_mac: [7, 8, 9, 10, 11, 12],
            }],
            tunnels: vec![TunnelEntry {
                prefix: Ipv4Addr::new(10, 244, 6, 0),
                prefix_len: 24,
                remote: Ipv4Addr::new(192, 168, 66, 221),
            }],
            tunnel_ifindex: 9,
            redirect: RedirectMode::Peer,
        };
        let u = tables.updates();
        assert_eq!(u.len(), 3);
        assert_eq!(u[0].map, MAP_ROUTE_ENDPOINTS);
        assert_eq!(u[0].key, [10, 244, 1, 154]);
        let mut value = 3u32.to_ne_bytes().to_vec();
        value.extend(0x0102_0304u32.to_ne_bytes());
        value.extend([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(u[0].value, value);
        assert_eq!(u[1].map, MAP_ROUTE_TUNNELS);
        let mut key = 24u32.to_ne_bytes().to_vec();
        key.extend([10, 244, 6, 0]);
        assert_eq!(u[1].key, key);
        assert_eq!(u[1].value, [192, 168, 66, 221]);
        assert_eq!(u[2].map, MAP_ROUTE_CONFIG);
        let mut config = 9u32.to_ne_bytes().to_vec();
        config.extend(1u32.to_ne_bytes());
        assert_eq!(u[2].value, config);
    }

    /// Egress is the default and what a config slot the program does not
    /// know means; the names are the topology's.
    #[test]
    fn redirect_modes_round_trip_their_values() {
        assert_eq!(RedirectMode::default(), RedirectMode::Egress);
        for m in [RedirectMode::Egress, RedirectMode::Peer] {
            assert_eq!(RedirectMode::from_value(m.value()), m);
        }
        assert_eq!(RedirectMode::from_value(7), RedirectMode::Egress);
        assert_eq!(RedirectMode::Peer.to_string(), "peer");
        assert_eq!(RedirectMode::Peer.helper(), "bpf_redirect_peer");
    }

    #[test]
    fn rows_read_like_cilium() {
        let t = TunnelEntry {
            prefix: Ipv4Addr::new(10, 244, 6, 0),
            prefix_len: 24,
            remote: Ipv4Addr::new(192, 168, 66, 221),
        };
        assert_eq!(t.to_string(), "10.244.6.0/24       -> 192.168.66.221");
    }
}
