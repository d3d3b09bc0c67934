//! `evpn`: the control plane of a VXLAN fabric (MP-BGP EVPN, or a
//! controller such as Ctrip's CNC) computed by labctl from where each pod
//! is, instead of written out as `fdb` and `neighbours` entries.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{EntityName, Ipv4Text, MacText};

/// One VXLAN segment spread over leaves, and where each pod is. Every leaf
/// gets, for each pod under another leaf, what EVPN's type-2 route would
/// program: an FDB entry on its vxlan device in the bridge (`bridge fdb add
/// MAC dev VXLAN master`), one in the device's own table with the pod's
/// leaf as VTEP (`... dst VTEP self`) and a neighbour entry on the bridge
/// (`ip neigh replace IP lladdr MAC dev BRIDGE`) for ARP suppression; its
/// vxlan device learns nothing (`nolearning`, `learning off` as a bridge
/// port) and answers ARP from those entries (`neigh_suppress on`). A leaf
/// learns its own pods from what they send, as a bridge does.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Evpn")]
pub struct RawEvpn {
    /// The VNI: on every leaf, the vxlan device (from `links`) with this
    /// `id`, a port of a bridge, with `local` its VTEP address.
    #[schemars(with = "u32", range(max = 16777215))]
    pub vni: Spanned<u32>,
    /// The leaves (VTEPs), by namespace.
    #[schemars(with = "Vec<String>")]
    pub leaves: Vec<Spanned<String>>,
    /// Where each pod (its address and MAC) is: under which leaf.
    #[serde(default)]
    pub pods: Vec<RawEvpnPod>,
}

/// A pod of an EVPN segment (a MAC/IP route's subject).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "EvpnPod")]
pub struct RawEvpnPod {
    /// What `evpn_move` calls it (usually its namespace's name).
    #[schemars(with = "EntityName")]
    pub name: Spanned<String>,
    /// The leaf it is under.
    #[schemars(with = "String")]
    pub leaf: Spanned<String>,
    #[schemars(with = "Ipv4Text")]
    pub address: Spanned<String>,
    #[schemars(with = "MacText")]
    pub mac: Spanned<String>,
}
