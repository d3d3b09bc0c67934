//! The HTML report of a run (`labctl run --html DIR`): one self-contained
//! page, DIR/index.html, with the lab's diagram ([`crate::graph`]) and, per
//! scenario, its observed path drawn over the diagram hop by hop, the hop
//! where the request stopped marked, the sighting table, the checks, the
//! golden diff and a link to the scenario's capture.
//!
//! Self-contained: inline CSS and SVG, no script, no fetch; a
//! Content-Security-Policy of `default-src 'none'` says so to the browser,
//! so even a page someone edited cannot load anything. Every string that
//! comes from the topology or the report is escaped ([`escape`]).
//!
//! The page is written from [`ScenarioView`]s, read from a report's JSON
//! (`labctl run -o json`): the same for a run on the host and one in a VM,
//! whose reports come back to the host as that JSON.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::graph::{Element, Graph, Overlay};

/// What the page (and `labctl diff`) reads of one scenario's report, as
/// `run -o json` writes it (fields it does not know are ignored, so the
/// report can grow).
#[derive(Debug, Clone, Deserialize)]
pub struct ScenarioView {
    pub scenario: String,
    #[serde(default)]
    pub description: Option<String>,
    pub from: String,
    /// The address the client sent from, when the scenario chose it.
    #[serde(default)]
    pub source: Option<String>,
    pub to: String,
    /// `icmp`, `tcp`, `http` or `udp`.
    #[serde(default)]
    pub traffic: Option<String>,
    /// `connected`, `refused`, ...; absent for a local error.
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub served_by: Option<String>,
    /// The client address the server saw.
    #[serde(default)]
    pub server_saw_client: Option<String>,
    #[serde(default)]
    pub path: Vec<String>,
    /// Network stacks crossed.
    #[serde(default)]
    pub stacks: u32,
    /// The path's hops in words, for a scenario that expects `hops`.
    #[serde(default)]
    pub hops: Vec<String>,
    #[serde(default)]
    pub table: Vec<RowView>,
    #[serde(default)]
    pub checks: Vec<CheckView>,
    #[serde(default)]
    pub conntrack: Vec<(String, Vec<String>)>,
    #[serde(default)]
    pub ipvs: Vec<(String, Vec<String>)>,
    /// kube-proxy's nftables chains the traffic went through, per node.
    #[serde(default)]
    pub nft: Vec<(String, Vec<String>)>,
    #[serde(default)]
    pub translations: Vec<String>,
    pub passed: bool,
    /// `match`, `differs` or `missing`.
    #[serde(default)]
    pub golden: Option<String>,
    #[serde(default)]
    pub golden_diff: Option<String>,
}

impl ScenarioView {
    /// The sender with the address it sent from, if chosen:
    /// `node-180 (10.0.0.180)`, as the report says it.
    pub fn sender(&self) -> String {
        match &self.source {
            Some(a) => format!("{} ({a})", self.from),
            None => self.from.clone(),
        }
    }

