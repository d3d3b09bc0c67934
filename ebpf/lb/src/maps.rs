//! The pinned maps seen from userspace: any labctl process (`labctl show
//! lb`, `labctl monitor`, a scenario step pinning a backend) opens them by
//! path, with no need for the process that loaded the programs.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData, MapError, RingBuf};
use labctl_ebpf_common::{
    self as common, BackendKey, DIR_REPLY, Endpoint, FlowKey, MAP_BACKENDS, MAP_CONNS, MAP_EVENTS,
    MAP_FLOWS, MAP_SERVICES, MAX_BACKENDS, NO_PIN, ServiceKey,
};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::{Error, Proto, Result, Service};

/// A service and its backends, one row of `labctl show lb` (like
/// `cilium bpf lb list`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The frontend.
    pub service: Service,
    /// The backends, by slot.
    pub backends: Vec<SocketAddrV4>,
    /// The slot all new flows go to, if pinned.
    pub pinned: Option<u32>,
}

impl ServiceEntry {
    /// The backend all new flows go to, if pinned.
    pub fn pinned_backend(&self) -> Option<SocketAddrV4> {
        self.backends.get(self.pinned? as usize).copied()
    }
}

impl fmt::Display for ServiceEntry {
    /// `192.168.27.242:80/TCP -> 10.0.3.38:80, 10.0.3.39:80 (pinned: 10.0.3.38:80)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> ", self.service)?;
        if self.backends.is_empty() {
            f.write_str("(no backends: packets are dropped)")?;
        }
        for (i, backend) in self.backends.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{backend}")?;
        }
        if let Some(pinned) = self.pinned_backend() {
            write!(f, " (pinned: {pinned})")?;
        }
        Ok(())
    }
}

/// A remembered translation: `client -> service` is sent to `backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowEntry {
    /// The protocol.
    pub proto: Proto,
    /// The client (the pod the programs run on).
    pub client: SocketAddrV4,
    /// The service address the client connected to.
    pub service: SocketAddrV4,
    /// The backend it was translated to.
    pub backend: SocketAddrV4,
}

impl fmt::Display for FlowEntry {
    /// `10.0.3.5:41234 -> 192.168.27.242:80 translated to 10.0.3.38:80`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} translated to {}",
            self.client, self.service, self.backend
        )
    }
}

/// Which way a translated packet went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client -> service, destination rewritten to the backend (egress).
    Request,
    /// Backend -> client, source rewritten back to the service (ingress).
    Reply,
}

/// One translation reported by the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LbEvent {
    /// Request or reply.
    pub direction: Direction,
    /// The flow.
    pub flow: FlowEntry,
}

impl LbEvent {
    /// Decodes a ring-buffer record (an `Event` of the common crate).
    fn decode(bytes: &[u8]) -> Option<Self> {
        let u32_at = |i: usize| Some(u32::from_ne_bytes(bytes.get(i..i + 4)?.try_into().ok()?));
        let u16_at = |i: usize| Some(u16::from_ne_bytes(bytes.get(i..i + 2)?.try_into().ok()?));
        // Field offsets of the repr(C) `Event`.
        let ev = common::Event {
            client_addr: u32_at(0)?,
            service_addr: u32_at(4)?,
            backend_addr: u32_at(8)?,
            client_port: u16_at(12)?,
            service_port: u16_at(14)?,
            backend_port: u16_at(16)?,
            proto: *bytes.get(18)?,
            direction: *bytes.get(19)?,
        };
        Some(Self {
            direction: if ev.direction == DIR_REPLY {
                Direction::Reply
            } else {
                Direction::Request
            },
            flow: FlowEntry {
                proto: Proto::from_number(ev.proto)?,
                client: sock(ev.client_addr, ev.client_port),
                service: sock(ev.service_addr, ev.service_port),
                backend: sock(ev.backend_addr, ev.backend_port),
            },
        })
    }
}

impl fmt::Display for LbEvent {
    /// A request: `10.0.3.5:41234 -> 192.168.27.242:80 translated to
    /// 10.0.3.38:80`; a reply:
    /// `10.0.3.38:80 -> 10.0.3.5:41234 translated from 192.168.27.242:80`
    /// (its source becomes the service again).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let FlowEntry {
            client,
            service,
            backend,
            ..
        } = self.flow;
        match self.direction {
            Direction::Request => self.flow.fmt(f),
            Direction::Reply => write!(f, "{backend} -> {client} translated from {service}"),
        }
    }
}

fn sock(addr: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(common::addr_from_be(addr)),
        common::port_from_be(port),
    )
}

fn endpoint(addr: SocketAddrV4) -> Endpoint {
    Endpoint {
        addr: common::addr_be(addr.ip().octets()),
        port: common::port_be(addr.port()),
        pad: 0,
    }
}

