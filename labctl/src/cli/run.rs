//! `labctl run`: run a topology's scenarios and check what the kernel did.

use std::path::PathBuf;

use labctl::scenario::{self, Report, RunOptions};
use labctl::{engine, golden, junit, state};
use serde::Serialize;

use super::{Exit, Failure, Result, Vars, Where, forward_code, load, vm_argv};

/// Run scenarios of a topology file on its lab (bringing it up first if it
/// is not up) and check every expectation and golden file. Exits 1 if any
/// fails; a scenario's PASS or FAIL covers its golden file.
#[derive(clap::Args)]
pub struct Args {
    /// Topology file (YAML).
    file: PathBuf,
    /// Scenarios to run (default: all of the file's).
    scenarios: Vec<String>,
    #[command(flatten)]
    vars: Vars,
    /// Use the lab under this name (as `labctl up --name`).
    #[arg(long, value_name = "LAB")]
    name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Format,
    /// Write each scenario's packets, from every namespace, to one pcapng
    /// file DIR/<scenario>.pcapng, one interface per `ENTITY/IFNAME`
    /// (Wireshark, tshark and `tcpdump -r` read it).
    #[arg(long, value_name = "DIR")]
    pcap: Option<PathBuf>,
    /// Write a JUnit XML report to PATH: a testsuite for the file (and
    /// --var variant), a testcase per scenario, its failure naming the
    /// failed checks.
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Inside a VM: write the JUnit cases as JSON to FILE, for the host.
    #[arg(long = "vm-cases", value_name = "FILE", hide = true)]
    vm_cases: Option<PathBuf>,
    /// Golden directory (default: golden/<file stem> beside topologies/, or
    /// its subdirectory named after the --var settings when they make
    /// another lab, e.g. golden/flannel/services=off/).
    #[arg(long, value_name = "DIR")]
    golden: Option<PathBuf>,
    /// Write a self-contained HTML report to DIR/index.html: the lab's
    /// diagram, each scenario's path drawn over it (where a request stopped
    /// marked), its sightings, checks, golden diff and, with --pcap, a link
    /// to its capture. Works for labs in a VM too (written on the host).
    #[arg(long, value_name = "DIR")]
    html: Option<PathBuf>,
    /// Leave a lab that `run` brought up running afterwards.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    place: Where,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq)]
enum Format {
    Text,
    Json,
}

/// A report with its golden comparison.
#[derive(Serialize)]
struct Outcome {
    #[serde(flatten)]
    report: Report,
    /// The text a golden file holds for this run.
    golden_text: String,
    /// `match`, `differs` or `missing`.
    golden: &'static str,
    golden_diff: Option<String>,
}

pub fn run(args: Args) -> Result {
    let mut lab = load(&args.file, &args.vars)?;
    if let Some(name) = &args.name {
        labctl_topology::check_lab_name(name)
            .map_err(|e| Failure::new(Exit::Usage, format!("--name: {e}")))?;
        lab.name = name.clone();
    }
    let selected: Vec<_> = if args.scenarios.is_empty() {
        lab.scenarios.iter().collect()
    } else {
        let mut v = Vec::new();
        for want in &args.scenarios {
            let Some(sc) = lab.scenarios.iter().find(|s| &s.name == want) else {
                let known: Vec<&str> = lab.scenarios.iter().map(|s| s.name.as_str()).collect();
                return Err(Failure::new(
                    Exit::Usage,
                    format!(
                        "{} has no scenario `{want}`; it has: {}",
                        args.file.display(),
                        known.join(", ")
                    ),
                ));
            };
            v.push(sc);
        }
        v
    };
    if selected.is_empty() {
        return Err(Failure::new(
            Exit::Usage,
            format!("{} has no scenarios", args.file.display()),
        ));
    }

    let existing = state::load(&lab.name).map_err(super::state_failure)?;
    // A lab that is up is used as it is: only if it is this file's build.
    if let Some(built) = existing.as_ref().and_then(|r| r.plan_digest.as_deref())
        && built != engine::plan_digest(&lab)
    {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "lab `{}` is up, but not as {} builds it now (the file or its --var values \
                 changed since `up`): take it down first (`labctl down {}`), or give the \
                 run a lab of its own with --name",
                lab.name,
                args.file.display(),
                lab.name
            ),
        ));
    }
    if let Some(dir) = &args.pcap {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!("create the --pcap directory {}: {e}", dir.display()),
            )
        })?;
    }
    let mut suite = junit::Suite::new(&args.file, &args.vars.map());
    // A lab in a VM runs its scenarios there: the same command, inside.
    // Captures and JUnit cases come back through the VM's own shared
    // directory; the host writes the user's files.
    let in_vm = |vm: &labctl::vm::Vm| -> Result<i32> {
        let exchange = (args.pcap.is_some() || args.junit.is_some())
            .then(|| Exchange::new(vm))
            .transpose()?;
        let mut argv = vm_argv("run", &args.file, &args.vars, &lab.name);
        argv.extend(["--keep".into(), "-o".into()]);
        argv.push(
            // The HTML page is written here, from the reports' JSON.
            if args.output == Format::Json || args.html.is_some() {
                "json"
            } else {
                "text"
            }
            .into(),
        );
        if let Some(g) = &args.golden {
            argv.push("--golden".into());
            argv.push(
                std::fs::canonicalize(g)
                    .unwrap_or(g.clone())
                    .display()
                    .to_string(),
            );
        }
        if let Some(x) = &exchange {
            argv.push("--vm-cases".into());
            argv.push(x.cases().display().to_string());
            if args.pcap.is_some() {
                argv.push("--pcap".into());
                argv.push(x.pcap().display().to_string());
            }
        }
        argv.extend(args.scenarios.iter().cloned());
        let (code, views) = if args.html.is_some() {
            html_from_vm(&args, vm, argv)?
        } else {
            (forward_code(vm, argv)?, None)
        };
        if let Some(x) = exchange {
            x.collect(&args, &selected)?;
        }
        // After the captures are in place, so that the page links them.
        if let (Some(dir), Some(views)) = (&args.html, views) {
            write_html(&args, &lab, dir, views)?;
        }
        Ok(code)
    };
    let exit = |code: i32| {
        if code != 0 {
            std::process::exit(code);
        }
        Ok(())
    };
    if let Some(vm) = existing.as_ref().and_then(|r| r.vm.as_ref()) {
        return exit(in_vm(vm)?);
    }
    let brought_up = if existing.is_none() {
        engine::preflight(&lab)?;
        if let Some(kernel) = args.place.decide(&lab)? {
            let mut argv = vm_argv("up", &args.file, &args.vars, &lab.name);
            argv.insert(1, "-q".into());
            let bar = super::spinner(super::vm_up_message(&lab.name, &kernel));
            let vm = engine::up_in_vm(&lab.name, &args.file, &argv, &kernel);
            bar.finish_and_clear();
            let vm = vm?.vm;
            let result = in_vm(&vm);
            if !args.keep {
                super::warn_left(&engine::down(&lab.name, None)?.left);
            }
            return exit(result?);
        }
        engine::up(&lab, Some(&args.file), &engine::Quiet)?;
        true
    } else {
        false
    };
    let result = run_all(&args, &lab, &selected, &mut suite);
    // The last scenario's taps, still closing in the background: together
    // now rather than one by one as the process exits.
    labctl::observe::capture::wait_closed();
    let written = write_results(&args, &suite);
    if brought_up && !args.keep {
        super::warn_left(&engine::down(&lab.name, None)?.left);
    }
    written?;
    let outcomes = result?;
    if let Some(dir) = &args.html {
        let views = outcomes
            .iter()
            .map(|o| serde_json::to_value(o).and_then(serde_json::from_value))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Failure::new(Exit::Failed, format!("--html: read the reports: {e}")))?;
        write_html(&args, &lab, dir, views)?;
    }
    // The golden comparison is one of each report's checks: `passed` is
    // the whole verdict.
    let failed = outcomes.iter().filter(|o| !o.report.passed).count();
    if args.output == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcomes).expect("reports are JSON")
        );
    } else {
        println!(
            "{} scenario(s): {} passed, {failed} failed",
            outcomes.len(),
            outcomes.len() - failed
        );
    }
    if failed > 0 {
        return Err(Failure::new(
            Exit::Failed,
            format!("{failed} scenario(s) failed"),
        ));
    }
    Ok(())
}

