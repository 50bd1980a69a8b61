//! Plumbing shared by the benches: a scratch directory on the real disk,
//! per-iteration latency recording (criterion reports means and confidence
//! intervals, but the issue asks for the median and the 99th percentile of
//! each operation), the background fsync load of the `load` variant, and the
//! baselines every durable backend is compared with.
//!
//! Results go to `target/slashguard-bench/<bench>[-load].json`, one JSON
//! object per line, which `scripts/bench-table` turns into the README table.

// Each bench binary includes this module and uses a different part of it.
#![allow(dead_code)]

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "etcd")]
#[path = "../../tests/common/etcd_harness.rs"]
pub mod etcd_harness;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};

/// The environment variable that turns on the background writer.
pub const LOAD_ENV: &str = "SLASHGUARD_BENCH_LOAD";
/// Set, it also writes every latency of every row (sorted, one per line,
/// nanoseconds) to `target/slashguard-bench/raw/<file>-<row>.txt`.
pub const RAW_ENV: &str = "SLASHGUARD_BENCH_RAW";

/// `true` for `cargo bench` (criterion's benchmark mode), `false` for
/// `cargo test --benches` and `--list`, where each bench runs once and
/// nothing is recorded.
pub fn is_bench_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"))
}

/// `true` when [`LOAD_ENV`] asks for the background writer.
pub fn load_enabled() -> bool {
    matches!(
        std::env::var(LOAD_ENV).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// The cargo target directory (where the debug and release builds live, so
/// on the disk a validator's ledger would share).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Where result files are written.
pub fn results_dir() -> PathBuf {
    target_dir().join("slashguard-bench")
}

/// Criterion settings for one I/O operation: flat sampling (every sample
/// the same number of iterations, which suits millisecond operations) and
/// a bounded run.
pub fn io_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(100)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g
}

/// Criterion settings for CPU-only operations (microseconds).
pub fn cpu_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(100)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g
}

/// The file system a path lives on, from `/proc/self/mountinfo`.
#[derive(Debug, Clone)]
pub struct FsInfo {
    /// `ext4`, `xfs`, `tmpfs`...
    pub fstype: String,
    /// The mounted device.
    pub device: String,
    /// The mount point.
    pub mount: String,
    /// The mount options (`relatime`, `discard`, `nobarrier`...).
    pub options: String,
}

impl FsInfo {
    /// Look `path` up (the longest mount point above it wins).
    pub fn of(path: &Path) -> FsInfo {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let unknown = FsInfo {
            fstype: "unknown".into(),
            device: "unknown".into(),
            mount: "/".into(),
            options: String::new(),
        };
        let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return unknown;
        };
        let mut best: Option<FsInfo> = None;
        for line in text.lines() {
            // id parent major:minor root mount options [optional...] - fstype source superoptions
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 6 || right.len() < 2 {
                continue;
            }
            let mount = left[4].replace("\\040", " ");
            if !path.starts_with(&mount) {
                continue;
            }
            if best.as_ref().is_some_and(|b| b.mount.len() > mount.len()) {
                continue;
            }
            best = Some(FsInfo {
                fstype: right[0].to_string(),
                device: right[1].to_string(),
                mount,
                options: left[5].to_string(),
            });
        }
        best.unwrap_or(unknown)
    }

    /// One line for logs and the table header.
    pub fn describe(&self) -> String {
        let journal = self
            .ext4_journal()
            .map(|j| format!(", {j}"))
            .unwrap_or_default();
        format!(
            "{} on {} (mounted at {}, {}{journal})",
            self.fstype, self.device, self.mount, self.options
        )
    }

    /// For ext4, the journal mode (`data=ordered`...) or `no journal`: it
    /// decides what an fsync and a rename cost.
    pub fn ext4_journal(&self) -> Option<String> {
        if self.fstype != "ext4" {
            return None;
        }
        let dev = self.device.rsplit('/').next()?;
        let options = std::fs::read_to_string(format!("/proc/fs/ext4/{dev}/options")).ok()?;
        Some(
            options
                .lines()
                .find(|l| l.starts_with("data="))
                .map(str::to_string)
                .unwrap_or_else(|| "no journal".to_string()),
        )
    }
}

/// A fresh directory under `target/slashguard-bench/`, on the same disk as
/// the build, removed on drop. Never `/tmp`, which may be a tmpfs where
/// `fsync` costs nothing.
pub struct Scratch {
    path: PathBuf,
    pub fs: FsInfo,
}