/// One map entry to write, as `bpftool map update pinned PIN key hex ..
/// value hex ..` writes it: the bytes are the `repr(C)` structs of the
/// common crate in the kernel's (native) layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapUpdate {
    /// The map's pin name (`LB_SERVICES`, `LB_BACKENDS`).
    pub map: &'static str,
    /// The key's bytes.
    pub key: Vec<u8>,
    /// The value's bytes.
    pub value: Vec<u8>,
}

fn service_key_bytes(key: ServiceKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    out.extend(key.addr.to_ne_bytes());
    out.extend(key.port.to_ne_bytes());
    out.extend([key.proto, key.pad]);
    out
}

/// The entries [`LbMaps::set_service`] writes for `service`, in its order
/// (every backend slot, then the service with the count that exposes
/// them), as bytes: what `labctl plan -o script` prints as `bpftool map
/// update` lines. Slots above `backends.len()` left by a larger earlier
/// set are not in it: `set_service` removes them, a fresh map has none.
pub fn service_updates(
    service: Service,
    backends: &[SocketAddrV4],
    pinned: Option<u32>,
) -> Result<Vec<MapUpdate>> {
    let count = u32::try_from(backends.len())
        .ok()
        .filter(|&n| n <= MAX_BACKENDS)
        .ok_or_else(|| Error::TooManyBackends {
            service: service.to_string(),
            count: backends.len(),
            max: MAX_BACKENDS,
        })?;
    let pinned = pin_slot(service, pinned, count)?;
    let key = service.key();
    let mut out = Vec::new();
    for (index, backend) in (0u32..).zip(backends) {
        let e = endpoint(*backend);
        let mut k = service_key_bytes(key);
        k.extend(index.to_ne_bytes());
        let mut v = Vec::with_capacity(8);
        v.extend(e.addr.to_ne_bytes());
        v.extend(e.port.to_ne_bytes());
        v.extend(e.pad.to_ne_bytes());
        out.push(MapUpdate {
            map: MAP_BACKENDS,
            key: k,
            value: v,
        });
    }
    let mut v = Vec::with_capacity(8);
    v.extend(count.to_ne_bytes());
    v.extend(pinned.to_ne_bytes());
    out.push(MapUpdate {
        map: MAP_SERVICES,
        key: service_key_bytes(key),
        value: v,
    });
    Ok(out)
}

/// The load balancer's pinned maps, opened by path.
pub struct LbMaps {
    pin_dir: PathBuf,
    services: HashMap<MapData, ServiceKey, common::Service>,
    backends: HashMap<MapData, BackendKey, Endpoint>,
    conns: HashMap<MapData, FlowKey, Endpoint>,
    flows: HashMap<MapData, FlowKey, Endpoint>,
    events: RingBuf<MapData>,
}

impl fmt::Debug for LbMaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LbMaps")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn open<T: TryFrom<Map, Error = MapError>>(pin_dir: &Path, name: &str) -> Result<T> {
    let path = pin_dir.join(name);
    let err = |source| Error::OpenMap {
        path: path.clone(),
        source: Box::new(source),
    };
    let data = MapData::from_pin(&path).map_err(err)?;
    Map::from_map_data(data).and_then(T::try_from).map_err(err)
}

fn map_err(map: &'static str, action: &'static str) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map {
        map,
        action,
        source: Box::new(source),
    }
}

/// The `pinned` value of a service with `count` backends pinned to slot
/// `index` (`None`: not pinned); a slot past the end is an error.
fn pin_slot(service: Service, index: Option<u32>, count: u32) -> Result<u32> {
    match index {
        Some(i) if i >= count => Err(Error::NoBackend {
            service: service.to_string(),
            index: i,
            count,
        }),
        Some(i) => Ok(i),
        None => Ok(NO_PIN),
    }
}

impl LbMaps {
    /// Opens the maps pinned in `pin_dir` by [`crate::Lb::load_pinned`].
    pub fn open(pin_dir: &Path) -> Result<Self> {
        Ok(Self {
            pin_dir: pin_dir.to_owned(),
            services: open(pin_dir, MAP_SERVICES)?,
            backends: open(pin_dir, MAP_BACKENDS)?,
            conns: open(pin_dir, MAP_CONNS)?,
            flows: open(pin_dir, MAP_FLOWS)?,
            events: open(pin_dir, MAP_EVENTS)?,
        })
    }