fn run_all(
    args: &Args,
    lab: &labctl::Lab,
    selected: &[&labctl_topology::Scenario],
    suite: &mut junit::Suite,
) -> Result<Vec<Outcome>> {
    let record = state::load(&lab.name)
        .map_err(|e| Failure::new(Exit::Failed, e))?
        .ok_or_else(|| Failure::new(Exit::State, format!("lab `{}` is not up", lab.name)))?;
    // The variables' own golden files when they make another lab
    // (`--var services=off`); `--golden DIR` is taken as it is.
    let golden_dir = args
        .golden
        .clone()
        .unwrap_or_else(|| golden::dir_for(&args.file, &args.vars.map()));
    // One lab, its scenarios one after the other: each finds the
    // services as the one before left them.
    let programmed = scenario::Programmed::default();
    let opts = RunOptions {
        pcap: args.pcap.as_deref(),
        programmed: Some(&programmed),
    };
    let mut out = Vec::new();
    // With text output each report is printed as its scenario ends; JSON
    // comes at the end, so say which scenario is running meanwhile.
    let bar = if args.output == Format::Json && selected.len() > 1 {
        super::spinner(String::new())
    } else {
        indicatif::ProgressBar::hidden()
    };
    for (i, sc) in selected.iter().enumerate() {
        bar.set_message(format!(
            "scenario {}/{}: {}",
            i + 1,
            selected.len(),
            sc.name
        ));
        let started = std::time::Instant::now();
        let mut report = match scenario::run(&record, lab, sc, &opts) {
            Ok(r) => r,
            Err(e) => {
                bar.finish_and_clear();
                suite
                    .cases
                    .push(junit::Case::error(&sc.name, &e, started.elapsed()));
                return Err(Failure::new(scenario_exit(&e), e));
            }
        };
        let file = golden::file_for(&golden_dir, &sc.name);
        // Compared before anything is printed: the verdict on the report's
        // first line covers the golden file too.
        let state = golden::check(&mut report, &file);
        suite
            .cases
            .push(junit::Case::of(&report, started.elapsed()));
        if args.output == Format::Text {
            print!("{}", report.render());
            if state == golden::Golden::Missing {
                println!("  [--] no golden file {}", file.display());
            }
            println!();
        }
        out.push(Outcome {
            golden_text: report.golden(),
            golden: state.word(),
            golden_diff: state.diff().map(str::to_string),
            report,
        });
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Write the HTML report of `views` to DIR/index.html, and say where.
fn write_html(
    args: &Args,
    lab: &labctl::Lab,
    dir: &std::path::Path,
    views: Vec<labctl::html::ScenarioView>,
) -> Result {
    use labctl::html;
    let fail = |what: &str, e: std::io::Error| {
        Failure::new(
            Exit::Failed,
            format!(
                "--html: {what} {}: {e} (give a directory you can write)",
                dir.display()
            ),
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("create", e))?;
    // The captures, by a path relative to the page: `--pcap` writes
    // DIR/SCENARIO.pcapng (or, before that, a directory per scenario).
    let pcap_base = match &args.pcap {
        Some(p) => Some(html::relative(
            &std::fs::canonicalize(dir).map_err(|e| fail("resolve", e))?,
            &std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
        )),
        None => None,
    };
    let entries: Vec<html::Entry> = views
        .into_iter()
        .map(|view| {
            let pcap_href = pcap_base.as_ref().and_then(|base| {
                let pcap = args.pcap.as_ref()?;
                let file = format!("{}.pcapng", view.scenario);
                let name = if pcap.join(&file).is_file() {
                    file
                } else if pcap.join(&view.scenario).is_dir() {
                    format!("{}/", view.scenario)
                } else {
                    return None;
                };
                let mut segs: Vec<&str> = base.iter().map(String::as_str).collect();
                segs.push(name.trim_end_matches('/'));
                Some(html::href(&segs) + if name.ends_with('/') { "/" } else { "" })
            });
            html::Entry { view, pcap_href }
        })
        .collect();
    let mut title = format!("labctl run: lab {} ({}", lab.name, args.file.display());
    for (k, v) in args.vars.map() {
        title.push_str(&format!(" --var {k}={v}"));
    }
    title.push(')');
    let graph = labctl::graph::Graph::of_lab(lab);
    let page = html::page(&title, &graph, &entries);
    // Written beside and renamed over: a symlink at DIR/index.html is
    // replaced, never followed.
    let tmp = dir.join(format!(".index.html.{}", std::process::id()));
    let index = dir.join("index.html");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(page.as_bytes())?;
        std::fs::rename(&tmp, &index)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail("write the report in", e)
    })?;
    eprintln!("labctl: HTML report in {}", index.display());
    Ok(())
}

/// Run the scenarios in the lab's VM for their JSON reports, write the
/// HTML page here from them, and show the user what they asked for: the
/// JSON as it came, or one line per scenario and its failed checks.
/// Run in the VM with JSON output, print what the user asked for, and
/// return the exit code with the reports for the HTML page (none when the
/// run failed before any report).
fn html_from_vm(
    args: &Args,
    vm: &labctl::vm::Vm,
    argv: Vec<String>,
) -> Result<(i32, Option<Vec<labctl::html::ScenarioView>>)> {
    use std::io::Write;
    let reply = vm
        .call(&argv, super::FORWARD_DEADLINE)
        .map_err(|e| Failure::new(Exit::Failed, e))?;
    let _ = std::io::stderr().write_all(&reply.stderr);
    let views: Vec<labctl::html::ScenarioView> = match serde_json::from_slice(&reply.stdout) {
        Ok(v) => v,
        // No reports (the run failed before any): its output as it is.
        Err(_) => {
            let _ = std::io::stdout().write_all(&reply.stdout);
            return Ok((reply.code, None));
        }
    };
    if args.output == Format::Json {
        let _ = std::io::stdout().write_all(&reply.stdout);
    } else {
        for v in &views {
            println!(
                "{} {}\n  {} -> {}: {}",
                if v.passed { "PASS" } else { "FAIL" },
                v.scenario,
                v.sender(),
                v.to,
                v.detail
            );
            for c in v.checks.iter().filter(|c| !c.ok) {
                println!("  [FAILED] {}", c.what);
            }
        }
        let failed = views.iter().filter(|v| !v.passed).count();
        println!(
            "{} scenario(s): {} passed, {failed} failed",
            views.len(),
            views.len() - failed
        );
    }
    let _ = std::io::stdout().flush();
    Ok((reply.code, Some(views)))
}

/// Write what `--junit` and (inside a VM) `--vm-cases` ask for, from the
/// cases run so far.
fn write_results(args: &Args, suite: &junit::Suite) -> Result {
    if let Some(path) = &args.junit {
        junit::write(path, std::slice::from_ref(suite)).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!("write the JUnit report {}: {e}", path.display()),
            )
        })?;
    }
    if let Some(path) = &args.vm_cases {
        let json = serde_json::to_vec(suite).expect("cases are JSON");
        std::fs::write(path, json).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!("write the cases for the host to {}: {e}", path.display()),
            )
        })?;
    }
    Ok(())
}