impl Scratch {
    /// Create the directory and say which file system it is on.
    pub fn new(name: &str) -> Scratch {
        let path = results_dir().join(format!("scratch-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create the bench scratch directory");
        Self::at(path)
    }

    /// A scratch directory at `path` (created by the caller's choice of
    /// file system, for example `/dev/shm`).
    pub fn at(path: PathBuf) -> Scratch {
        std::fs::create_dir_all(&path).expect("create the bench scratch directory");
        let fs = FsInfo::of(&path);
        eprintln!("bench directory {}: {}", path.display(), fs.describe());
        if fs.fstype == "tmpfs" || fs.fstype == "ramfs" {
            eprintln!(
                "note: {} is in memory; fsync costs nothing there",
                fs.fstype
            );
        }
        Scratch { path, fs }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, created.
    pub fn sub(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p).expect("create a bench subdirectory");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Per-iteration durations of one operation: wall time always, and for
/// CPU-only rows also this thread's CPU time, which other processes on a
/// busy machine cannot inflate (they can preempt the thread, not make it
/// run longer).
#[derive(Default)]
pub struct Laps {
    all: Vec<Duration>,
    cpu: Option<Vec<Duration>>,
}

fn thread_cpu() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// The thread CPU time that [`Laps::time`] itself adds to an empty
/// closure (two clock system calls, two wall-clock reads): subtracted from
/// the CPU-time percentiles so that sub-microsecond rows are not dominated
/// by it.
pub fn cpu_clock_overhead_ns() -> u64 {
    static OVERHEAD: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *OVERHEAD.get_or_init(|| {
        let mut laps = Laps {
            all: Vec::new(),
            cpu: Some(Vec::new()),
        };
        for _ in 0..20_000 {
            laps.time(|| std::hint::black_box(0u64));
        }
        let mut cpu = laps.cpu.expect("set above");
        cpu.sort_unstable();
        percentile(&cpu, 0.50)
    })
}

impl Laps {
    /// Time one call of `f`.
    #[inline]
    pub fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let Some(cpu) = &mut self.cpu else {
            let start = Instant::now();
            let out = f();
            self.all.push(start.elapsed());
            return out;
        };
        // The CPU clock is a system call: read it outside the wall-clock window.
        let cpu_start = thread_cpu();
        let start = Instant::now();
        let out = f();
        let wall = start.elapsed();
        cpu.push(thread_cpu().saturating_sub(cpu_start));
        self.all.push(wall);
        out
    }
}

/// What a result row is, for the table's ratio columns.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// A slashguard operation: compared with every baseline of its file.
    Slashguard,
    /// A baseline, named by its short tag (`a`, `b`, `c`, ...).
    Baseline(&'static str),
    /// A slashguard operation on an in-memory backend: shown for scale, not
    /// compared with the disk baselines.
    InMemory,
    /// CPU work without I/O: checked against the per-operation CPU budget.
    Cpu,
}

impl Role {
    /// The slashguard role for a backend named `name`.
    pub fn backend(name: &str) -> Role {
        if name == "memory" {
            Role::InMemory
        } else {
            Role::Slashguard
        }
    }
}

/// One operation of an I/O bench: `run` performs exactly one operation,
/// timed through [`Laps::time`] (anything it prepares outside that call,
/// such as signing a record for a bare store, is not counted).
pub struct Op<'a> {
    pub id: String,
    pub label: String,
    pub role: Role,
    pub run: Box<dyn FnMut(&mut Laps) + 'a>,
}

impl<'a> Op<'a> {
    pub fn new(
        id: impl Into<String>,
        label: impl Into<String>,
        role: Role,
        run: impl FnMut(&mut Laps) + 'a,
    ) -> Op<'a> {
        Op {
            id: id.into(),
            label: label.into(),
            role,
            run: Box::new(run),
        }
    }
}

/// How long the interleaved pass runs, and its bounds.
pub struct Rounds {
    pub budget: Duration,
    pub warm_up: usize,
    pub min: usize,
    pub max: usize,
}

