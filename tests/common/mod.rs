//! Helpers shared by the integration tests. Each test binary uses a part of
//! them, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub mod slot_image;
pub mod tezos;

use async_trait::async_trait;
use slashguard::watermark::{ChainId, ConsensusKind, Curve, KeyHash};
use slashguard::{Ed25519Signer, Error, Signer};

/// The vote account of every test validator.
pub const VOTE_ACCOUNT: slashguard::NodeId = slashguard::NodeId([0x5a; 32]);

/// The smallest vote message that casts `update`'s vote for
/// [`VOTE_ACCOUNT`], authorized and paid by `node` (what
/// `VoteGuard::vote` binds the signature to).
pub fn vote_message(node: slashguard::NodeId, update: &slashguard::tower::TowerUpdate) -> Vec<u8> {
    slashguard::tower::vote_tx::CastVote::tower_sync_for(
        update.vote,
        update.root,
        VOTE_ACCOUNT,
        node,
    )
    .to_legacy_message(node, [0; 32])
    .expect("a one-lockout TowerSync encodes")
}

/// Mainnet's chain id.
pub const MAINNET: ChainId = ChainId([0x7a, 0x06, 0xa7, 0x70]);
/// Another chain id (a test network).
pub const TESTNET: ChainId = ChainId([0x11, 0x22, 0x33, 0x44]);

/// SplitMix64: small, seedable and good enough to pick test delays and
/// offsets. A failing run prints its seed; `SLASHGUARD_TEST_SEED` replays it.
pub struct Rng(u64);

impl Rng {
    /// Seed from `SLASHGUARD_TEST_SEED` or the clock, and print the seed so
    /// that a failure can be replayed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("SLASHGUARD_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("{test}: seed {seed} (replay with SLASHGUARD_TEST_SEED={seed})");
        Rng(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A software key that can claim any scheme. Tests need tz4 (BLS) keys to
/// exercise the payload offsets of BLS attestations; the signature itself is
/// ed25519 and deterministic, which is what the double-sign checks rely on
/// (two signatures differ iff the signed bytes differ).
pub struct TestKey {
    inner: Ed25519Signer,
    hash: KeyHash,
}

impl TestKey {
    pub fn tz1(seed: u8) -> TestKey {
        let inner = Ed25519Signer::from_seed([seed; 32]);
        let hash = inner.key_hash();
        TestKey { inner, hash }
    }

    pub fn tz4(seed: u8) -> TestKey {
        let inner = Ed25519Signer::from_seed([seed; 32]);
        let hash = KeyHash {
            curve: Curve::Bls,
            hash: inner.key_hash().hash,
        };
        TestKey { inner, hash }
    }
}

#[async_trait]
impl Signer for TestKey {
    fn key_hash(&self) -> KeyHash {
        self.hash
    }
    async fn sign(&self, payload: &[u8]) -> slashguard::Result<Vec<u8>> {
        self.inner.sign(payload).await
    }
    fn deterministic(&self) -> bool {
        true
    }
}

/// A signer whose signatures are NOT deterministic, like ECDSA with a
/// random nonce in an HSM: every call signs `nonce ‖ payload` with a fresh
/// random 32-byte nonce and returns `nonce ‖ signature` (96 bytes, the BLS
/// budget). Two calls on the same bytes give two different signatures, so
/// a test sees every second signature that is released.
pub struct NonDeterministicKey {
    inner: Ed25519Signer,
    hash: KeyHash,
    /// How many times the key signed.
    pub calls: std::sync::atomic::AtomicUsize,
}

impl NonDeterministicKey {
    pub fn new(seed: u8, curve: Curve) -> Self {
        let inner = Ed25519Signer::from_seed([seed; 32]);
        let hash = KeyHash {
            curve,
            hash: inner.key_hash().hash,
        };
        NonDeterministicKey {
            inner,
            hash,
            calls: Default::default(),
        }
    }
}

#[async_trait]
impl Signer for NonDeterministicKey {
    fn key_hash(&self) -> KeyHash {
        self.hash
    }
    async fn sign(&self, payload: &[u8]) -> slashguard::Result<Vec<u8>> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut nonce = [0u8; 32];
        getrandom_nonce(&mut nonce);
        let mut msg = nonce.to_vec();
        msg.extend_from_slice(payload);
        let mut out = nonce.to_vec();
        out.extend_from_slice(&self.inner.sign(&msg).await?);
        Ok(out)
    }
}

fn getrandom_nonce(out: &mut [u8; 32]) {
    use rand_core::RngCore;
    rand_core::OsRng.fill_bytes(out);
}

/// A consensus payload of `kind` at (level, round) for a key of `curve`,
/// as a baker sends it (tags 20/21 for tz1..tz3, 40/41 for tz4). `variant`
/// changes the block payload hash, so two variants at one (level, round)
/// are two different messages (a double sign if both signed).
pub fn consensus(
    kind: ConsensusKind,
    curve: Curve,
    chain: ChainId,
    level: u32,
    round: u32,
    variant: u8,
) -> Vec<u8> {
    match kind {
        ConsensusKind::Block => tezos::Block::new(chain, level, round, [variant; 32]).encode(),
        ConsensusKind::Preattestation => {
            tezos::Consensus::new(chain, level, round, [variant; 32]).preattestation(curve)
        }
        ConsensusKind::Attestation => {
            tezos::Consensus::new(chain, level, round, [variant; 32]).attestation(curve)
        }
    }
}

/// A temporary directory in memory (`/dev/shm`) when the host has one, else
/// in the usual temporary directory. For tests that open a store tens of
/// thousands of times to check decoding, not durability: every open syncs
/// the lock file, which on a disk makes such a test I/O bound.
pub fn fast_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("slashguard-test")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temporary directory")
}

