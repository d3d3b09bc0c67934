//! `labctl up`: build a lab from a topology file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use labctl::engine::{self, Progress};

use super::{Exit, Failure, Result, Vars, Where, load, vm_argv};

/// Build the lab described by a topology file from real kernel objects.
#[derive(clap::Args)]
pub struct Args {
    /// Topology file (YAML).
    file: PathBuf,
    #[command(flatten)]
    vars: Vars,
    /// Run the lab under another name than the file's `name:`, so the same
    /// topology can be up twice at once.
    #[arg(long, value_name = "LAB")]
    name: Option<String>,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Then print how long each stage took (planning, making the
    /// namespaces, each phase of the plan, waiting for the kernel to
    /// activate the links, recording the lab), with its count of
    /// namespaces or kernel actions, on stderr. A lab in a VM prints the
    /// VM's boot (none in the shared VM), the stages inside it and the
    /// whole time.
    #[arg(long)]
    timings: bool,
    #[command(flatten)]
    place: Where,
}

/// A progress bar on stderr, shown only on a terminal.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn stage(&self, what: &str, total: usize) {
        self.0.set_message(what.to_string());
        self.0.set_length(total as u64);
        self.0.set_position(0);
    }
    fn advance(&self, n: usize) {
        self.0.inc(n as u64);
    }
}

/// The bar, and when each stage began, for `--timings`.
struct Timed {
    bar: Bar,
    began: std::sync::Mutex<Vec<(String, usize, Instant)>>,
}

impl Progress for Timed {
    fn stage(&self, what: &str, total: usize) {
        let mut began = self.began.lock().unwrap_or_else(|e| e.into_inner());
        began.push((what.to_string(), total, Instant::now()));
        self.bar.stage(what, total);
    }
    fn advance(&self, n: usize) {
        self.bar.advance(n);
    }
}

impl Timed {
    /// A line per stage that had something to do (and `settle`, `record`), timed
    /// to the next stage's start or `end`; what came before the first
    /// (reading the file, planning, the checks) from `start`.
    fn lines(&self, start: Instant, end: Instant) -> Vec<String> {
        let began = self.began.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        if let Some((_, _, first)) = began.first() {
            out.push(timing_line("plan", 0, *first - start));
        }
        for (i, (what, total, at)) in began.iter().enumerate() {
            let until = began.get(i + 1).map_or(end, |next| next.2);
            if *total > 0 || what == "settle" || what == "record" {
                out.push(timing_line(what, *total, until - *at));
            }
        }
        out
    }
}

/// One line of `--timings`: the stage, its count (none when 0), its time.
fn timing_line(what: &str, count: usize, took: std::time::Duration) -> String {
    let count = if count > 0 {
        count.to_string()
    } else {
        String::new()
    };
    format!("{what:<14} {count:>7} {took:>10.1?}")
}

pub fn run(args: Args) -> Result {
    let start = Instant::now();
    let mut lab = load(&args.file, &args.vars)?;
    if let Some(name) = args.name {
        labctl_topology::check_lab_name(&name)
            .map_err(|e| Failure::new(Exit::Usage, format!("--name: {e}")))?;
        lab.name = name;
    }
    engine::preflight(&lab)?;
    if let Some(kernel) = args.place.decide(&lab)? {
        let t = Instant::now();
        let mut argv = vm_argv("up", &args.file, &args.vars, &lab.name);
        argv.insert(1, "-q".into());
        if args.timings {
            argv.insert(1, "--timings".into());
        }
        let bar = if args.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            super::spinner(super::vm_up_message(&lab.name, &kernel))
        };
        let vm = engine::up_in_vm(&lab.name, &args.file, &argv, &kernel);
        bar.finish_and_clear();
        let up = vm?;
        if args.timings {
            // The VM's boot, then `up`'s own stages inside it.
            if let Some(boot) = up.boot {
                eprintln!("{}", timing_line("vm boot", 0, boot));
            }
            eprint!("{}", up.stderr);
            eprintln!("{}", timing_line("in all", 0, start.elapsed()));
        }
        let vm = up.vm;
        if !args.quiet {
            println!(
                "lab `{}` is up in {} (kernel {}) in {:.1?}; status, exec, run and down reach into it",
                lab.name,
                if vm.shared { "the shared VM" } else { "a VM" },
                vm.release(),
                t.elapsed()
            );
        }
        return Ok(());
    }
    let bar = if !args.quiet && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:>10} [{bar:30}] {pos}/{len}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let timed = Timed {
        bar: Bar(bar.clone()),
        began: Default::default(),
    };
    let report = engine::up(&lab, Some(&args.file), &timed);
    let end = Instant::now();
    bar.finish_and_clear();
    let report = report?;
    if args.timings {
        for line in timed.lines(start, end) {
            eprintln!("{line}");
        }
    }
    if !args.quiet {
        println!(
            "lab `{}` is up: {} namespaces, {} kernel actions in {:.2?}",
            lab.name, report.namespaces, report.actions, report.elapsed
        );
        if let Some(pod) = lab.pods.first() {
            println!(
                "  try: labctl exec {} {} -- ip addr     then: labctl down {}",
                lab.name, pod.name, lab.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Each stage is timed to the next one's start, the last to the end,
    /// planning from the start; a phase with nothing to do is left out.
    #[test]
    fn timings_time_each_stage_to_the_next() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let timed = Timed {
            bar: Bar(ProgressBar::hidden()),
            began: std::sync::Mutex::new(vec![
                ("namespaces".into(), 3, at(10)),
                ("devices".into(), 0, at(40)),
                ("links".into(), 2, at(40)),
                ("settle".into(), 0, at(100)),
                ("record".into(), 0, at(105)),
            ]),
        };
        let lines = timed.lines(start, at(107));
        let want = [
            ("plan", "", "10.0ms"),
            ("namespaces", "3", "30.0ms"),
            ("links", "2", "60.0ms"),
            ("settle", "", "5.0ms"),
            ("record", "", "2.0ms"),
        ];
        assert_eq!(lines.len(), want.len(), "{lines:#?}");
        for (line, (what, count, took)) in lines.iter().zip(want) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let expected: Vec<&str> = [what, count, took]
                .into_iter()
                .filter(|w| !w.is_empty())
                .collect();
            assert_eq!(words, expected, "{line}");
        }
    }
}