/// A criterion name filter given on the command line, if any (the first
/// argument that is neither an option nor an option's value).
fn name_filter() -> Option<String> {
    const TAKES_VALUE: [&str; 17] = [
        "-c",
        "--color",
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--plotting-backend",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if TAKES_VALUE.contains(&a.as_str()) || a == "--format" || a == "--output-format" {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Run `ops` twice:
///
/// 1. under criterion, one after the other (its usual statistics and
///    regression reports, printed on the console);
/// 2. interleaved: round after round, each round runs every operation
///    once, in a fresh pseudo-random order each round. Disk latency on a
///    shared machine drifts (other processes' flushes, the background
///    writer's cycle); interleaving exposes every operation to the same
///    drift, so the ratios between them hold. The order is shuffled, not
///    rotated, because what runs just before an operation matters: the
///    first request to an etcd after other work pays for waking it up, and
///    with a fixed order that cost would always fall on the same row. These
///    per-iteration latencies are the rows written for the table.
///
/// With a name filter on the command line only the criterion pass runs.
pub fn run_ops(
    c: &mut Criterion,
    group_name: &str,
    report: &mut Report,
    ops: &mut [Op<'_>],
    rounds: Rounds,
) {
    let mut group = io_group(c, group_name);
    for op in ops.iter_mut() {
        let run = &mut op.run;
        group.bench_function(op.id.as_str(), |b| {
            b.iter_custom(|iters| {
                let mut laps = Laps::default();
                for _ in 0..iters {
                    run(&mut laps);
                }
                laps.all.iter().sum()
            })
        });
    }
    group.finish();

    if let Some(filter) = name_filter() {
        eprintln!("name filter {filter:?}: interleaved pass skipped (it needs every row)");
        return;
    }
    let (warm_up, min, max, budget) = if is_bench_run() {
        (rounds.warm_up, rounds.min, rounds.max, rounds.budget)
    } else {
        (0, 1, 1, Duration::ZERO)
    };
    let k = ops.len();
    // Thread CPU time too: how much of each operation is computation and
    // how much waiting for the disk.
    let mut laps: Vec<Laps> = (0..k)
        .map(|_| Laps {
            all: Vec::new(),
            cpu: Some(Vec::new()),
        })
        .collect();
    let mut scratch = Laps::default();
    for round in 0..warm_up {
        for i in 0..k {
            (ops[(round + i) % k].run)(&mut scratch);
        }
    }
    eprintln!("{group_name}: interleaved pass, {k} operations per round, up to {budget:?}");
    let start = Instant::now();
    let mut round = 0;
    let mut order: Vec<usize> = (0..k).collect();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    while round < max && (round < min || start.elapsed() < budget) {
        // Fisher-Yates with xorshift64: reproducible from run to run.
        for i in (1..k).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        for &j in &order {
            (ops[j].run)(&mut laps[j]);
        }
        round += 1;
    }
    eprintln!("{group_name}: {round} rounds in {:.1?}", start.elapsed());
    for (op, laps) in ops.iter().zip(laps) {
        assert_eq!(laps.all.len(), round, "{}: one timed call per round", op.id);
        report.record("interleaved", &op.id, &op.label, op.role, laps);
    }
}

/// Collects the rows of one bench binary and writes them as JSON lines.
pub struct Report {
    bench: &'static str,
    load: bool,
    fs: Option<FsInfo>,
    file: PathBuf,
    enabled: bool,
    written: bool,
}

impl Report {
    pub fn new(bench: &'static str, load: bool, fs: Option<FsInfo>) -> Report {
        let name = if load {
            format!("{bench}-load.json")
        } else {
            format!("{bench}.json")
        };
        Report {
            bench,
            load,
            fs,
            file: results_dir().join(name),
            enabled: is_bench_run(),
            written: false,
        }
    }

    /// Run `routine` under criterion as operation `id` and record every
    /// iteration it timed. `routine(iters, laps)` must time exactly `iters`
    /// operations through `laps` (set-up outside `laps` is not counted).
    pub fn bench(
        &mut self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        id: &str,
        label: &str,
        role: Role,
        mut routine: impl FnMut(u64, &mut Laps),
    ) {
        let mut laps = Laps {
            all: Vec::new(),
            cpu: matches!(role, Role::Cpu).then(Vec::new),
        };
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let first = laps.all.len();
                routine(iters, &mut laps);
                assert_eq!(
                    laps.all.len() - first,
                    iters as usize,
                    "{id}: the routine must time each iteration once"
                );
                laps.all[first..].iter().sum()
            })
        });
        self.record("criterion", id, label, role, laps);
    }

    /// Record one row: percentiles of its wall (and, if measured, thread
    /// CPU) times; `method` says how they were taken.
    fn record(&mut self, method: &str, id: &str, label: &str, role: Role, laps: Laps) {
        let cpu = laps.cpu.map(|mut c| {
            c.sort_unstable();
            let clock = cpu_clock_overhead_ns();
            (
                percentile(&c, 0.50).saturating_sub(clock),
                percentile(&c, 0.99).saturating_sub(clock),
            )
        });
        let mut laps = laps.all;
        if !self.enabled || laps.is_empty() {
            return;
        }
        laps.sort_unstable();
        let n = laps.len();
        let pct = |p: f64| percentile(&laps, p);
        let mean = laps.iter().map(|d| d.as_nanos()).sum::<u128>() / n as u128;
        let (role_name, baseline) = match role {
            Role::Slashguard => ("slashguard", None),
            Role::Baseline(tag) => ("baseline", Some(tag)),
            Role::InMemory => ("in_memory", None),
            Role::Cpu => ("cpu", None),
        };
        let row = serde_json::json!({
            "bench": self.bench,
            "load": self.load,
            "id": id,
            "label": label,
            "role": role_name,
            "baseline": baseline,
            "method": method,
            "n": n,
            "p50_ns": pct(0.50),
            "p99_ns": pct(0.99),
            "mean_ns": mean as u64,
            "min_ns": laps[0].as_nanos() as u64,
            "max_ns": laps[n - 1].as_nanos() as u64,
            "cpu_p50_ns": cpu.map(|c| c.0),
            "cpu_p99_ns": cpu.map(|c| c.1),
            "cpu_clock_overhead_ns": cpu.map(|_| cpu_clock_overhead_ns()),
            "fs": self.fs.as_ref().map(|f| f.describe()),
            "loadavg": loadavg(),
            "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        });
        self.write_line(&row);
        if std::env::var_os(RAW_ENV).is_some() {
            self.write_raw(id, &laps);
        }
        let cpu = cpu
            .map(|(p50, p99)| format!(" (thread CPU time p50={} p99={})", fmt_ns(p50), fmt_ns(p99)))
            .unwrap_or_default();
        eprintln!(
            "recorded {id}: n={n} p50={} p99={}{cpu}",
            fmt_ns(pct(0.50)),
            fmt_ns(pct(0.99))
        );
    }

    /// Write any JSON row (memory growth, load statistics).
    pub fn write_line(&mut self, row: &serde_json::Value) {
        if !self.enabled {
            return;
        }
        let mut row = row.clone();
        if let Some(obj) = row.as_object_mut() {
            obj.entry("bench").or_insert(self.bench.into());
            obj.entry("load").or_insert(self.load.into());
        }
        std::fs::create_dir_all(results_dir()).expect("create the results directory");
        // The first row of a run replaces the previous run's file, so ratios
        // are only ever taken between rows measured together.
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.written)
            .truncate(!self.written)
            .open(&self.file)
            .expect("open the results file");
        writeln!(f, "{row}").expect("write a result row");
        self.written = true;
    }

    /// Every latency of one row, sorted, for a histogram or a closer look
    /// at a tail.
    fn write_raw(&self, id: &str, sorted: &[Duration]) {
        let dir = results_dir().join("raw");
        std::fs::create_dir_all(&dir).expect("create the raw results directory");
        let stem = self
            .file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(self.bench);
        let text: String = sorted
            .iter()
            .map(|d| format!("{}\n", d.as_nanos()))
            .collect();
        std::fs::write(dir.join(format!("{stem}-{id}.txt")), text).expect("write raw latencies");
    }

    /// Where rows go.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

/// The 1-minute load average, recorded with each row: on a shared machine
/// it says how much else was running.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Nearest-rank percentile of sorted durations, in nanoseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> u64 {
    let n = sorted.len();
    if n == 0 {
        return 0;
    }
    sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1].as_nanos() as u64
}

