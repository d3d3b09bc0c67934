//! `labctl graph`: the topology as a diagram, as containerlab's `graph`.

use std::path::PathBuf;

use labctl::graph::Graph;

use super::{Result, Vars, load};

/// Draw the lab a topology file makes: every namespace (VPC router, nodes,
/// pods, clients) and bridge (vSwitches, cni0) as a box with its name and
/// role, every veth pair, ipvlan attachment and bridge device as a line
/// with its interfaces and addresses. Printed to stdout: Mermaid by default
/// (paste it into Markdown, GitHub renders it), `-o dot` for Graphviz,
/// `-o svg` for a picture laid out by labctl itself (no Graphviz needed),
/// e.g. `labctl graph topologies/flannel.yaml -o svg > flannel.svg`.
#[derive(clap::Args)]
pub struct Args {
    /// Topology file (YAML).
    file: PathBuf,
    #[command(flatten)]
    vars: Vars,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "mermaid")]
    output: Format,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Format {
    /// A Mermaid flowchart.
    Mermaid,
    /// Graphviz DOT (`dot -Tpng` draws it).
    Dot,
    /// An SVG document.
    Svg,
}

pub fn run(args: Args) -> Result {
    let graph = Graph::of_lab(&load(&args.file, &args.vars)?);
    match args.output {
        Format::Mermaid => print!("{}", graph.to_mermaid()),
        Format::Dot => print!("{}", graph.to_dot()),
        Format::Svg => println!("{}", graph.to_svg()),
    }
    Ok(())
}
