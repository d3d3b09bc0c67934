//! Resolution of `clients`: each client's network, address, gateway and
//! vpc port.

use super::{Resolver, first_host, ifname_problem, last_host};
use crate::model::*;
use crate::raw::*;

impl Resolver<'_> {
    pub(super) fn client(&mut self, raw: &RawClient) -> Option<Client> {
        let name = &raw.name.value;
        let address = self.cidr(&raw.address, "client address")?;
        let net = address.trunc();
        let addr = address.addr();
        let help = format!(
            "the client's network is {net}: use an address from {} to {}",
            first_host(net),
            last_host(net)
        );
        let mut ok = self.inside(
            addr,
            net,
            &raw.address.referenced,
            String::new,
            help.clone(),
        );
        let own_network = self.claim_network(
            net,
            format!("the network of client {name}"),
            &raw.address.referenced,
        );
        if !own_network {
            return None;
        }
        if ok {
            self.claim_address(addr, format!("client {name}"), &raw.address.referenced);
        }
        let gateway = match &raw.gateway {
            Some(text) => {
                let gateway = self.ipv4(text, "gateway")?;
                if !self.inside(
                    gateway,
                    net,
                    &text.referenced,
                    || format!("gateway {gateway} is outside the network of client {name} ({net})"),
                    help,
                ) {
                    return None;
                }
                self.claim_address(
                    gateway,
                    format!("the gateway of client {name}"),
                    &text.referenced,
                );
                gateway
            }
            None => {
                let gateway = first_host(net);
                if gateway == addr {
                    self.err(
                        &raw.address.referenced,
                        format!("address {addr} is the default gateway of {net}"),
                        "taken by the gateway",
                        Some(format!(
                            "the client's gateway defaults to the first host of its network; \
                             set `gateway:` or use another address of {net}"
                        )),
                    );
                    ok = false;
                } else {
                    self.claim_address(
                        gateway,
                        format!("the gateway of client {name}"),
                        &raw.address.referenced,
                    );
                }
                gateway
            }
        };
        let vpc_port = if ifname_problem(name).is_none() {
            name.clone()
        } else {
            hashed_ifname("p", name)
        };
        self.vpc_ifname(&vpc_port, format!("client {name}"), &raw.name.referenced);
        ok.then(|| Client {
            name: name.clone(),
            address,
            gateway,
            vpc_port,
        })
    }
}
