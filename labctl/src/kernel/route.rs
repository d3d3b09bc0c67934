//! Routes: the payloads of [`Action::AddRoute`] and [`Action::DelRoute`]
//! (a plain `to`/`via`/`dev` route, as every part of the plan but the
//! layer makes them), and of [`Action::AddNsRoute`] and
//! [`Action::DelNsRoute`] (the layer's routes with options), their
//! iproute2 text and their netlink calls (rtnetlink's
//! `RouteMessageBuilder`, with `RTA_MULTIPATH` for several next hops).
//!
//! [`Action::AddRoute`]: crate::kernel::step::Action::AddRoute
//! [`Action::DelRoute`]: crate::kernel::step::Action::DelRoute
//! [`Action::AddNsRoute`]: crate::kernel::step::Action::AddNsRoute
//! [`Action::DelNsRoute`]: crate::kernel::step::Action::DelNsRoute

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use labctl_topology::RouteScope;
use netlink_packet_route::route::RouteScope as NlScope;
use rtnetlink::{RouteMessageBuilder, RouteNextHopBuilder};
use serde::Serialize;

use super::step::{IfRef, Step, route_destination, shell_quote as q};
use super::{KernelError, Netlink, fail};

/// Whether a route message adds or deletes.
enum Op {
    Add,
    Del,
}

/// `DST [via GW] dev IF` as a route message: what [`AddRoute`] adds and
/// [`DelRoute`] deletes.
fn plain(
    d: &Ipv4Net,
    via: Option<Ipv4Addr>,
    ifindex: u32,
) -> netlink_packet_route::route::RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(d.addr(), d.prefix_len())
        .output_interface(ifindex);
    if let Some(via) = via {
        b = b.gateway(via);
    }
    b.build()
}

/// Send one route message in the step's namespace: the one netlink call
/// every route kind here ends in.
async fn send(
    nl: &Netlink,
    step: &Step,
    msg: netlink_packet_route::route::RouteMessage,
    op: Op,
) -> Result<(), KernelError> {
    let routes = nl.handle(&step.netns)?.route();
    match op {
        Op::Add => routes.add(msg).execute().await,
        Op::Del => routes.del(msg).execute().await,
    }
    .map_err(|e| fail(step, e))
}

/// `ip route add DST [via GW] dev IF`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddRoute {
    pub destination: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    pub ifname: String,
    pub ifindex: u32,
}

impl AddRoute {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dst = route_destination(&self.destination);
        let ifname = q(&self.ifname);
        match self.via {
            // `proto static`, as `up` marks its routes.
            Some(via) => write!(
                f,
                "ip -n {ns} route add {dst} via {via} dev {ifname} proto static"
            ),
            // `scope global`: `up` sends rtnetlink's default,
            // universe, where `ip` alone would give a route
            // without a gateway scope link.
            None => write!(
                f,
                "ip -n {ns} route add {dst} dev {ifname} scope global proto static"
            ),
        }
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = plain(&self.destination, self.via, self.ifindex);
        send(nl, step, msg, Op::Add).await
    }
}

/// `ip route del DST [via GW] dev IF`: a scenario's change, undone by
/// the [`AddRoute`] the plan made it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelRoute {
    pub destination: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    pub ifname: String,
    pub ifindex: u32,
}

impl DelRoute {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dst = route_destination(&self.destination);
        write!(f, "ip -n {ns} route del {dst}")?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        write!(f, " dev {}", q(&self.ifname))
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = plain(&self.destination, self.via, self.ifindex);
        send(nl, step, msg, Op::Del).await
    }
}

/// One next hop of an ECMP route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextHop {
    pub via: Option<Ipv4Addr>,
    pub dev: IfRef,
    /// As iproute2 writes it, 1 to 256.
    pub weight: u16,
    pub onlink: bool,
}

/// `ip route add DST [via GW] [dev IF] [onlink] [table T] [metric M]
/// [scope S] proto static [nexthop via GW dev IF weight W [onlink] ...]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddNsRoute {
    pub destination: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    pub dev: Option<IfRef>,
    pub onlink: bool,
    pub table: Option<u32>,
    pub metric: Option<u32>,
    pub scope: Option<RouteScope>,
    pub nexthops: Vec<NextHop>,
}

impl AddNsRoute {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} route add {}",
            route_destination(&self.destination)
        )?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {}", q(&dev.name))?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        if let Some(t) = self.table {
            write!(f, " table {t}")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        if let Some(s) = self.scope {
            write!(f, " scope {}", s.as_str())?;
        }
        // `proto static`, as `up` marks its routes.
        write!(f, " proto static")?;
        for h in &self.nexthops {
            write!(f, " nexthop")?;
            if let Some(via) = h.via {
                write!(f, " via {via}")?;
            }
            write!(f, " dev {} weight {}", q(&h.dev.name), h.weight)?;
            if h.onlink {
                write!(f, " onlink")?;
            }
        }
        Ok(())
    }

    /// The scope iproute2 gives a route it is not told one for: link
    /// without a gateway, global (universe) with one.
    fn scope(&self) -> NlScope {
        match self.scope {
            Some(RouteScope::Global) => NlScope::Universe,
            Some(RouteScope::Link) => NlScope::Link,
            Some(RouteScope::Host) => NlScope::Host,
            None if self.via.is_some() || self.nexthops.iter().any(|h| h.via.is_some()) => {
                NlScope::Universe
            }
            None => NlScope::Link,
        }
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let d = &self.destination;
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(d.addr(), d.prefix_len())
            .scope(self.scope());
        if let Some(via) = self.via {
            b = b.gateway(via);
        }
        if let Some(dev) = &self.dev {
            b = b.output_interface(dev.ifindex);
        }
        if self.onlink {
            b = b.onlink();
        }
        if let Some(t) = self.table {
            b = b.table_id(t);
        }
        if let Some(m) = self.metric {
            b = b.priority(m);
        }
        if !self.nexthops.is_empty() {
            let mut hops = Vec::new();
            for h in &self.nexthops {
                let mut nh = RouteNextHopBuilder::new_ipv4().interface(h.dev.ifindex);
                if let Some(via) = h.via {
                    nh = nh
                        .via(IpAddr::V4(via))
                        .map_err(|e| KernelError::new(step.to_string(), e))?;
                }
                if h.onlink {
                    nh = nh.onlink();
                }
                // The kernel keeps weight - 1 (rtnh_hops).
                hops.push(nh.weight((h.weight - 1) as u8).build());
            }
            b = b.multipath(hops);
        }
        send(nl, step, b.build(), Op::Add).await
    }
}

/// `ip route del DST [table T] [metric M]`: the layer's route to `DST` in
/// that table at that metric, whatever its next hops (a scenario's change
/// taking an ECMP route away; [`AddNsRoute`] puts it back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelNsRoute {
    pub destination: Ipv4Net,
    pub table: Option<u32>,
    pub metric: Option<u32>,
}

impl DelNsRoute {
    /// What takes away the route `add` makes.
    pub fn of(add: &AddNsRoute) -> Self {
        DelNsRoute {
            destination: add.destination,
            table: add.table,
            metric: add.metric,
        }
    }

    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} route del {}",
            route_destination(&self.destination)
        )?;
        if let Some(t) = self.table {
            write!(f, " table {t}")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        Ok(())
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let d = &self.destination;
        let mut b =
            RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(d.addr(), d.prefix_len());
        if let Some(t) = self.table {
            b = b.table_id(t);
        }
        if let Some(m) = self.metric {
            b = b.priority(m);
        }
        send(nl, step, b.build(), Op::Del).await
    }
}
