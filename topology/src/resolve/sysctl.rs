//! Resolution of sysctls: only names the kernel keeps per network
//! namespace, with one-line values, so a lab never changes the host.

use serde_saphyr::{Location, Spanned};

use super::Resolver;
use crate::raw::*;

impl Resolver<'_> {
    /// Check a node's sysctl: a path under /proc/sys/net that the kernel
    /// keeps per network namespace (labctl runs as root: anything else
    /// would change the host), with a one-line value. `map` is where the
    /// sysctls mapping starts.
    pub(super) fn sysctl(
        &mut self,
        key: &str,
        value: &Spanned<SysctlValue>,
        map: &Location,
    ) -> bool {
        let key_span = self.key_span(key, map, &value.referenced);
        let problem = if !valid_sysctl(key) {
            Some((
                format!("invalid sysctl name `{key}`"),
                "invalid sysctl",
                "sysctl names are dotted paths under /proc/sys, like net.ipv4.ip_forward"
                    .to_string(),
            ))
        } else {
            match sysctl_scope(key) {
                SysctlScope::Netns => None,
                SysctlScope::NotNet => Some((
                    format!(
                        "sysctl `{key}` is not a network sysctl: setting it would change the host"
                    ),
                    "not per namespace",
                    SYSCTL_HELP.to_string(),
                )),
                SysctlScope::Global => Some((
                    format!(
                        "sysctl `{key}` is global, not kept per network namespace: setting it \
                         would change the host"
                    ),
                    "not per namespace",
                    SYSCTL_HELP.to_string(),
                )),
                SysctlScope::Unknown => Some((
                    format!("sysctl `{key}` is not one the kernel keeps per network namespace"),
                    "not per namespace",
                    SYSCTL_HELP.to_string(),
                )),
            }
        };
        if let Some((message, label, help)) = problem {
            let p = self.src.at_span(key_span, message, label, Some(help));
            self.problems.push(p);
            return false;
        }
        let text = &value.value.0;
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            let what = match c {
                '\n' | '\r' => "a line break".to_string(),
                c => format!("the control character {c:?}"),
            };
            self.err(
                &value.referenced,
                format!("the value of sysctl `{key}` contains {what}"),
                "invalid value",
                Some(
                    "a sysctl value is one line of text, like `1` or `4096 131072 6291456`".into(),
                ),
            );
            return false;
        }
        true
    }

    /// The span of a sysctl's key: its last occurrence between the start of
    /// the mapping and its value (the mapping itself if not found, e.g. for
    /// a key written with escapes).
    fn key_span(&self, key: &str, map: &Location, value: &Location) -> miette::SourceSpan {
        let start = self.src.span(map).offset();
        let end = self.src.span(value).offset();
        let found = (!key.is_empty() && start <= end)
            .then(|| self.src.text.get(start..end))
            .flatten()
            .and_then(|between| between.rfind(key));
        match found {
            Some(at) => miette::SourceSpan::new((start + at).into(), key.len()),
            None => self.src.span(map),
        }
    }
}

pub(super) const SYSCTL_HELP: &str = "labctl sets only sysctls the kernel keeps per network namespace: \
                           net.ipv4.*, net.ipv6.*, net.netfilter.*, net.bridge.bridge-nf-*, \
                           net.mpls.*, net.core.somaxconn, net.unix.max_dgram_qlen and a few \
                           more; set the host's own sysctls on the host";

/// Where a sysctl lives.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SysctlScope {
    /// In each network namespace: a lab may set it.
    Netns,
    /// Under /proc/sys/net, but one for the whole machine.
    Global,
    /// Under /proc/sys/net, in no subtree known to be per namespace.
    Unknown,
    /// Not under /proc/sys/net at all (`kernel.*`, `fs.*`, `vm.*`).
    NotNet,
}