    /// Creates or replaces `service` with `backends` (in slot order), every
    /// new flow going to slot `pinned` (`None`: chosen by hash). Flows
    /// already remembered keep their backend. Slots are written before the
    /// count that exposes them, so the programs never see a count without
    /// its slots.
    pub fn set_service(
        &mut self,
        service: Service,
        backends: &[SocketAddrV4],
        pinned: Option<u32>,
    ) -> Result<()> {
        let count = u32::try_from(backends.len())
            .ok()
            .filter(|&n| n <= MAX_BACKENDS)
            .ok_or_else(|| Error::TooManyBackends {
                service: service.to_string(),
                count: backends.len(),
                max: MAX_BACKENDS,
            })?;
        let pinned = pin_slot(service, pinned, count)?;
        let key = service.key();
        let old = self.services.get(&key, 0).ok();
        for (index, backend) in (0..).zip(backends) {
            self.backends
                .insert(
                    BackendKey {
                        service: key,
                        index,
                    },
                    endpoint(*backend),
                    0,
                )
                .map_err(map_err(MAP_BACKENDS, "add a backend"))?;
        }
        self.services
            .insert(key, common::Service { count, pinned }, 0)
            .map_err(map_err(MAP_SERVICES, "add the service"))?;
        if let Some(old) = old {
            for index in count..old.count {
                self.remove_slot(key, index)?;
            }
        }
        Ok(())
    }

