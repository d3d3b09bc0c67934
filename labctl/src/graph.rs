//! The lab as a diagram, as containerlab's `graph` draws one: every network
//! namespace (the VPC router, nodes, pods, clients) and every bridge (a
//! node's `cni0`, a vSwitch of the VPC) is a vertex, every veth pair, ipvlan
//! attachment and bridge device a link, interface names and addresses on
//! the links. The model is built once, from the plan ([`crate::plan`]), so
//! the diagram shows the kernel objects `up` makes, and rendered three
//! ways: Mermaid and DOT text for people who render elsewhere, SVG laid out
//! in Rust by layout-rs (no Graphviz).
//!
//! A scenario's observed path ([`crate::scenario::Report::path`]) is drawn
//! over the diagram as an [`Overlay`]: the vertices and links the request
//! crossed, in order, and where it stopped when it was not delivered.
//!
//! Every string from the topology is escaped for the output it lands in:
//! Mermaid entity codes, DOT quoted strings, XML text (layout-rs escapes
//! the labels it writes; attributes we add carry only our own words).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;

use ipnet::Ipv4Net;
use labctl_topology::{Lab, Role};
use serde::Serialize;

use crate::kernel::{addr, bridge, link, macvlan, veth};
use crate::plan::{Action, Plan};

/// The lab's diagram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Graph {
    pub lab: String,
    pub vertices: Vec<Vertex>,
    pub links: Vec<Link>,
}

/// A namespace or a bridge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vertex {
    /// `ENTITY` for a namespace, `ENTITY/BRIDGE` for a bridge in it (the
    /// hop name a scenario's path uses for it; the VPC is `vpc`).
    pub id: String,
    /// The entity or the bridge's interface name.
    pub name: String,
    pub kind: VertexKind,
    /// The bridge's own addresses (a namespace's are on its links).
    pub addresses: Vec<Ipv4Net>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VertexKind {
    Namespace(Role),
    /// A bridge; in the VPC, a vSwitch.
    Bridge,
}

impl Vertex {
    /// The word under the name: the entity's role, or what the bridge is.
    pub fn role(&self) -> &'static str {
        match self.kind {
            VertexKind::Namespace(Role::Vpc) => "VPC router",
            VertexKind::Namespace(Role::Node) => "node",
            VertexKind::Namespace(Role::Pod) => "pod",
            VertexKind::Namespace(Role::Client) => "client",
            VertexKind::Namespace(Role::Host) => "host",
            VertexKind::Namespace(Role::Switch) => "switch",
            VertexKind::Namespace(Role::Router) => "router",
            VertexKind::Bridge if self.id.starts_with("vpc/") => "vSwitch",
            VertexKind::Bridge => "bridge",
        }
    }

    /// The label's lines: name, role, addresses.
    fn lines(&self) -> Vec<String> {
        let mut v = vec![self.name.clone(), self.role().to_string()];
        v.extend(self.addresses.iter().map(|a| a.to_string()));
        v
    }
}

/// What joins two vertices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A veth pair (its ends may be bridge ports).
    Veth,
    /// An ipvlan slave in the pod (`b`) of the node's ENI (`a`), or of any
    /// parent in another namespace.
    Ipvlan,
    /// A macvlan in one namespace (`b`) of a parent in another (`a`).
    Macvlan,
    /// A bridge's own device in its namespace: the namespace's stack
    /// reaches the bridge through it.
    Bridge,
}

/// One end of a link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct End {
    /// Index into [`Graph::vertices`].
    pub vertex: usize,
    /// The interface, as a path hop: `ENTITY/IFNAME`.
    pub interface: String,
    pub addresses: Vec<Ipv4Net>,
}

impl End {
    fn text(&self) -> String {
        let ifname = self
            .interface
            .split_once('/')
            .map_or(self.interface.as_str(), |(_, i)| i);
        let mut t = ifname.to_string();
        for a in &self.addresses {
            t.push(' ');
            t.push_str(&a.to_string());
        }
        t
    }
}

/// An edge: `a` is the end nearer the VPC (drawn above).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    pub kind: LinkKind,
    pub a: End,
    pub b: End,
}

impl Link {
    /// The edge's label: both ends' interfaces and addresses.
    pub fn label(&self) -> String {
        match self.kind {
            LinkKind::Veth => format!("{} — {}", self.a.text(), self.b.text()),
            LinkKind::Ipvlan => format!("{} (ipvlan) — {}", self.a.text(), self.b.text()),
            LinkKind::Macvlan => format!("{} (macvlan) — {}", self.a.text(), self.b.text()),
            LinkKind::Bridge => String::new(),
        }
    }
}