pub fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

/// Deterministic filler bytes (the content does not matter to a disk, but
/// zeros could be special-cased by a compressing or deduplicating layer).
pub fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The background writer of the `load` variant: large appends with an
/// `fdatasync` after each, on the disk under test, the way a ledger or a
/// database compaction loads a validator's disk. Stops on drop and reports
/// what it did.
pub struct LoadWriter {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<LoadStats>>,
}

/// What the background writer did.
#[derive(Debug, Default)]
pub struct LoadStats {
    pub bytes: u64,
    pub syncs: u64,
    pub elapsed: Duration,
    pub sync_laps: Vec<Duration>,
}

/// Bytes per background write.
pub const LOAD_CHUNK: usize = 8 << 20;
/// The background file is truncated (blocks freed) when it reaches this,
/// as log rotation or compaction would.
const LOAD_FILE_MAX: u64 = 512 << 20;

impl LoadWriter {
    pub fn start(dir: &Path) -> LoadWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let path = dir.join("background-load.dat");
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("bench-load".into())
            .spawn(move || {
                let chunk = filler(LOAD_CHUNK, 42);
                let file = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(&path)
                    .expect("open the background load file");
                let mut stats = LoadStats::default();
                let start = Instant::now();
                let mut len = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    if len >= LOAD_FILE_MAX {
                        file.set_len(0).expect("truncate the background load file");
                        len = 0;
                    }
                    file.write_all_at(&chunk, len)
                        .expect("background write (disk full?)");
                    len += LOAD_CHUNK as u64;
                    let t = Instant::now();
                    file.sync_data().expect("background fdatasync");
                    stats.sync_laps.push(t.elapsed());
                    stats.bytes += LOAD_CHUNK as u64;
                    stats.syncs += 1;
                }
                stats.elapsed = start.elapsed();
                drop(file);
                let _ = std::fs::remove_file(&path);
                stats
            })
            .expect("start the background writer");
        eprintln!(
            "background load: {} MiB writes, each followed by fdatasync, in {}",
            LOAD_CHUNK >> 20,
            dir.display()
        );
        LoadWriter {
            stop,
            handle: Some(handle),
        }
    }

    /// Stop the writer and return what it did.
    pub fn finish(mut self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("background writer panicked")
    }
}

