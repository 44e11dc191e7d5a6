//! The fault lab: separate hosts made of Linux network namespaces, the real
//! `shardgate` binary running in them as separate processes, and a way for
//! the test's own HTTP clients to live inside a namespace.
//!
//! Where it sits: every scenario in `faults.rs` builds one [`Lab`], starts
//! meta members, cache nodes and proxies in it with [`Lab::spawn`], injects
//! faults ([`Lab::kill9`], [`Lab::link_down`]) and drives load through a
//! [`NetnsRuntime`] living in the lab's switch namespace.
//!
//! Topology (all addresses exist only inside the lab's namespaces; no
//! default route, no NAT, nothing in the root namespace):
//!
//! ```text
//!   <prefix>-lan  (the switch; also where the test's clients run)
//!     br-ctl  10.231.1.254/24 ── veth ── meta hosts m1..m3 (10.231.1.11-13)
//!                             └─ veth ── proxy hosts p1, p2 (10.231.1.31-32)
//!     br-data 10.231.2.254/24 ── veth ── node hosts n1..n3 (10.231.2.21-23)
//!                             └─ veth ── proxy hosts p1, p2 (10.231.2.31-32)
//! ```
//!
//! Two networks, so that "cut a proxy off from meta" is one link going down
//! (the proxy's ctl veth) while clients and nodes still reach it over data.
//! A partition is `ip link set <veth> down` on the switch side; healing is
//! `up`. The test's clients run on a dedicated thread that has entered the
//! `lan` namespace with `setns(2)` and runs a current-thread tokio runtime:
//! every socket it opens belongs to that namespace.
//!
//! Namespaces are named `sgf-<pid>-<scenario>-<host>`; they are removed when
//! the [`Lab`] drops (also on panic, after its processes are killed), and
//! stale ones left by a killed run (whose pid is gone) are removed before a
//! new lab starts.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// First three octets of the control network (meta, proxies' watch).
pub const CTL_NET: &str = "10.231.1";
/// First three octets of the data network (clients, proxies, nodes).
pub const DATA_NET: &str = "10.231.2";

/// Which of the two lab networks a host is plugged into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    Ctl,
    Data,
}

impl Net {
    fn bridge(self) -> &'static str {
        match self {
            Net::Ctl => "br-ctl",
            Net::Data => "br-data",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Net::Ctl => CTL_NET,
            Net::Data => DATA_NET,
        }
    }
    fn short(self) -> &'static str {
        match self {
            Net::Ctl => "c",
            Net::Data => "d",
        }
    }
}

/// A host of the lab: a name (`m1`, `n2`, `p1`), its last address octet and
/// the networks it is plugged into.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub octet: u8,
    pub nets: Vec<Net>,
}

impl Host {
    pub fn new(name: &str, octet: u8, nets: &[Net]) -> Host {
        Host { name: name.to_string(), octet, nets: nets.to_vec() }
    }
}

unsafe extern "C" {
    fn setns(fd: i32, nstype: i32) -> i32;
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
}
const CLONE_NEWNET: i32 = 0x4000_0000;
const SIGKILL: i32 = 9;

/// Runs `ip <args>`; the error names the command and quotes its stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Moves the calling thread into the named network namespace.
fn enter_netns(ns: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // Where `ip netns add` mounts it (/var/run is usually a link to /run).
    let file = File::open(Path::new("/run/netns").join(ns))
        .or_else(|_| File::open(Path::new("/var/run/netns").join(ns)))
        .map_err(|e| format!("open /run/netns/{ns}: {e}"))?;
    // SAFETY: setns on a valid namespace fd; only this thread changes namespace.
    let rc = unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns({ns}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `None` when the lab can run here; otherwise why not (for the skip line).
pub fn unsupported() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions.
            let uid = unsafe { geteuid() };
            if uid != 0 {
                return Some(format!("not root (euid {uid}): creating network namespaces needs CAP_SYS_ADMIN"));
            }
            if let Err(e) = Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
                return Some(format!("`ip` (iproute2) is not installed: {e}"));
            }
            let probe = format!("sgf-{}-probe", std::process::id());
            let _ = ip(&["netns", "del", &probe]);
            if let Err(e) = ip(&["netns", "add", &probe]) {
                return Some(format!("cannot create a network namespace: {e}"));
            }
            let entered = {
                let p = probe.clone();
                std::thread::spawn(move || enter_netns(&p)).join().unwrap_or_else(|_| Err("setns thread panicked".into()))
            };
            let _ = ip(&["netns", "del", &probe]);
            entered.err().map(|e| format!("cannot enter a network namespace: {e}"))
        })
        .clone()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes `sgf-*` namespaces whose creating test process is gone (or are
/// this process's own leftovers), killing the `shardgate` processes still
/// inside them first.
pub fn remove_stale_namespaces() {
    let me = std::process::id();
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix("sgf-") else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != me && pid_alive(pid) {
            continue; // another run of the suite is using it
        }
        kill_shardgate_in(name);
        if let Err(e) = ip(&["netns", "del", name]) {
            eprintln!("faults: cannot remove stale namespace {name}: {e}");
        }
    }
}