/// A vertex or a link of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "index")]
pub enum Element {
    Vertex(usize),
    Link(usize),
}

/// A request's path drawn over the graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overlay {
    /// Every element the request crossed, in order (an element may come
    /// back: the VPC of a hairpin). Elements the path does not name but
    /// the request must have crossed between two it does (the bridge
    /// between a port and the VPC router) are filled in.
    pub steps: Vec<Element>,
    /// The request was not delivered: the last step is where it stopped.
    pub stopped: bool,
    /// Hops of the path the graph does not know.
    pub unknown: Vec<String>,
}

impl Overlay {
    /// The 1-based step numbers at which `e` was crossed.
    pub fn visits(&self, e: Element) -> Vec<usize> {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == e)
            .map(|(i, _)| i + 1)
            .collect()
    }

    /// Where the request stopped, if it did.
    pub fn stop(&self) -> Option<Element> {
        if self.stopped {
            self.steps.last().copied()
        } else {
            None
        }
    }
}

impl Graph {
    /// The diagram of the lab `up` builds from `lab`.
    pub fn of_lab(lab: &Lab) -> Graph {
        Graph::of_plan(&crate::plan::plan(lab))
    }

    /// The diagram of a plan: its namespaces, bridges, veth pairs, ipvlan
    /// slaves and the addresses on them.
    pub fn of_plan(plan: &Plan) -> Graph {
        let entity: HashMap<&str, &str> = plan
            .namespaces
            .iter()
            .map(|n| (n.name.as_str(), n.entity.as_str()))
            .collect();
        let ent = |netns: &str| entity.get(netns).copied().unwrap_or(netns).to_string();
        let hop = |netns: &str, ifname: &str| format!("{}/{ifname}", ent(netns));
        // (netns, ifname) -> addresses; a pod's ipvlan is renamed in the pod.
        let mut addrs: BTreeMap<(String, String), Vec<Ipv4Net>> = BTreeMap::new();
        let mut renamed: HashMap<(String, String), String> = HashMap::new();
        for s in &plan.steps {
            match &s.action {
                Action::AddAddress(addr::AddAddress {
                    ifname, address, ..
                }) => addrs
                    .entry((s.netns.clone(), ifname.clone()))
                    .or_default()
                    .push(*address),
                Action::RenameUp(link::RenameUp { from, ifname, .. }) => {
                    renamed.insert((s.netns.clone(), from.clone()), ifname.clone());
                }
                _ => {}
            }
        }
        let addresses = |netns: &str, ifname: &str| {
            addrs
                .get(&(netns.to_string(), ifname.to_string()))
                .cloned()
                .unwrap_or_default()
        };

        let mut vertices: Vec<Vertex> = plan
            .namespaces
            .iter()
            .map(|n| Vertex {
                id: n.entity.clone(),
                name: n.entity.clone(),
                kind: VertexKind::Namespace(n.role),
                addresses: Vec::new(),
            })
            .collect();
        let mut index: HashMap<String, usize> = vertices
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id.clone(), i))
            .collect();
        let mut links = Vec::new();
        for s in &plan.steps {
            if let Action::AddBridge(bridge::AddBridge { name, .. }) = &s.action {
                let id = hop(&s.netns, name);
                let ns = index[&ent(&s.netns)];
                let i = vertices.len();
                vertices.push(Vertex {
                    id: id.clone(),
                    name: name.clone(),
                    kind: VertexKind::Bridge,
                    addresses: addresses(&s.netns, name),
                });
                index.insert(id.clone(), i);
                links.push(Link {
                    kind: LinkKind::Bridge,
                    a: End {
                        vertex: ns,
                        interface: id.clone(),
                        addresses: Vec::new(),
                    },
                    b: End {
                        vertex: i,
                        interface: id,
                        addresses: Vec::new(),
                    },
                });
            }
        }
        for s in &plan.steps {
            match &s.action {
                Action::AddVeth(veth::AddVeth {
                    name,
                    controller,
                    peer_name,
                    peer_netns,
                    ..
                }) => {
                    let here = match controller {
                        Some(c) => index[&hop(&s.netns, &c.name)],
                        None => index[&ent(&s.netns)],
                    };
                    links.push(Link {
                        kind: LinkKind::Veth,
                        a: End {
                            vertex: here,
                            interface: hop(&s.netns, name),
                            addresses: addresses(&s.netns, name),
                        },
                        b: End {
                            vertex: index[&ent(peer_netns)],
                            interface: hop(peer_netns, peer_name),
                            addresses: addresses(peer_netns, peer_name),
                        },
                    });
                }
                Action::AddOffParent(macvlan::AddOffParent {
                    name,
                    parent,
                    netns: Some(pod_ns),
                    mode,
                    ..
                }) => {
                    let ifname = renamed.get(&(pod_ns.clone(), name.clone())).unwrap_or(name);
                    links.push(Link {
                        kind: match mode {
                            macvlan::Mode::Ipvlan(_) => LinkKind::Ipvlan,
                            macvlan::Mode::Macvlan(_) => LinkKind::Macvlan,
                        },
                        a: End {
                            vertex: index[&ent(&s.netns)],
                            interface: hop(&s.netns, &parent.name),
                            addresses: Vec::new(),
                        },
                        b: End {
                            vertex: index[&ent(pod_ns)],
                            interface: hop(pod_ns, ifname),
                            addresses: addresses(pod_ns, ifname),
                        },
                    });
                }
                _ => {}
            }
        }
        Graph {
            lab: plan.lab.clone(),
            vertices,
            links,
        }
    }

    fn vertex(&self, id: &str) -> Option<usize> {
        self.vertices.iter().position(|v| v.id == id)
    }

    /// The element a path hop names: a bridge or the VPC by its id, an
    /// interface by the link it is an end of (veth ends before the
    /// ENI an ipvlan hangs off), any other interface (an ipvlan slave of
    /// the node, `kube-ipvs0`) by its namespace.
    pub fn element_of(&self, hop: &str) -> Option<Element> {
        if let Some(v) = self.vertex(hop) {
            return Some(Element::Vertex(v));
        }
        let by_end = |kind: Option<LinkKind>| {
            self.links.iter().position(|l| {
                kind.is_none_or(|k| l.kind == k) && (l.a.interface == hop || l.b.interface == hop)
            })
        };
        if let Some(l) = by_end(Some(LinkKind::Veth)).or_else(|| by_end(None)) {
            return Some(Element::Link(l));
        }
        let (entity, _) = hop.split_once('/')?;
        self.vertex(entity).map(Element::Vertex)
    }

    fn neighbours(&self, e: Element) -> Vec<Element> {
        match e {
            Element::Link(l) => {
                let l = &self.links[l];
                vec![Element::Vertex(l.a.vertex), Element::Vertex(l.b.vertex)]
            }
            Element::Vertex(v) => self
                .links
                .iter()
                .enumerate()
                .filter(|(_, l)| l.a.vertex == v || l.b.vertex == v)
                .map(|(i, _)| Element::Link(i))
                .collect(),
        }
    }

    /// The elements strictly between `from` and `to` on a shortest way
    /// through the graph (empty when adjacent or not connected).
    fn between(&self, from: Element, to: Element) -> Vec<Element> {
        let mut prev: HashMap<Element, Element> = HashMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(e) = queue.pop_front() {
            if e == to {
                let mut way = Vec::new();
                let mut at = prev[&to];
                while at != from {
                    way.push(at);
                    at = prev[&at];
                }
                way.reverse();
                return way;
            }
            for n in self.neighbours(e) {
                if n != from && !prev.contains_key(&n) {
                    prev.insert(n, e);
                    queue.push_back(n);
                }
            }
        }
        Vec::new()
    }

    /// Draw a request's path: `from` the sending entity, `path` the hops
    /// the taps saw it on in order, `delivered` whether it reached its
    /// destination (else the last step is marked as where it stopped).
    pub fn overlay(&self, from: &str, path: &[String], delivered: bool) -> Overlay {
        let mut steps: Vec<Element> = Vec::new();
        let mut unknown = Vec::new();
        let go = |steps: &mut Vec<Element>, e: Element| match steps.last() {
            Some(&last) if last == e => {}
            Some(&last) => {
                let fill = self.between(last, e);
                steps.extend(fill);
                steps.push(e);
            }
            None => steps.push(e),
        };
        if let Some(v) = self.vertex(from) {
            go(&mut steps, Element::Vertex(v));
        }
        for hop in path {
            match self.element_of(hop) {
                Some(e) => go(&mut steps, e),
                None => unknown.push(hop.clone()),
            }
        }
        // The last interface the request was seen on leads into its
        // namespace, unless the request started there.
        if let (Some(Element::Link(_)), Some(last)) = (steps.last(), path.last())
            && let Some(v) = last.split_once('/').and_then(|(e, _)| self.vertex(e))
            && !steps.contains(&Element::Vertex(v))
        {
            go(&mut steps, Element::Vertex(v));
        }
        Overlay {
            stopped: !delivered && !steps.is_empty(),
            steps,
            unknown,
        }
    }

    /// Mermaid flowchart text (GitHub renders it in Markdown).
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TB\n");
        for (i, v) in self.vertices.iter().enumerate() {
            let label: Vec<String> = v.lines().iter().map(|l| mermaid_escape(l)).collect();
            let _ = writeln!(out, "  v{i}[\"{}\"]", label.join("<br/>"));
        }
        for l in &self.links {
            let label = l.label();
            if label.is_empty() {
                let _ = writeln!(out, "  v{} --- v{}", l.a.vertex, l.b.vertex);
            } else {
                let _ = writeln!(
                    out,
                    "  v{} ---|\"{}\"| v{}",
                    l.a.vertex,
                    mermaid_escape(&label),
                    l.b.vertex
                );
            }
        }
        out
    }

    /// Graphviz DOT text (`dot -Tsvg` draws it).
    pub fn to_dot(&self) -> String {
        let mut out = format!(
            "graph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\"];\n",
            dot_escape(&self.lab)
        );
        for (i, v) in self.vertices.iter().enumerate() {
            let label: Vec<String> = v.lines().iter().map(|l| dot_escape(l)).collect();
            let _ = writeln!(
                out,
                "  v{i} [label=\"{}\", fillcolor=\"{}\"];",
                label.join("\\n"),
                fill(v)
            );
        }
        for l in &self.links {
            let _ = writeln!(
                out,
                "  v{} -- v{} [label=\"{}\"];",
                l.a.vertex,
                l.b.vertex,
                dot_escape(&l.label())
            );
        }
        out.push_str("}\n");
        out
    }

    /// The diagram as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        self.svg(None)
    }

    /// SVG of the diagram, with `overlay` drawn over it when given: the
    /// path's elements in [`PATH_COLOUR`] with their step numbers, the
    /// stop in [`STOP_COLOUR`], everything else greyed.
    pub fn svg(&self, overlay: Option<&Overlay>) -> String {
        use layout::backends::svg::SVGWriter;
        use layout::core::base::Orientation;
        use layout::core::color::Color;
        use layout::core::style::{LineStyleKind, StyleAttr};
        use layout::std_shapes::render::get_shape_size;
        use layout::std_shapes::shapes::{Arrow, Element as Shape, LineEndKind, ShapeKind};
        use layout::topo::layout::VisualGraph;

        // Our own constants, `#rrggbb`: layout-rs wants 0xrrggbbaa.
        let colour = |hex: &str| {
            Color::new(u32::from_str_radix(&format!("{}ff", &hex[1..]), 16).expect("#rrggbb"))
        };
        let stop = overlay.and_then(Overlay::stop);
        // (line colour, width, label prefix, class) of an element.
        let look = |e: Element| -> (&'static str, usize, String, &'static str) {
            let Some(o) = overlay else {
                return (LINE_COLOUR, 2, String::new(), "");
            };
            let visits = o.visits(e);
            let numbers = visits
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",");
            if stop == Some(e) {
                (STOP_COLOUR, 7, format!("[{numbers}] ✖ stopped"), "stop")
            } else if !visits.is_empty() {
                (PATH_COLOUR, 5, format!("[{numbers}]"), "path")
            } else {
                (DIM_COLOUR, 1, String::new(), "off")
            }
        };
        let mut vg = VisualGraph::new(Orientation::TopToBottom);
        let mut handles = Vec::new();
        for (i, v) in self.vertices.iter().enumerate() {
            let (line, width, prefix, class) = look(Element::Vertex(i));
            let mut lines = v.lines();
            if !prefix.is_empty() {
                lines.insert(0, prefix);
            }
            let shape = ShapeKind::new_box(&lines.join("\n"));
            let style = StyleAttr::new(colour(line), width, Some(colour(fill(v))), 6, FONT);
            let size = get_shape_size(Orientation::TopToBottom, &shape, FONT, false);
            let props = format!("class=\"vertex {class}\" data-vertex=\"{i}\"");
            handles.push(vg.add_node(Shape::create_with_properties(
                shape,
                style,
                Orientation::TopToBottom,
                size,
                props,
            )));
        }
        for (i, l) in self.links.iter().enumerate() {
            let (line, width, prefix, class) = look(Element::Link(i));
            let mut text = l.label();
            if !prefix.is_empty() {
                text = if text.is_empty() {
                    prefix
                } else {
                    format!("{prefix} {text}")
                };
            }
            let style = StyleAttr::new(colour(line), width, None, 0, FONT);
            let mut arrow = Arrow::new(
                LineEndKind::None,
                LineEndKind::None,
                LineStyleKind::Normal,
                &text,
                &style,
                &None,
                &None,
            );
            arrow.properties = Some(format!("class=\"link {class}\" data-link=\"{i}\""));
            vg.add_edge(arrow, handles[l.a.vertex], handles[l.b.vertex]);
        }
        let mut svg = SVGWriter::new();
        vg.do_it(false, false, false, &mut svg);
        svg.finalize()
    }
}