/// Leaves of `net.ipv4` that are one for the machine (the kernel's
/// `ipv4_table`, registered in the initial namespace only, and entries of the
/// per-namespace table without per-namespace data, read-only elsewhere).
const IPV4_GLOBAL: &[&str] = &[
    "cipso_cache_bucket_size",
    "cipso_cache_enable",
    "cipso_rbm_optfmt",
    "cipso_rbm_strictvalid",
    "fib_sync_mem",
    "inet_peer_maxttl",
    "inet_peer_minttl",
    "inet_peer_threshold",
    "ipfrag_secret_interval",
    "tcp_allowed_congestion_control",
    "tcp_available_congestion_control",
    "tcp_available_ulp",
    "tcp_low_latency",
    "tcp_max_orphans",
    "tcp_mem",
    "udp_mem",
];

/// The leaves of `net.ipv4.route` kept per namespace; the others (gc_*,
/// max_size, redirect_*) are the machine's.
const IPV4_ROUTE_NETNS: &[&str] = &[
    "error_burst",
    "error_cost",
    "flush",
    "min_adv_mss",
    "min_pmtu",
    "mtu_expires",
];

/// Leaves of `net.ipv6` that are one for the machine (`ipv6_rotable`).
const IPV6_GLOBAL: &[&str] = &[
    "calipso_cache_bucket_size",
    "calipso_cache_enable",
    "ip6frag_secret_interval",
    "mld_max_msf",
    "mld_qrv",
];

/// Leaves of `net.netfilter` that are the machine's (read-only outside the
/// initial namespace).
const NETFILTER_GLOBAL: &[&str] = &[
    "nf_conntrack_buckets",
    "nf_conntrack_expect_max",
    "nf_conntrack_max",
];

/// The leaves of `net.core` kept per namespace (`netns_core_table` and
/// the xfrm ones); the rest of `net.core` (rmem_max, netdev_max_backlog,
/// bpf_jit_*, ...) is the machine's.
const CORE_NETNS: &[&str] = &[
    "somaxconn",
    "txrehash",
    "xfrm_acq_expires",
    "xfrm_aevent_etime",
    "xfrm_aevent_rseqth",
    "xfrm_larval_drop",
];

/// Whether a (valid) sysctl name is kept per network namespace. In a
/// namespace other than the initial one, /proc/sys/net shows only the
/// per-namespace tables, so what is global here is absent or read-only
/// there; anything outside `net` is the host's.
pub(super) fn sysctl_scope(key: &str) -> SysctlScope {
    let parts: Vec<&str> = key.split(['.', '/']).collect();
    match parts.as_slice() {
        ["net", "ipv4", "route", leaf] => scope_if(IPV4_ROUTE_NETNS.contains(leaf)),
        ["net", "ipv4" | "ipv6", "neigh", "default", ..] => SysctlScope::Global,
        ["net", "ipv4", leaf] if IPV4_GLOBAL.contains(leaf) => SysctlScope::Global,
        ["net", "ipv6", leaf] if IPV6_GLOBAL.contains(leaf) => SysctlScope::Global,
        ["net", "netfilter", leaf] if NETFILTER_GLOBAL.contains(leaf) => SysctlScope::Global,
        [
            "net",
            "ipv4" | "ipv6" | "netfilter" | "mpls" | "sctp" | "mptcp",
            _,
            ..,
        ] => SysctlScope::Netns,
        ["net", "bridge", leaf] if leaf.starts_with("bridge-nf-") => SysctlScope::Netns,
        ["net", "unix", "max_dgram_qlen"] => SysctlScope::Netns,
        ["net", "core", leaf] => scope_if(CORE_NETNS.contains(leaf)),
        ["net", "nf_conntrack_max"] => SysctlScope::Global,
        ["net", ..] => SysctlScope::Unknown,
        _ => SysctlScope::NotNet,
    }
}

fn scope_if(per_netns: bool) -> SysctlScope {
    if per_netns {
        SysctlScope::Netns
    } else {
        SysctlScope::Global
    }
}

/// Sysctl names are paths under /proc/sys: no empty, `.` or `..` parts.
pub(super) fn valid_sysctl(key: &str) -> bool {
    !key.is_empty()
        && key.split(['.', '/']).all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}