impl Drop for LoadWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Record the background writer's throughput next to the results it loaded.
pub fn record_load(report: &mut Report, stats: LoadStats) {
    let mut laps = stats.sync_laps;
    laps.sort_unstable();
    let pick = |p: f64| percentile(&laps, p);
    let mib_s = stats.bytes as f64 / (1 << 20) as f64 / stats.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "background load: {:.0} MiB/s, {} fdatasyncs of 8 MiB, p50 {} p99 {}",
        mib_s,
        stats.syncs,
        fmt_ns(pick(0.5)),
        fmt_ns(pick(0.99))
    );
    report.write_line(&serde_json::json!({
        "load": true,
        "id": "background_load",
        "role": "load",
        "chunk_bytes": LOAD_CHUNK,
        "mib_per_s": mib_s,
        "syncs": stats.syncs,
        "sync_p50_ns": pick(0.5),
        "sync_p99_ns": pick(0.99),
    }));
}

/// The local baselines of the issue, written with std only, on the same
/// bytes and in the same directory as the slashguard store they are
/// compared with.
pub mod baseline {
    use super::*;

    /// (a) Agave's tower write as it is: write `<name>.new`, rename it over
    /// `<name>`, no fsync of the file or the directory. Fast, not durable.
    pub fn agave_rename(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.new"));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        drop(f);
        std::fs::rename(&tmp, &path)
    }

    /// (b) The same made durable: temp file, fsync, rename, directory fsync.
    pub fn durable_rename(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.new"));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    }

    /// (c) The local floor: one pre-allocated 4 KiB page, rewritten in place
    /// and flushed with one `fdatasync`.
    pub struct FloorPage {
        file: File,
        page: Vec<u8>,
        counter: u64,
    }

    pub const PAGE: usize = 4096;

    impl FloorPage {
        pub fn create(dir: &Path) -> std::io::Result<FloorPage> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.join("floor-page.bin"))?;
            let page = filler(PAGE, 7);
            file.write_all_at(&page, 0)?;
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
            Ok(FloorPage {
                file,
                page,
                counter: 0,
            })
        }

        /// One write of the page and one `fdatasync`.
        pub fn write(&mut self) -> std::io::Result<()> {
            self.counter += 1;
            self.page[..8].copy_from_slice(&self.counter.to_le_bytes());
            self.file.write_all_at(&self.page, 0)?;
            self.file.sync_data()
        }
    }
}

/// The vote account of the bench validators.
pub const VOTE_ACCOUNT: slashguard::NodeId = slashguard::NodeId([0x5a; 32]);

/// The legacy `TowerSync` vote message a mainnet validator sends for a vote
/// at `slot` (at least 63): a full tower of 31 lockouts ending there (counts
/// 31 down to 1), rooted 32 slots back, with a timestamp and a block id.
pub fn tower_sync_message(node: slashguard::NodeId, slot: u64) -> Vec<u8> {
    use slashguard::agave::{LastVote, Lockout, TowerSync};
    use slashguard::tower::vote_tx::{CastVote, VoteKind};
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&slot.to_le_bytes());
    let vote = CastVote {
        kind: VoteKind::TowerSync,
        vote_account: VOTE_ACCOUNT,
        authority: node,
        vote: LastVote::TowerSync(TowerSync {
            lockouts: (0..31)
                .map(|i| Lockout {
                    slot: slot - 30 + i,
                    confirmation_count: 31 - i as u32,
                })
                .collect(),
            root: Some(slot - 32),
            hash,
            timestamp: Some(1_750_000_000),
            block_id: [0xb1; 32],
        }),
        switch_proof: None,
    };
    vote.to_legacy_message(node, [0xee; 32])
        .expect("a full tower encodes")
}
