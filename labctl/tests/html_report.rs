//! The HTML report seen in a real browser, and the README's diagram kept
//! current.
//!
//! `failing_run_in_a_browser` runs the Flannel lab without services (the
//! host kernel runs it) with the VPC route to node-206's pod CIDR taken out
//! of the file, so a ping from centos to nginx1-7plsr dies in the VPC; it
//! writes `--html`, opens the page in headless Chromium, takes a screenshot
//! and reads the pixels: the path's colour and the stop mark's are drawn,
//! and the stop mark rings the VPC router's box (the only box with its
//! fill inside the ring). Which hop the request stopped at comes from the
//! kernel: had the VPC forwarded the packet, the ring would be elsewhere or
//! absent.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Down, ensure, gate, ignored, labctl_here, text, unique};
use labctl::graph::{PATH_COLOUR, STOP_COLOUR, VPC_FILL};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn rgb(hex: &str) -> [u8; 3] {
    let n = u32::from_str_radix(&hex[1..], 16).expect("#rrggbb");
    [(n >> 16) as u8, (n >> 8) as u8, n as u8]
}

/// A scratch directory, removed afterwards.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    })
}

/// Screenshot `page` with headless Chromium into `png`.
fn screenshot(chromium: &Path, page: &Path, png: &Path, profile: &Path) -> Result<(), Failed> {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=2600,4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            ensure(
                s.success() && png.is_file(),
                format!("chromium exited {s} without a screenshot"),
            )?;
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("chromium took more than 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The screenshot as rows of RGB pixels.
fn pixels(png: &Path) -> Result<(usize, usize, Vec<[u8; 3]>), Failed> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png)?));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("png too large")?];
    let info = reader.next_frame(&mut buf)?;
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => return Err(format!("unexpected PNG colour type {other:?}").into()),
    };
    ensure(info.bit_depth == png::BitDepth::Eight, "8-bit PNG")?;
    let (w, h) = (info.width as usize, info.height as usize);
    let mut px = Vec::with_capacity(w * h);
    for y in 0..h {
        let row = &buf[y * info.line_size..][..w * step];
        px.extend(row.chunks(step).map(|c| [c[0], c[1], c[2]]));
    }
    Ok((w, h, px))
}

fn failing_run_in_a_browser() -> Result<Completion, Failed> {
    let Some(chromium) = chromium() else {
        return ignored(
            "chromium is not installed (`apt-get install chromium`; ./lab installs it)",
        );
    };
    gate(|| {
        let dir = std::env::temp_dir().join(format!("labctl-html-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let _scratch = Scratch(dir.clone());
        // The shipped lab, less the VPC's route to node-206's pods.
        let source = std::fs::read_to_string(Path::new(ROOT).join("topologies/flannel.yaml"))?;
        let route = "    - destination: 172.23.96.128/26\n      next_hop: node-206\n";
        ensure(
            source.contains(route),
            "flannel.yaml routes node-206's pods",
        )?;
        let file = dir.join("flannel-no-route.yaml");
        std::fs::write(&file, source.replace(route, ""))?;
        let html = dir.join("report");
        let pcap = dir.join("pcap");
        let name = unique("html");
        let _down = Down(name.clone());
        let out = labctl_here()
            .arg("run")
            .arg(&file)
            .args(["--var", "services=off", "--name", &name])
            .arg("--html")
            .arg(&html)
            .arg("--pcap")
            .arg(&pcap)
            .arg("--golden")
            .arg(dir.join("no-golden"))
            .arg("f2-pod-ip-other-node-ping")
            .output()?;
        ensure(
            out.status.code() == Some(1),
            format!("the scenario must fail: {}", text(&out)),
        )?;
        let index = html.join("index.html");
        let page = std::fs::read_to_string(&index)?;
        ensure(
            page.contains("<li class=\"stop\">vpc (VPC router)"),
            "the page's path list stops at the VPC",
        )?;
        ensure(
            page.contains("href=\"../pcap/f2-pod-ip-other-node-ping"),
            "the page links the scenario's capture",
        )?;

        let png = dir.join("shot.png");
        screenshot(&chromium, &index, &png, &dir.join("profile"))?;
        let (w, h, px) = pixels(&png)?;
        let (path, stop, vpc) = (rgb(PATH_COLOUR), rgb(STOP_COLOUR), rgb(VPC_FILL));
        let count = |c: [u8; 3]| px.iter().filter(|p| **p == c).count();
        ensure(
            count(path) > 500,
            format!("path colour {PATH_COLOUR} drawn ({} px)", count(path)),
        )?;
        ensure(
            count(stop) > 200,
            format!("stop colour {STOP_COLOUR} drawn ({} px)", count(stop)),
        )?;
        // The stop mark's box: every pixel of its colour.
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        for (i, p) in px.iter().enumerate() {
            if *p == stop {
                let (x, y) = (i % w, i / w);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
        let mut inside = std::collections::HashMap::<[u8; 3], usize>::new();
        for y in y0..=y1 {
            for x in x0..=x1 {
                *inside.entry(px[y * w + x]).or_default() += 1;
            }
        }
        let fills = ["#e5e7eb", "#dcfce7", "#fae8ff", "#ffedd5"];
        let others: Vec<_> = fills
            .iter()
            .filter(|f| inside.get(&rgb(f)).copied().unwrap_or(0) > 20)
            .collect();
        ensure(
            inside.get(&vpc).copied().unwrap_or(0) > 500 && others.is_empty(),
            format!(
                "the stop mark ({x0},{y0})-({x1},{y1}) rings the VPC router's box: {} px of \
                 its fill inside, other boxes' fills {others:?}",
                inside.get(&vpc).copied().unwrap_or(0)
            ),
        )?;
        Ok(())
    })
}

/// docs/flannel.svg is what `labctl graph` draws today.
fn docs_svg_is_current() -> Result<(), Failed> {
    let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["graph", "topologies/flannel.yaml", "-o", "svg"])
        .current_dir(ROOT)
        .output()?;
    ensure(out.status.success(), text(&out))?;
    let committed = std::fs::read(Path::new(ROOT).join("docs/flannel.svg"))?;
    ensure(
        committed == out.stdout,
        "docs/flannel.svg is stale: run `labctl graph topologies/flannel.yaml -o svg > docs/flannel.svg`",
    )
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test("docs_svg_is_current", docs_svg_is_current),
        Trial::ignorable_test("failing_run_in_a_browser", failing_run_in_a_browser),
    ];
    libtest_mimic::run(&args, trials).exit();
}