/// SIGKILLs the `shardgate` processes inside namespace `ns` (a killed run's
/// leftovers) and waits briefly for them to go.
fn kill_shardgate_in(ns: &str) {
    let Ok(pids) = ip(&["netns", "pids", ns]) else { return };
    let pids: Vec<i32> = pids
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "shardgate"))
        .collect();
    for &pid in &pids {
        // SAFETY: plain kill(2) on a pid we just read.
        unsafe { kill(pid, SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|&p| pid_alive(p as u32)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A thread inside a network namespace running a current-thread tokio
/// runtime; [`NetnsRuntime::run`] executes a future there and returns its
/// output. Tasks spawned by those futures keep running between calls.
pub struct NetnsRuntime {
    pub ns: String,
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Longest a single [`NetnsRuntime::run`] may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

impl NetnsRuntime {
    pub fn start(ns: &str) -> NetnsRuntime {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let name = ns.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn(move || {
                if let Err(e) = enter_netns(&name) {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job);
                    }
                });
            })
            .expect("spawning the namespace thread");
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("client runtime in {ns}: {e}"),
            Err(_) => panic!("client runtime in {ns} died while starting"),
        }
        NetnsRuntime { ns: ns.to_string(), jobs: Some(tx), thread: Some(thread) }
    }

    /// Runs `fut` inside the namespace and waits for its output; a panic in
    /// it is re-raised here.
    pub fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::pin(async move {
            let out = tokio::spawn(fut).await;
            let _ = tx.send(out.map_err(|e| e.try_into_panic().unwrap_or_else(|e| Box::new(e.to_string()))));
        });
        self.jobs.as_ref().expect("runtime running").send(job).expect("client runtime stopped");
        match rx.recv_timeout(RUN_LIMIT) {
            Ok(Ok(v)) => v,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(e) => panic!("a step in namespace {} did not finish within {RUN_LIMIT:?}: {e}", self.ns),
        }
    }
}

impl Drop for NetnsRuntime {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `shardgate serve` process in a host namespace.
pub struct Proc {
    pub name: String,
    pub ns: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_shardgate"), "serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL (`ip netns exec` execs the binary, so the child is shardgate).
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: the process shuts down gracefully by itself.
    fn term(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
    }

