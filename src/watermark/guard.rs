//! The `SignerGuard` trait: where watermarks live.

use async_trait::async_trait;

use crate::error::Result;
use crate::watermark::{Decision, Mark, SignRequest, Watermark, WatermarkKey};

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
    /// A mark that is set has no payload hash: nothing at exactly that mark
    /// can be signed afterwards. In [`SetMode::RaiseOnly`], a mark equal to
    /// the stored one is not set: that entry stays as it is, so a message
    /// signed at it may still be repeated (the same bytes, not a double
    /// sign).
    async fn set_marks(&self, marks: &[(WatermarkKey, Mark)], mode: SetMode) -> Result<()>;

    /// A short name of the backend for logs and metrics (`file`, `etcd`,
    /// `memory`, `device`; `custom` unless overridden).
    fn backend(&self) -> &'static str {
        "custom"
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
        }
    )*};
}

forward_guard!(std::sync::Arc<T>, &T, Box<T>);
