//! `slashguard identity`: ownership of a validator identity in etcd.

use crate::args::IdentityCommand;
use crate::exit::{needs_etcd, Failure};
use crate::output::Report;
use crate::settings::Settings;

pub async fn run(cmd: IdentityCommand, settings: &Settings) -> Result<Report, Failure> {
    needs_etcd()?;
    #[cfg(feature = "etcd")]
    {
        with_etcd::run(cmd, settings).await
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = (cmd, settings);
        unreachable!("needs_etcd refused")
    }
}

#[cfg(feature = "etcd")]
mod with_etcd {
    use std::time::Duration;

    use serde_json::{json, Value};
    use slashguard::etcd::{EtcdIdentity, OwnerStatus};
    use slashguard::NodeId;

    use crate::args::IdentityCommand;
    use crate::etcd_conn::{connect, identity};
    use crate::exit::{Code, Failure};
    use crate::node::node_id;
    use crate::output::{iso, now_ms, short, when, Report};
    use crate::settings::Settings;

    pub async fn run(cmd: IdentityCommand, settings: &Settings) -> Result<Report, Failure> {
        match cmd {
            IdentityCommand::Status { node } => status(node_id(&node)?, settings).await,
            IdentityCommand::TakeOver {
                node,
                release,
                hold: _,
                hold_for,
                wait_command,
                wait_timeout,
            } => {
                let node = node_id(&node)?;
                take_over(
                    node,
                    release,
                    hold_for,
                    wait_command,
                    wait_timeout,
                    settings,
                )
                .await
            }
            IdentityCommand::Release {
                node,
                expect_instance,
            } => release(node_id(&node)?, expect_instance, settings).await,
        }
    }

    fn owner_json(o: &Option<OwnerStatus>) -> Value {
        match o {
            None => Value::Null,
            Some(o) => json!({
                "instance": o.instance,
                "since_ms": o.since_ms,
                "lease": format!("{:x}", o.lease),
                "lease_ttl_left_ms": o.ttl_left.map(|t| t.as_millis() as u64),
                "lease_deadline": o.ttl_left.map(|t| iso(now_ms() + t.as_millis() as u64)),
                "since": iso(o.since_ms),
                "fence": o.fence,
            }),
        }
    }

    fn owner_text(o: &OwnerStatus) -> String {
        format!(
            "owner      {}\nsince      {}\nlease      {:x}, {}\nfence      {} (the owner key's etcd revision)",
            o.instance,
            when(o.since_ms),
            o.lease,
            match o.ttl_left {
                // etcd restores every lease with its whole TTL when it
                // restarts, so time left does not prove the owner alive:
                // show the deadline it must renew by.
                Some(t) => format!(
                    "expiring at {} ({} left) unless the owner renews it; a dead owner's claim vanishes then",
                    iso(now_ms() + t.as_millis() as u64),
                    short(t)
                ),
                None => "expired (the claim is about to vanish)".into(),
            },
            o.fence
        )
    }

    async fn open(node: NodeId, settings: &Settings) -> Result<EtcdIdentity, Failure> {
        let client = connect(settings).await?;
        identity(client, node, settings)
    }

    async fn status(node: NodeId, settings: &Settings) -> Result<Report, Failure> {
        let id = open(node, settings).await?;
        let owner = id.status().await?;
        let human = match &owner {
            None => format!("identity {node} is free: nobody owns it"),
            Some(o) => format!("identity   {node}\n{}", owner_text(o)),
        };
        Ok(Report::new(
            human,
            json!({"node": node.to_string(), "owned": owner.is_some(), "owner": owner_json(&owner)}),
        ))
    }