    /// Whether the request reached its destination.
    pub fn delivered(&self) -> bool {
        self.result.as_deref() == Some("connected")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RowView {
    pub interface: String,
    pub direction: String,
    pub flow: String,
    pub packets: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckView {
    pub what: String,
    pub ok: bool,
    #[serde(default)]
    pub detail: Option<String>,
}

/// One scenario on the page, with the link to its capture (relative to the
/// page) when the run wrote one.
#[derive(Debug, Clone)]
pub struct Entry {
    pub view: ScenarioView,
    pub pcap_href: Option<String>,
}

/// Text for HTML, in element content and in quoted attribute values alike.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative URL from path segments: every byte but the unreserved ones
/// percent-encoded, so no name can end the attribute or change the scheme.
pub fn href(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|s| {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The path segments leading from directory `from` to `to` (both
/// absolute, symlinks resolved), for a link from a page in `from`.
pub fn relative(from: &std::path::Path, to: &std::path::Path) -> Vec<String> {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out: Vec<String> = f[common..].iter().map(|_| "..".to_string()).collect();
    out.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    out
}

/// An SVG from layout-rs made fit to sit inline beside others: no XML
/// declaration, and its ids (edge paths that labels follow, clip paths)
/// prefixed so they stay unique on the page. Labels are escaped by
/// layout-rs, so a quote never appears inside them and the replaced
/// patterns can only be its own attributes.
fn inline_svg(svg: &str, prefix: &str) -> String {
    let body = svg.find("<svg").map_or(svg, |i| &svg[i..]);
    body.replace("id=\"arrow", &format!("id=\"{prefix}arrow"))
        .replace("href=\"#arrow", &format!("href=\"#{prefix}arrow"))
        .replace("id=\"C", &format!("id=\"{prefix}C"))
        .replace("url(#C", &format!("url(#{prefix}C"))
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #111827; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #d1d5db; padding: .2em .6em; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
code, pre, td.mono { font-family: ui-monospace, monospace; font-size: .9em; }
pre { background: #f9fafb; border: 1px solid #e5e7eb; padding: .6em; overflow-x: auto; }
.diagram { overflow-x: auto; border: 1px solid #e5e7eb; margin: .5em 0; }
.diagram svg { max-width: none; }
.verdict { font-weight: bold; padding: 0 .4em; border-radius: 3px; color: white; }
.pass .verdict, .ok { background: #15803d; }
.fail .verdict, .bad { background: #991b1b; }
td.ok, td.bad { color: white; font-weight: bold; }
ol.path li.stop { font-weight: bold; }
";

/// The page.
pub fn page(title: &str, graph: &Graph, entries: &[Entry]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(title)
    );
    let _ = writeln!(h, "<h1>{}</h1>", escape(title));
    let failed = entries.iter().filter(|e| !e.view.passed).count();
    let _ = writeln!(
        h,
        "<p>{} scenario(s): {} passed, {failed} failed.</p>",
        entries.len(),
        entries.len() - failed
    );
    h.push_str(
        "<table class=\"summary\">\n<tr><th>scenario</th><th>verdict</th><th>outcome</th></tr>\n",
    );
    for (i, e) in entries.iter().enumerate() {
        let v = &e.view;
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#s{i}\">{}</a></td><td class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&v.scenario),
            if v.passed { "ok" } else { "bad" },
            if v.passed { "PASS" } else { "FAIL" },
            escape(&v.detail)
        );
    }
    h.push_str("</table>\n");
    let _ = writeln!(
        h,
        "<section id=\"lab\">\n<h2>The lab <code>{}</code></h2>\n<div class=\"diagram\">{}</div>\n</section>",
        escape(&graph.lab),
        inline_svg(&graph.to_svg(), "lab-")
    );
    for (i, e) in entries.iter().enumerate() {
        scenario(&mut h, i, graph, e);
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn element_name(graph: &Graph, e: Element) -> String {
    match e {
        Element::Vertex(v) => {
            let v = &graph.vertices[v];
            format!("{} ({})", v.id, v.role())
        }
        Element::Link(l) => {
            let l = &graph.links[l];
            format!("{} — {}", l.a.interface, l.b.interface)
        }
    }
}

fn scenario(h: &mut String, i: usize, graph: &Graph, e: &Entry) {
    let v = &e.view;
    let overlay: Overlay = graph.overlay(&v.from, &v.path, v.delivered());
    let _ = writeln!(
        h,
        "<section id=\"s{i}\" class=\"scenario {}\">\n<h2><span class=\"verdict\">{}</span> {}</h2>",
        if v.passed { "pass" } else { "fail" },
        if v.passed { "PASS" } else { "FAIL" },
        escape(&v.scenario)
    );
    if let Some(d) = &v.description {
        let _ = writeln!(h, "<p>{}</p>", escape(d));
    }
    let _ = writeln!(
        h,
        "<p><code>{}</code> → <code>{}</code>: {}{}</p>",
        escape(&v.sender()),
        escape(&v.to),
        escape(&v.detail),
        v.served_by
            .as_ref()
            .map(|s| format!(", served by <code>{}</code>", escape(s)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        h,
        "<div class=\"diagram\">{}</div>",
        inline_svg(&graph.svg(Some(&overlay)), &format!("s{i}-"))
    );
    // The path in words: the hops the taps saw, then the elements drawn.
    let _ = writeln!(
        h,
        "<p>Path seen by the taps: <code>{}</code></p>",
        escape(&v.path.join(" → "))
    );
    h.push_str("<ol class=\"path\">\n");
    let last = overlay.steps.len();
    for (n, step) in overlay.steps.iter().enumerate() {
        if overlay.stopped && n + 1 == last {
            let _ = writeln!(
                h,
                "<li class=\"stop\">{} — ✖ the request stopped here ({})</li>",
                escape(&element_name(graph, *step)),
                escape(v.result.as_deref().unwrap_or("local error"))
            );
        } else {
            let _ = writeln!(h, "<li>{}</li>", escape(&element_name(graph, *step)));
        }
    }
    h.push_str("</ol>\n");
    if !overlay.unknown.is_empty() {
        let _ = writeln!(
            h,
            "<p>Hops not in the diagram: <code>{}</code></p>",
            escape(&overlay.unknown.join(", "))
        );
    }
    h.push_str("<h3>Sightings</h3>\n<table>\n<tr><th>interface</th><th>dir</th><th>flow</th><th>packets</th></tr>\n");
    for r in &v.table {
        let _ = writeln!(
            h,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
            escape(&r.interface),
            escape(&r.direction),
            escape(&r.flow),
            r.packets
        );
    }
    h.push_str("</table>\n");
    let services: Vec<String> = v
        .translations
        .iter()
        .map(|t| format!("ebpf: {t}"))
        .chain(
            v.conntrack
                .iter()
                .flat_map(|(e, ls)| ls.iter().map(move |l| format!("conntrack {e}: {l}"))),
        )
        .chain(
            v.ipvs
                .iter()
                .flat_map(|(e, ls)| ls.iter().map(move |l| format!("ipvs {e}: {l}"))),
        )
        .collect();
    if !services.is_empty() {
        let _ = writeln!(
            h,
            "<h3>Services</h3>\n<pre>{}</pre>",
            escape(&services.join("\n"))
        );
    }
    h.push_str("<h3>Checks</h3>\n<table>\n<tr><th></th><th>check</th><th>observed</th></tr>\n");
    for c in &v.checks {
        let detail = c.detail.as_deref().unwrap_or("");
        let detail = if detail.contains('\n') {
            format!("<pre>{}</pre>", escape(detail))
        } else {
            escape(detail)
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"{}\">{}</td><td>{}</td><td>{detail}</td></tr>",
            if c.ok { "ok" } else { "bad" },
            if c.ok { "ok" } else { "FAILED" },
            escape(&c.what)
        );
    }
    h.push_str("</table>\n");
    if let Some(diff) = &v.golden_diff {
        let _ = writeln!(h, "<h3>Golden diff</h3>\n<pre>{}</pre>", escape(diff));
    } else if let Some(g) = &v.golden {
        let _ = writeln!(h, "<p>Golden file: {}</p>", escape(g));
    }
    if let Some(href) = &e.pcap_href {
        let _ = writeln!(
            h,
            "<p>Capture: <a href=\"{}\">{}</a></p>",
            escape(href),
            escape(href)
        );
    }
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Graph {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies/flannel.yaml");
        let lab = labctl_topology::load(std::path::Path::new(file), &Default::default())
            .expect("flannel loads");
        Graph::of_lab(&lab)
    }

    fn view(json: serde_json::Value) -> ScenarioView {
        serde_json::from_value(json).expect("a view")
    }

    #[test]
    fn escape_covers_markup_and_attributes() {
        assert_eq!(
            escape(r#"<script>alert('x')</script>&"#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"
        );
        assert_eq!(escape("a\"b"), "a&quot;b");
        assert_eq!(
            href(&["..", "pcap dir", "a\"><script>.pcapng"]),
            "../pcap%20dir/a%22%3E%3Cscript%3E.pcapng"
        );
    }

    #[test]
    fn relative_links() {
        use std::path::Path;
        let r = |a: &str, b: &str| relative(Path::new(a), Path::new(b)).join("/");
        assert_eq!(r("/tmp/x/report", "/tmp/x/pcap"), "../pcap");
        assert_eq!(r("/tmp/x", "/tmp/x/pcap"), "pcap");
        assert_eq!(r("/a/b", "/c"), "../../c");
        assert_eq!(r("/a", "/a"), "");
    }

    #[test]
    fn hostile_report_text_is_escaped() {
        let mut g = graph();
        g.vertices[1].name = "<script>alert(1)</script>".into();
        let v = view(serde_json::json!({
            "scenario": "<script>alert(2)</script>",
            "description": "<img src=x onerror=alert(3)>",
            "from": "centos",
            "to": "\"><script>alert(4)</script>",
            "result": "timeout",
            "detail": "<b>",
            "path": ["centos/eth0", "<script>alert(5)</script>"],
            "table": [{"interface": "<i>", "direction": "out", "flow": "<script>", "packets": 1}],
            "checks": [{"what": "<script>alert(6)</script>", "ok": false, "detail": "a\n<script>"}],
            "passed": false,
            "golden_diff": "-<script>\n+</pre><script>alert(7)</script>",
        }));
        let page = page(
            "<script>t</script>",
            &g,
            &[Entry {
                view: v,
                pcap_href: Some(href(&["x\"onclick=\"alert(8)"])),
            }],
        );
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"));
        assert!(!page.contains("<b>") && !page.contains("<i>"));
        assert!(!page.contains("onclick=\""));
        assert!(page.contains("&lt;script&gt;alert(2)&lt;/script&gt;"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("Content-Security-Policy"));
        assert!(
            !page.contains("<link") && !page.contains("<iframe"),
            "nothing fetched"
        );
    }

    #[test]
    fn failing_scenario_is_drawn_with_a_stop_mark() {
        let g = graph();
        let lab_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies/flannel.yaml");
        let lab =
            labctl_topology::load(std::path::Path::new(lab_file), &Default::default()).unwrap();
        let path: Vec<String> = [
            "centos/eth0",
            "centos/host",
            "node-180/cni0",
            "node-180/eth0",
        ]
        .iter()
        .map(|h| lab.canonical_hop(h).unwrap())
        .chain(["vpc".to_string()])
        .collect();
        let v = view(serde_json::json!({
            "scenario": "f2", "from": "centos", "to": "172.23.96.163",
            "result": "unreachable", "detail": "unreachable", "path": path, "passed": false,
        }));
        let page = page(
            "t",
            &g,
            &[Entry {
                view: v,
                pcap_href: Some("p/f2.pcapng".into()),
            }],
        );
        assert!(page.contains(crate::graph::STOP_COLOUR));
        assert!(page.contains(crate::graph::PATH_COLOUR));
        assert!(page.contains("<li class=\"stop\">vpc (VPC router)"));
        assert!(page.contains("href=\"p/f2.pcapng\""));
        // Ids of the two inline SVGs do not collide.
        assert!(page.contains("id=\"lab-arrow0\"") && page.contains("id=\"s0-arrow0\""));
        assert!(!page.contains("id=\"arrow"));
        assert!(!page.contains("<?xml"));
    }
}