/// Retry `open` while it reports [`Error::Locked`], for at most `limit`.
///
/// Only needed where another thread of the same test binary may be
/// spawning a child process: between fork and exec the child briefly holds
/// copies of every open file of the parent, locks included.
pub fn open_retrying<T>(limit: Duration, mut open: impl FnMut() -> slashguard::Result<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match open() {
            Ok(v) => return v,
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => panic!("open failed: {e}"),
        }
    }
}

/// Environment variable naming the role of a re-executed test binary.
pub const ROLE_ENV: &str = "SLASHGUARD_TEST_CHILD_ROLE";
/// Environment variable carrying the child's working directory.
pub const DIR_ENV: &str = "SLASHGUARD_TEST_CHILD_DIR";
/// Environment variable carrying a free-form argument (an id, a count).
pub const ARG_ENV: &str = "SLASHGUARD_TEST_CHILD_ARG";

/// What a re-executed child was asked to do.
pub struct ChildEnv {
    pub role: String,
    pub dir: PathBuf,
    pub arg: String,
}

/// `Some` only in a child process started by [`spawn_child`].
pub fn child_env() -> Option<ChildEnv> {
    let role = std::env::var(ROLE_ENV).ok()?;
    Some(ChildEnv {
        role,
        dir: PathBuf::from(std::env::var_os(DIR_ENV).expect("child without a directory")),
        arg: std::env::var(ARG_ENV).unwrap_or_default(),
    })
}

/// Emit one protocol line to the parent and flush it before returning, so
/// that a line the parent reads was written before anything that follows.
pub fn report(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // The parent finds lines by this marker: libtest may print its own text
    // on the same line before the first one.
    writeln!(out, "@@{line}").expect("parent gone");
    out.flush().expect("parent gone");
}

/// A child process running one test of this binary, killed (SIGKILL) and
/// reaped on drop so that a failing test leaves nothing behind.
pub struct ChildProc {
    pub child: Child,
    pub lines: BufReader<ChildStdout>,
}

/// Re-execute this test binary to run only `test` (a test that does nothing
/// unless [`ROLE_ENV`] is set), with the given role, directory and argument.
pub fn spawn_child(test: &str, role: &str, dir: &Path, arg: &str, stdin: Stdio) -> ChildProc {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .env(ARG_ENV, arg)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process");
    let lines = BufReader::new(child.stdout.take().expect("piped stdout"));
    ChildProc { child, lines }
}

impl ChildProc {
    /// The next protocol line (marker removed), or `None` at end of output.
    pub fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.lines.read_line(&mut line).expect("read child output") == 0 {
                return None;
            }
            if let Some(at) = line.find("@@") {
                return Some(line[at + 2..].trim_end().to_string());
            }
        }
    }

    /// Send SIGKILL (the process cannot catch it or clean up), reap it,
    /// and say whether it died of that signal (rather than having exited,
    /// for example by panicking, before the signal came).
    pub fn sigkill(&mut self) -> bool {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        use std::os::unix::process::ExitStatusExt;
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let status = self.child.wait().expect("reap child");
        status.signal() == Some(Signal::SIGKILL as i32)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.sigkill();
        }
    }
}
