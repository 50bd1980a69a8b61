//! What a restarted primary does about its identity, which a secondary may
//! hold meanwhile (the seed's software upgrade: "when your primary
//! validator restarts it will reclaim its identity from the secondary").

/// How a restarting primary gets its identity back.
///
/// The secondary that loses the identity stops voting, and when it comes
/// back it must come back as a standby (waiting until the identity is
/// free, never taking it over): that is what breaks the restart cycle.
/// Backends map the mode to their acquisition: see
/// `EtcdFailover::reclaim` (feature `etcd`); on one host,
/// [`LocalLockPolicy`](super::LocalLockPolicy) with
/// [`Takeover::RequestHandover`](super::Takeover::RequestHandover) and
/// [`with_readiness`](super::LocalLockPolicy::with_readiness) is
/// `WhenReady`.
///
/// ```
/// use slashguard::failover::ReclaimMode;
///
/// let mode: ReclaimMode = "when-ready".parse()?; // from a command-line flag
/// assert_eq!(mode, ReclaimMode::default());
/// assert!(mode.takes_over() && mode.waits_for_readiness());
/// assert!(!ReclaimMode::Never.takes_over()); // a standby
/// # Ok::<(), slashguard::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReclaimMode {
    /// Never take the identity from a live owner: wait until it is free
    /// (the owner released it or died), like a standby.
    Never,
    /// Take it over once the application reports it is ready (caught up),
    /// so that a half-started primary never knocks out a healthy
    /// secondary. The default.
    #[default]
    WhenReady,
    /// Take it over at once, ready or not.
    Immediately,
}

impl ReclaimMode {
    /// `true` when the mode takes the identity from a live owner.
    pub fn takes_over(self) -> bool {
        !matches!(self, ReclaimMode::Never)
    }

    /// `true` when the mode waits for the application's readiness first.
    pub fn waits_for_readiness(self) -> bool {
        matches!(self, ReclaimMode::WhenReady)
    }
}

impl std::fmt::Display for ReclaimMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReclaimMode::Never => "never",
            ReclaimMode::WhenReady => "when ready",
            ReclaimMode::Immediately => "immediately",
        })
    }
}

impl std::str::FromStr for ReclaimMode {
    type Err = crate::Error;

    /// `never`, `when-ready` (or `when_ready`), `immediately`.
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "never" => Ok(ReclaimMode::Never),
            "when-ready" | "when ready" => Ok(ReclaimMode::WhenReady),
            "immediately" => Ok(ReclaimMode::Immediately),
            other => Err(crate::Error::Config(format!(
                "unknown reclaim mode {other:?}: use never, when-ready or immediately"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(ReclaimMode::default(), ReclaimMode::WhenReady);
        for m in [
            ReclaimMode::Never,
            ReclaimMode::WhenReady,
            ReclaimMode::Immediately,
        ] {
            assert_eq!(m.to_string().parse::<ReclaimMode>().unwrap(), m);
        }
        assert!(!ReclaimMode::Never.takes_over());
        assert!(
            ReclaimMode::WhenReady.takes_over() && ReclaimMode::WhenReady.waits_for_readiness()
        );
        assert!(ReclaimMode::Immediately.takes_over());
        assert!(!ReclaimMode::Immediately.waits_for_readiness());
        assert!("sometimes".parse::<ReclaimMode>().is_err());
    }
}