    /// Run the operator's "wait for the restart window" command; `Ok` only
    /// when it exits 0 in time.
    async fn wait_for_window(command: &str, timeout: Duration) -> Result<(), Failure> {
        tracing::info!(
            command,
            timeout_s = timeout.as_secs(),
            "waiting for the restart window"
        );
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Failure::bad_input(format!("cannot run the wait command {command:?}: {e}"))
            })?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Err(_) => {
                let _ = child.kill().await;
                Err(Failure::refused(format!(
                    "the wait command did not finish within {}s: the restart window was not reached; nothing was taken over",
                    timeout.as_secs()
                ))
                .hint("retry later, or raise --wait-timeout"))
            }
            Ok(Err(e)) => Err(Failure::new(Code::Other, format!("waiting for {command:?}: {e}"))),
            Ok(Ok(status)) if status.success() => Ok(()),
            // The shell's codes for "command not found" and "not
            // executable": the command line is wrong, not the window.
            Ok(Ok(status)) if matches!(status.code(), Some(126 | 127)) => Err(Failure::bad_input(format!(
                "the wait command {command:?} could not be run (exit {}: {}); nothing was taken over",
                status.code().unwrap_or_default(),
                if status.code() == Some(127) { "command not found" } else { "not executable" }
            ))
            .hint("check --wait-command: the program's name, its path and PATH")),
            Ok(Ok(status)) => Err(Failure::refused(format!(
                "the wait command exited with {status}: not in a restart window; nothing was taken over"
            ))
            .hint("retry when the validator reports a restart window")),
        }
    }

    async fn take_over(
        node: NodeId,
        release_now: bool,
        hold_for: Option<u64>,
        wait_command: Option<String>,
        wait_timeout: u64,
        settings: &Settings,
    ) -> Result<Report, Failure> {
        let id = open(node, settings).await?;
        if let Some(cmd) = &wait_command {
            wait_for_window(cmd, Duration::from_secs(wait_timeout)).await?;
        }
        let before = id.status().await?;
        let ownership = id.take_over().await.map_err(|e| {
            Failure::from(e).hint_if(
                Code::Unavailable,
                "the claim may or may not have committed; it expires with its lease: check `slashguard identity status`",
            )
        })?;
        let fence = ownership.fence();
        let previous = before
            .as_ref()
            .map(|o| format!("{} (fence {}), now fenced", o.instance, o.fence))
            .unwrap_or_else(|| "nobody".into());
        tracing::info!(%node, fence, previous = %previous, "identity taken over by the CLI");
        if release_now {
            id.release(ownership).await?;
            let human = format!(
                "took over {node} at fence {fence} from {previous}, then released it: a standby waiting for a free identity takes it now"
            );
            return Ok(Report::new(
                human,
                json!({"node": node.to_string(), "fence": fence, "previous_owner": owner_json(&before), "released": true}),
            ));
        }
        eprintln!(
            "slashguard: holding {node} as {:?} at fence {fence} (previous owner: {previous}); SIGINT or SIGTERM releases it",
            id.instance()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::new(Code::Other, format!("cannot watch SIGTERM: {e}")))?;
        let limit = async {
            match hold_for {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted",
            _ = term.recv() => "terminated",
            _ = limit => "hold time over",
            reason = ownership.lost() => {
                return Err(lost_while_holding(&id, node, fence, &reason).await);
            }
        };
        id.release(ownership).await?;
        Ok(Report::new(
            format!("held {node} at fence {fence} until {ended}; released"),
            json!({"node": node.to_string(), "fence": fence, "previous_owner": owner_json(&before), "released": true, "ended": ended}),
        ))
    }

    /// Why a held identity was lost: another instance took it (refused,
    /// exit 2), or etcd did not answer the lease renewals in time
    /// (unavailable, exit 3). Asks etcd once; no answer means the latter.
    async fn lost_while_holding(
        id: &EtcdIdentity,
        node: NodeId,
        fence: u64,
        reason: &str,
    ) -> Failure {
        let message = format!("lost {node} while holding it at fence {fence}: {reason}");
        match id.status().await {
            Ok(Some(o)) if o.fence != fence => Failure::refused(format!(
                "{message}; instance {} owns it now (fence {})",
                o.instance, o.fence
            ))
            .hint("another instance took it over: see `slashguard identity status`"),
            Ok(_) => Failure::new(
                Code::Unavailable,
                format!("{message}; etcd did not renew the lease in time"),
            )
            .hint("the store was unavailable or too slow; nobody else owns the identity: check etcd, then take it over again"),
            Err(e) => Failure::new(
                Code::Unavailable,
                format!("{message}; etcd is unavailable ({e})"),
            )
            .hint("the store is unavailable: the claim lapses with its lease; when etcd answers, see `slashguard identity status` and take it over again"),
        }
    }

    async fn release(
        node: NodeId,
        expect: Option<String>,
        settings: &Settings,
    ) -> Result<Report, Failure> {
        let id = open(node, settings).await?;
        let Some(owner) = id.status().await? else {
            return Ok(Report::new(
                format!("identity {node} is already free"),
                json!({"node": node.to_string(), "previous_owner": null, "released": false}),
            ));
        };
        if let Some(expected) = &expect {
            if *expected != owner.instance {
                return Err(Failure::refused(format!(
                    "identity {node} is owned by {:?}, not {expected:?}; nothing was released",
                    owner.instance
                ))
                .hint(
                    "check `slashguard identity status` and name the owner you mean to release",
                ));
            }
        }
        // Take it (which fences the owner in the same transaction that
        // changes the key), then give it up.
        let ownership = id.take_over().await?;
        id.release(ownership).await?;
        Ok(Report::new(
            format!(
                "released {node}: {} (fence {}) is fenced and can no longer store a tower; the identity is free",
                owner.instance, owner.fence
            ),
            json!({"node": node.to_string(), "previous_owner": owner_json(&Some(owner)), "released": true}),
        ))
    }
}