    /// Waits up to `limit` for the process to exit; whether it did.
    fn wait_exit(&mut self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while let Some(c) = &mut self.child {
            if let Ok(Some(_)) = c.try_wait() {
                self.child = None;
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// One scenario's hosts, processes and client runtimes.
pub struct Lab {
    pub prefix: String,
    dir: Option<tempfile::TempDir>,
    namespaces: Vec<String>,
    hosts: Vec<Host>,
    procs: Vec<Proc>,
    lan: Option<NetnsRuntime>,
    /// Held for the lab's life: scenarios never overlap (dropped last).
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// One lab at a time in this process.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Lab {
    /// Creates the switch namespace with both bridges and one namespace per
    /// host, wired as the module docs show.
    pub fn new(tag: &str, hosts: &[Host]) -> Lab {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale_namespaces();
        let prefix = format!("sgf-{}-{tag}", std::process::id());
        let mut lab = Lab {
            prefix: prefix.clone(),
            dir: Some(tempfile::Builder::new().prefix(&format!("{prefix}-")).tempdir().expect("temp dir")),
            namespaces: vec![],
            hosts: hosts.to_vec(),
            procs: vec![],
            lan: None,
            _turn: turn,
        };
        let lan = lab.ns("lan");
        lab.add_ns(&lan);
        for net in [Net::Ctl, Net::Data] {
            let br = net.bridge();
            must(ip(&["-n", &lan, "link", "add", br, "type", "bridge"]));
            must(ip(&["-n", &lan, "addr", "add", &format!("{}.254/24", net.prefix()), "dev", br]));
            must(ip(&["-n", &lan, "link", "set", br, "up"]));
        }
        for h in hosts {
            let ns = lab.ns(&h.name);
            lab.add_ns(&ns);
            for &net in &h.nets {
                let outer = format!("{}-{}", h.name, net.short());
                let inner = match net {
                    Net::Ctl => "ctl",
                    Net::Data => "data",
                };
                must(ip(&["-n", &lan, "link", "add", &outer, "type", "veth", "peer", "name", inner, "netns", &ns]));
                must(ip(&["-n", &lan, "link", "set", &outer, "master", net.bridge(), "up"]));
                must(ip(&["-n", &ns, "addr", "add", &format!("{}.{}/24", net.prefix(), h.octet), "dev", inner]));
                must(ip(&["-n", &ns, "link", "set", inner, "up"]));
            }
        }
        lab.lan = Some(NetnsRuntime::start(&lan));
        lab
    }

    fn add_ns(&mut self, ns: &str) {
        must(ip(&["netns", "add", ns]));
        self.namespaces.push(ns.to_string());
        must(ip(&["-n", ns, "link", "set", "lo", "up"]));
    }

    /// Namespace name of a host (or of the switch, `lan`).
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("lab dir").path()
    }

    /// The client runtime in the switch namespace (reaches every host).
    pub fn lan(&self) -> &NetnsRuntime {
        self.lan.as_ref().expect("lan runtime")
    }

    /// Address of `host` on `net`, e.g. `10.231.1.11`.
    pub fn addr(&self, host: &str, net: Net) -> String {
        let h = self.hosts.iter().find(|h| h.name == host).unwrap_or_else(|| panic!("no host {host}"));
        assert!(h.nets.contains(&net), "{host} is not on {net:?}");
        format!("{}.{}", net.prefix(), h.octet)
    }

    /// Cuts `host`'s link to `net` at the switch.
    pub fn link_down(&self, host: &str, net: Net) {
        must(ip(&["-n", &self.ns("lan"), "link", "set", &format!("{host}-{}", net.short()), "down"]));
    }

    /// Cuts `host` off from `others` on `net` in both directions (blackhole
    /// routes in each namespace) while its link stays up: it still reaches,
    /// and is reached by, every other host.
    pub fn isolate(&self, host: &str, others: &[&str], net: Net) {
        for other in others {
            must(ip(&["-n", &self.ns(host), "route", "add", "blackhole", &format!("{}/32", self.addr(other, net))]));
            must(ip(&["-n", &self.ns(other), "route", "add", "blackhole", &format!("{}/32", self.addr(host, net))]));
        }
    }

    /// Undoes [`Lab::isolate`].
    pub fn rejoin(&self, host: &str, others: &[&str], net: Net) {
        for other in others {
            must(ip(&["-n", &self.ns(host), "route", "del", "blackhole", &format!("{}/32", self.addr(other, net))]));
            must(ip(&["-n", &self.ns(other), "route", "del", "blackhole", &format!("{}/32", self.addr(host, net))]));
        }
    }

    /// Restores `host`'s link to `net`.
    pub fn link_up(&self, host: &str, net: Net) {
        must(ip(&["-n", &self.ns("lan"), "link", "set", &format!("{host}-{}", net.short()), "up"]));
    }

    /// Writes `config` to a file and starts `shardgate serve` with it in
    /// `host`'s namespace, named `name`.
    pub fn spawn(&mut self, name: &str, host: &str, config: &str) {
        let path = self.dir().join(format!("{name}.toml"));
        let mut f = File::create(&path).expect("config file");
        f.write_all(config.as_bytes()).expect("writing config");
        let mut p =
            Proc { name: name.to_string(), ns: self.ns(host), config: path, log: self.dir().join(format!("{name}.log")), child: None };
        p.start();
        self.procs.push(p);
    }

    fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.name == name).unwrap_or_else(|| panic!("no process {name}"))
    }

    /// `kill -9`.
    pub fn kill9(&mut self, name: &str) {
        self.proc(name).kill9();
    }

    /// SIGTERM, without waiting ([`Lab::wait_exit`] waits).
    pub fn term(&mut self, name: &str) {
        self.proc(name).term();
    }

    /// Waits up to `limit` for `name` to exit; whether it did.
    pub fn wait_exit(&mut self, name: &str, limit: std::time::Duration) -> bool {
        self.proc(name).wait_exit(limit)
    }

    /// Starts a stopped process again with the same config (and data dir).
    pub fn restart(&mut self, name: &str) {
        self.proc(name).start();
    }
}

fn must(r: Result<String, String>) {
    if let Err(e) = r {
        panic!("lab setup: {e}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for p in &mut self.procs {
            p.kill9();
        }
        self.lan.take();
        if panicking {
            for p in &self.procs {
                eprintln!("---- last lines of {} ({}) ----\n{}", p.name, p.log.display(), p.log_tail(25));
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("faults: logs and configs kept in {}", dir.keep().display());
            }
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("faults: cannot remove namespace {ns}: {e}");
            }
        }
    }
}