/// A directory of one forwarded run in the VM's shared directory (the only
/// place the VM may write): the VM's run leaves its JUnit cases and
/// captures there, the host takes them to the user's paths and removes it.
struct Exchange {
    dir: PathBuf,
}

impl Exchange {
    fn new(vm: &labctl::vm::Vm) -> Result<Exchange> {
        let dir = vm.dir.join(format!("run-{}", std::process::id()));
        // A leftover of an earlier run with the same pid is ours too.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!("create {} for the VM's results: {e}", dir.display()),
            )
        })?;
        Ok(Exchange { dir })
    }

    fn cases(&self) -> PathBuf {
        self.dir.join("cases.json")
    }

    fn pcap(&self) -> PathBuf {
        self.dir.join("pcap")
    }

    /// Write the JUnit report from the VM's cases and copy the selected
    /// scenarios' captures (regular files only: the VM writes this
    /// directory) into the user's --pcap directory.
    fn collect(&self, args: &Args, selected: &[&labctl_topology::Scenario]) -> Result {
        if let Some(path) = &args.junit {
            match std::fs::read(self.cases()) {
                Ok(bytes) => {
                    let mut suite: junit::Suite = serde_json::from_slice(&bytes).map_err(|e| {
                        Failure::new(
                            Exit::Failed,
                            format!("read the VM's cases {}: {e}", self.cases().display()),
                        )
                    })?;
                    suite.runtime = junit::Runtime::Vm;
                    suite.topology = args.file.display().to_string();
                    junit::write(path, std::slice::from_ref(&suite)).map_err(|e| {
                        Failure::new(
                            Exit::Failed,
                            format!("write the JUnit report {}: {e}", path.display()),
                        )
                    })?;
                }
                Err(e) => eprintln!(
                    "labctl: warning: the run in the VM left no cases ({e}); no JUnit report written"
                ),
            }
        }
        if let Some(dir) = &args.pcap {
            for sc in selected {
                let name = format!("{}.pcapng", sc.name);
                let from = self.pcap().join(&name);
                if !std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
                    continue;
                }
                let to = dir.join(&name);
                std::fs::copy(&from, &to).map_err(|e| {
                    Failure::new(
                        Exit::Failed,
                        format!("copy the capture to {}: {e}", to.display()),
                    )
                })?;
            }
        }
        Ok(())
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The exit code of a scenario that could not run: the engine's, where the
/// engine said why (an unbuilt eBPF object is the environment's fault).
fn scenario_exit(e: &scenario::ScenarioError) -> Exit {
    match e {
        scenario::ScenarioError::Engine(e) | scenario::ScenarioError::Program { source: e, .. } => {
            super::engine_exit(e)
        }
        _ => Exit::Failed,
    }
}