    /// Removes `service` and its backend slots; like
    /// `cilium service delete`. Missing services are not an error.
    pub fn remove_service(&mut self, service: Service) -> Result<()> {
        let key = service.key();
        let Ok(old) = self.services.get(&key, 0) else {
            return Ok(());
        };
        match self.services.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(MAP_SERVICES, "remove the service")(e)),
        }
        for index in 0..old.count {
            self.remove_slot(key, index)?;
        }
        Ok(())
    }

    fn remove_slot(&mut self, service: ServiceKey, index: u32) -> Result<()> {
        match self.backends.remove(&BackendKey { service, index }) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(MAP_BACKENDS, "remove a backend")(e)),
        }
    }

    /// Sends every new flow of `service` to backend slot `index`, or back to
    /// hashing with `None`. Flows already remembered keep their backend.
    pub fn pin_backend(&mut self, service: Service, index: Option<u32>) -> Result<()> {
        let key = service.key();
        let mut value = self.services.get(&key, 0).map_err(|e| match e {
            MapError::KeyNotFound => Error::NoService {
                service: service.to_string(),
            },
            e => map_err(MAP_SERVICES, "read the service")(e),
        })?;
        value.pinned = pin_slot(service, index, value.count)?;
        self.services
            .insert(key, value, 0)
            .map_err(map_err(MAP_SERVICES, "update the service"))
    }

    /// Every service with its backends, sorted.
    pub fn services(&self) -> Result<Vec<ServiceEntry>> {
        let mut out = Vec::new();
        for item in self.services.iter() {
            let (key, value) = item.map_err(map_err(MAP_SERVICES, "list services"))?;
            let Some(proto) = Proto::from_number(key.proto) else {
                continue;
            };
            let mut backends = Vec::new();
            for index in 0..value.count {
                match self.backends.get(
                    &BackendKey {
                        service: key,
                        index,
                    },
                    0,
                ) {
                    Ok(b) => backends.push(sock(b.addr, b.port)),
                    // Being rewritten concurrently; show what is there.
                    Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(MAP_BACKENDS, "read a backend")(e)),
                }
            }
            let addr = sock(key.addr, key.port);
            out.push(ServiceEntry {
                service: Service::new(*addr.ip(), addr.port(), proto),
                backends,
                pinned: (value.pinned < value.count).then_some(value.pinned),
            });
        }
        out.sort_by_key(|e| e.service);
        Ok(out)
    }

    /// The remembered translations (the reverse map the reply path uses),
    /// sorted.
    pub fn flows(&self) -> Result<Vec<FlowEntry>> {
        let mut out = Vec::new();
        for item in self.flows.iter() {
            let (key, service) = item.map_err(map_err(MAP_FLOWS, "list flows"))?;
            let Some(proto) = Proto::from_number(key.proto) else {
                continue;
            };
            out.push(FlowEntry {
                proto,
                client: sock(key.client_addr, key.client_port),
                service: sock(service.addr, service.port),
                backend: sock(key.peer_addr, key.peer_port),
            });
        }
        out.sort();
        Ok(out)
    }

    /// Forgets every remembered flow, so new packets choose again (like
    /// flushing Cilium's CT map).
    pub fn flush_flows(&mut self) -> Result<()> {
        for (map, name) in [(&mut self.conns, MAP_CONNS), (&mut self.flows, MAP_FLOWS)] {
            let keys: Vec<FlowKey> = map.keys().filter_map(|k| k.ok()).collect();
            for key in keys {
                match map.remove(&key) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(name, "remove a flow")(e)),
                }
            }
        }
        Ok(())
    }

    /// The next event already in the ring buffer, without waiting.
    /// Consuming is shared: two readers of one pin directory split the events.
    pub fn try_next_event(&mut self) -> Option<LbEvent> {
        // Skip records we cannot decode (a newer program, say).
        while let Some(item) = self.events.next() {
            if let Some(event) = LbEvent::decode(&item) {
                return Some(event);
            }
        }
        None
    }

    /// The next event, waiting up to `timeout` (`None`: forever) for one.
    pub fn poll_event(&mut self, timeout: Option<Duration>) -> Result<Option<LbEvent>> {
        if let Some(event) = self.try_next_event() {
            return Ok(Some(event));
        }
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(self.events.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Poll(e)),
        }
        Ok(self.try_next_event())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_updates_are_the_structs_bytes() {
        let svc = Service::new(Ipv4Addr::new(192, 168, 27, 242), 80, Proto::Tcp);
        let backends = [
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 3, 38), 8080),
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 3, 39), 8080),
        ];
        let u = service_updates(svc, &backends, Some(1)).unwrap();
        assert_eq!(u.len(), 3);
        assert_eq!(u[0].map, MAP_BACKENDS);
        assert_eq!(u[0].key.len(), size_of::<BackendKey>());
        assert_eq!(u[0].value.len(), size_of::<Endpoint>());
        // Address and port in network order, the slot index native.
        assert_eq!(&u[1].key[..8], &[192, 168, 27, 242, 0, 80, 6, 0]);
        assert_eq!(&u[1].key[8..], &1u32.to_ne_bytes());
        assert_eq!(u[1].value, [10, 0, 3, 39, 0x1f, 0x90, 0, 0]);
        assert_eq!(u[2].map, MAP_SERVICES);
        assert_eq!(u[2].key.len(), size_of::<ServiceKey>());
        assert_eq!(u[2].value.len(), size_of::<common::Service>());
        assert_eq!(&u[2].value[..4], &2u32.to_ne_bytes());
        assert_eq!(&u[2].value[4..], &1u32.to_ne_bytes());
        let u = service_updates(svc, &backends, None).unwrap();
        assert_eq!(&u[2].value[4..], &NO_PIN.to_ne_bytes());
        assert!(service_updates(svc, &backends, Some(2)).is_err());
    }

    fn flow() -> FlowEntry {
        FlowEntry {
            proto: Proto::Tcp,
            client: "10.0.3.5:41234".parse().unwrap(),
            service: "192.168.27.242:80".parse().unwrap(),
            backend: "10.0.3.38:80".parse().unwrap(),
        }
    }

    #[test]
    fn event_display() {
        let request = LbEvent {
            direction: Direction::Request,
            flow: flow(),
        };
        assert_eq!(
            request.to_string(),
            "10.0.3.5:41234 -> 192.168.27.242:80 translated to 10.0.3.38:80"
        );
        let reply = LbEvent {
            direction: Direction::Reply,
            flow: flow(),
        };
        assert_eq!(
            reply.to_string(),
            "10.0.3.38:80 -> 10.0.3.5:41234 translated from 192.168.27.242:80"
        );
    }

    #[test]
    fn event_decode_matches_layout() {
        let ev = common::Event {
            client_addr: common::addr_be([10, 0, 3, 5]),
            service_addr: common::addr_be([192, 168, 27, 242]),
            backend_addr: common::addr_be([10, 0, 3, 38]),
            client_port: common::port_be(41234),
            service_port: common::port_be(80),
            backend_port: common::port_be(80),
            proto: common::PROTO_TCP,
            direction: common::DIR_REQUEST,
        };
        let mut bytes = Vec::new();
        bytes.extend(ev.client_addr.to_ne_bytes());
        bytes.extend(ev.service_addr.to_ne_bytes());
        bytes.extend(ev.backend_addr.to_ne_bytes());
        bytes.extend(ev.client_port.to_ne_bytes());
        bytes.extend(ev.service_port.to_ne_bytes());
        bytes.extend(ev.backend_port.to_ne_bytes());
        bytes.extend([ev.proto, ev.direction]);
        assert_eq!(bytes.len(), size_of::<common::Event>());
        assert_eq!(
            std::mem::offset_of!(common::Event, backend_port),
            16,
            "decode() offsets follow the repr(C) layout"
        );
        let decoded = LbEvent::decode(&bytes).unwrap();
        assert_eq!(decoded.flow, flow());
        assert_eq!(decoded.direction, Direction::Request);
    }

    #[test]
    fn service_entry_display() {
        let e = ServiceEntry {
            service: Service::new(Ipv4Addr::new(192, 168, 27, 242), 80, Proto::Tcp),
            backends: vec![
                "10.0.3.38:80".parse().unwrap(),
                "10.0.3.39:80".parse().unwrap(),
            ],
            pinned: Some(0),
        };
        assert_eq!(
            e.to_string(),
            "192.168.27.242:80/TCP -> 10.0.3.38:80, 10.0.3.39:80 (pinned: 10.0.3.38:80)"
        );
    }
}
