//! The `SignerGuard` trait: where watermarks live.

use async_trait::async_trait;

use crate::error::Result;
use crate::watermark::{Decision, Mark, SignRequest, StoredSignature, Watermark, WatermarkKey};

/// How [`SignerGuard::set_marks`] treats a mark below the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetMode {
    /// Refuse the whole batch if any mark would go down (the default, and
    /// the only safe choice during failover).
    #[default]
    RaiseOnly,
    /// Set the marks as given, even lower (operator recovery only).
    Force,
}

/// Durable high watermarks, shared by every signer that uses the same store.
///
/// Contract for every implementation:
///
/// - [`authorize`](SignerGuard::authorize) checks every request with
///   [`decide`](crate::watermark::decide) and advances the watermarks in
///   ONE atomic step: all requests pass and advance, or none does. Two
///   callers racing at one (level, round) with different payloads: exactly
///   one gets `Ok`, in every process and on every host sharing the store.
/// - `Ok` means durable: the advanced marks survive a crash of this process
///   and of the host before the caller signs.
/// - Any `Err` means: do not sign. An
///   [`Error::Unavailable`](crate::Error::Unavailable) comes back within the
///   backend's deadline, never after a hang.
#[async_trait]
pub trait SignerGuard: Send + Sync {
    /// Check and advance a batch of requests (for example a consensus key
    /// and its companion key signing one attestation).
    async fn authorize(&self, requests: &[SignRequest]) -> Result<Vec<Decision>>;

    /// The stored watermark of one key.
    async fn watermark(&self, key: &WatermarkKey) -> Result<Option<Watermark>>;

    /// Every stored watermark.
    async fn watermarks(&self) -> Result<Vec<(WatermarkKey, Watermark)>>;

    /// Set marks directly (failover `set-level`, import), all or nothing.
    /// A mark that is set has no payload hash and no signature: nothing at
    /// exactly that mark can be signed (or repeated) afterwards, including
    /// when it equals the stored mark (the caller knows no payload there,
    /// or another one than the store's).
    async fn set_marks(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()>;

    /// A short name of the backend for logs and metrics (`file`, `etcd`,
    /// `memory`, `device`; `custom` unless overridden).
    fn backend(&self) -> &'static str {
        "custom"
    }

    /// Whether [`authorize`](SignerGuard::authorize) stores the signature a
    /// request carries with the advanced mark (every store: memory, file,
    /// etcd). A guard that keeps none (a device whose own watermark moves
    /// when it signs) answers `false`, and is asked before the signer signs.
    fn keeps_signatures(&self) -> bool {
        true
    }

    /// The signature stored for exactly `request`'s message (same mark and
    /// payload hash), if any: a repeat returns it without signing again.
    /// A backend may answer from what it last saw (it never returns a
    /// signature of other bytes); `None` is always safe.
    async fn stored_signature(&self, request: &SignRequest) -> Result<Option<StoredSignature>> {
        Ok(self
            .watermark(&request.key)
            .await?
            .and_then(|w| w.signature_of(request)))
    }

    /// Refuse now what [`authorize`](SignerGuard::authorize) would
    /// certainly refuse, from state this guard holds without a round trip
    /// (the in-memory table of the memory and file stores), so that a
    /// signer is not asked to sign bytes that will not be released. `Ok`
    /// promises nothing: `authorize` decides. The default checks nothing.
    async fn precheck(&self, request: &SignRequest) -> Result<()> {
        let _ = request;
        Ok(())
    }

    /// Bring what this guard remembers of `key` up to date with the store
    /// (one read), before a signer with a watermark of its own is asked
    /// ([`Signer::has_own_watermark`](crate::Signer::has_own_watermark)):
    /// [`stored_signature`](SignerGuard::stored_signature) and
    /// [`precheck`](SignerGuard::precheck) then answer from the store's
    /// current value. What was just read is final for the signer about to
    /// be asked, so a damaged entry, or one below what this process has
    /// already seen, is refused here, as `authorize` would (the device
    /// would otherwise have moved its own mark for bytes never released).
    /// A store whose table in memory is the truth (memory, file) has
    /// nothing to read: the default; its `precheck` refuses damage.
    async fn reload(&self, key: &WatermarkKey) -> Result<()> {
        let _ = key;
        Ok(())
    }

    /// Authorize one request.
    async fn authorize_one(&self, request: &SignRequest) -> Result<Decision> {
        Ok(self.authorize(std::slice::from_ref(request)).await?[0])
    }
}

macro_rules! forward_guard {
    ($($t:ty),*) => {$(
        #[async_trait]
        impl<T: SignerGuard + ?Sized> SignerGuard for $t {
            async fn authorize(&self, requests: &[SignRequest]) -> Result<Vec<Decision>> {
                (**self).authorize(requests).await
            }
            async fn watermark(&self, key: &WatermarkKey) -> Result<Option<Watermark>> {
                (**self).watermark(key).await
            }
            async fn watermarks(&self) -> Result<Vec<(WatermarkKey, Watermark)>> {
                (**self).watermarks().await
            }
            async fn set_marks(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()> {
                (**self).set_marks(marks, mode).await
            }
            fn backend(&self) -> &'static str {
                (**self).backend()
            }
            fn keeps_signatures(&self) -> bool {
                (**self).keeps_signatures()
            }
            async fn stored_signature(&self, request: &SignRequest) -> Result<Option<StoredSignature>> {
                (**self).stored_signature(request).await
            }
            async fn precheck(&self, request: &SignRequest) -> Result<()> {
                (**self).precheck(request).await
            }
            async fn reload(&self, key: &WatermarkKey) -> Result<()> {
                (**self).reload(key).await
            }
        }
    )*};
}

forward_guard!(std::sync::Arc<T>, &T, Box<T>);