/// The colour of a path drawn over the diagram.
pub const PATH_COLOUR: &str = "#2563eb";
/// The colour of the mark where a request stopped.
pub const STOP_COLOUR: &str = "#dc2626";
const LINE_COLOUR: &str = "#374151";
const DIM_COLOUR: &str = "#9ca3af";
const FONT: usize = 14;

/// A vertex's fill, by what it is.
pub fn fill(v: &Vertex) -> &'static str {
    match v.kind {
        VertexKind::Namespace(Role::Vpc) => VPC_FILL,
        VertexKind::Namespace(Role::Node) => "#e5e7eb",
        VertexKind::Namespace(Role::Pod) => "#dcfce7",
        VertexKind::Namespace(Role::Client) => "#fae8ff",
        VertexKind::Namespace(Role::Host) => "#e0f2fe",
        VertexKind::Namespace(Role::Switch) => "#ffedd5",
        VertexKind::Namespace(Role::Router) => VPC_FILL,
        VertexKind::Bridge => "#ffedd5",
    }
}

/// The VPC router's fill.
pub const VPC_FILL: &str = "#fef3c7";

/// Text for a quoted Mermaid label: every character that could end the
/// quoted label or the edge text, start an entity code or markdown string,
/// or be read as markup by the HTML Mermaid renders to becomes an entity
/// code (`#60;`), which Mermaid shows as the character itself.
fn mermaid_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' | '#' | '<' | '>' | '&' | '|' | '`' => {
                let _ = write!(out, "#{};", c as u32);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text for a DOT quoted string: `"` and `\` escaped (so no `\N`-style
/// escape of Graphviz applies), control characters dropped.
fn dot_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flannel() -> Lab {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies/flannel.yaml");
        labctl_topology::load(
            std::path::Path::new(file),
            &[("services".to_string(), "off".to_string())]
                .into_iter()
                .collect(),
        )
        .expect("flannel loads")
    }

    fn id(g: &Graph, e: Element) -> String {
        match e {
            Element::Vertex(v) => g.vertices[v].id.clone(),
            Element::Link(l) => format!(
                "{}~{}",
                g.vertices[g.links[l].a.vertex].id, g.vertices[g.links[l].b.vertex].id
            ),
        }
    }

    #[test]
    fn flannel_graph_has_every_namespace_bridge_and_link() {
        let g = Graph::of_lab(&flannel());
        let ids: Vec<&str> = g.vertices.iter().map(|v| v.id.as_str()).collect();
        for want in [
            "vpc",
            "node-180",
            "node-206",
            "node-216",
            "centos",
            "client",
            "vpc/vsw-a",
            "vpc/vsw-b",
            "node-180/cni0",
        ] {
            assert!(ids.contains(&want), "{want} missing from {ids:?}");
        }
        // 3 ENIs + 5 pods + 1 client veth, 2 vSwitches + 3 cni0 devices.
        let veths = g.links.iter().filter(|l| l.kind == LinkKind::Veth).count();
        let bridges = g
            .links
            .iter()
            .filter(|l| l.kind == LinkKind::Bridge)
            .count();
        assert_eq!((veths, bridges), (9, 5));
        let eni = g
            .links
            .iter()
            .find(|l| l.b.interface == "node-180/eth0")
            .unwrap();
        assert_eq!(g.vertices[eni.a.vertex].id, "vpc/vsw-a");
        assert_eq!(eni.label(), "node-180-eth0 — eth0 10.0.0.180/24");
        let cni0 = &g.vertices[g.vertex("node-180/cni0").unwrap()];
        assert_eq!(cni0.lines(), ["cni0", "bridge", "172.23.96.1/26"]);
    }

    #[test]
    fn overlay_follows_the_path_and_fills_in_bridges() {
        let g = Graph::of_lab(&flannel());
        let lab = flannel();
        let path: Vec<String> = [
            "centos/eth0",
            "centos/host",
            "node-180/cni0",
            "node-180/eth0",
            "vpc",
        ]
        .iter()
        .map(|h| lab.canonical_hop(h).unwrap())
        .collect();
        let o = g.overlay("centos", &path, false);
        let got: Vec<String> = o.steps.iter().map(|e| id(&g, *e)).collect();
        assert_eq!(
            got,
            [
                "centos",
                "node-180/cni0~centos",
                "node-180/cni0",
                "node-180~node-180/cni0",
                "node-180",
                "vpc/vsw-a~node-180",
                "vpc/vsw-a",
                "vpc~vpc/vsw-a",
                "vpc",
            ]
        );
        assert_eq!(o.stop(), Some(Element::Vertex(g.vertex("vpc").unwrap())));
        assert!(o.unknown.is_empty());
        // Delivered: the last interface leads into the pod, no stop.
        let path: Vec<String> = ["centos/eth0", "centos/host", "node-180/cni0", "nginx/host"]
            .iter()
            .chain(&["nginx/eth0"])
            .map(|h| lab.canonical_hop(h).unwrap())
            .collect();
        let o = g.overlay("centos", &path, true);
        assert_eq!(o.stop(), None);
        assert_eq!(id(&g, *o.steps.last().unwrap()), "nginx");
        assert_eq!(o.steps.len(), 5, "no detour through node-180's stack");
    }

    #[test]
    fn every_shipped_topology_draws() {
        for (file, vars) in [
            ("ipvs-ipvlan.yaml", vec![]),
            ("terway-ipvlan-ebpf.yaml", vec![]),
            ("scale.yaml", vec![("nodes", "2"), ("pods", "3")]),
        ] {
            let path = format!("{}/../topologies/{file}", env!("CARGO_MANIFEST_DIR"));
            let vars = vars
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let lab = labctl_topology::load(std::path::Path::new(&path), &vars).unwrap();
            let g = Graph::of_lab(&lab);
            for (i, v) in g.vertices.iter().enumerate() {
                assert!(
                    g.links.iter().any(|l| l.a.vertex == i || l.b.vertex == i),
                    "{file}: {} has no link",
                    v.id
                );
            }
            assert!(g.to_svg().contains("</svg>"), "{file}");
            // Every pod's eth0 is an end of a link.
            for p in &lab.pods {
                let hop = format!("{}/{}", p.name, p.ifname);
                assert!(
                    matches!(g.element_of(&hop), Some(Element::Link(_))),
                    "{file}: {hop}"
                );
            }
        }
    }

    #[test]
    fn renderers() {
        let g = Graph::of_lab(&flannel());
        insta::assert_snapshot!("flannel_mermaid", g.to_mermaid());
        insta::assert_snapshot!("flannel_dot", g.to_dot());
        let svg = g.to_svg();
        assert_eq!(svg, g.to_svg(), "layout is deterministic");
        for name in ["node-180", "node-206", "node-216", "vpc", "client"] {
            assert!(svg.contains(&format!(">{name}</tspan>")), "{name} drawn");
        }
    }

    #[test]
    fn hostile_names_are_escaped() {
        let mut g = Graph::of_lab(&flannel());
        g.vertices[1].name = "<script>alert(\"x\")</script>\\N".into();
        g.lab = "a\"b".into();
        let m = g.to_mermaid();
        assert!(
            !m.contains("<script>") && m.contains("#60;script#62;"),
            "{m}"
        );
        let d = g.to_dot();
        assert!(d.contains("alert(\\\"x\\\")</script>\\\\N") && d.contains("\"a\\\"b\""));
        let s = g.svg(Some(&g.overlay("centos", &["vpc".into()], false)));
        assert!(!s.contains("<script>") && s.contains("&lt;script&gt;"));
    }
}
