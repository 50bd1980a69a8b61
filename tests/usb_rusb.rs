//! The rusb path as far as this machine allows: it has no USB bus, so
//! discovery and opening must say "no device" clearly, quickly, and never
//! panic or hang. On a machine with a bus and no signer attached the same
//! assertions hold (an empty list, "no ... on the USB bus").

use std::sync::mpsc;
use std::time::{Duration, Instant};

use slashguard::usb::{list_devices, DeviceError, RusbLedger, RusbTezSign};

/// Run `f` on a thread; fail the test if it takes longer than `limit`.
fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not return within {limit:?} (a hang)"))
}

fn assert_no_device(e: &DeviceError, what: &str) {
    match e {
        DeviceError::NoDevice { detail } => {
            assert!(
                detail.contains(what) || detail.contains("no usable USB bus"),
                "unhelpful detail: {detail}"
            );
        }
        other => panic!("expected NoDevice, got {other:?}"),
    }
    // The message names the way out.
    assert!(e.to_string().starts_with("no device found"), "{e}");
}

#[test]
fn discovery_without_devices_is_a_clear_answer() {
    let start = Instant::now();
    match bounded(Duration::from_secs(20), list_devices) {
        Ok(list) => assert!(
            list.is_empty(),
            "this machine has no signer attached: {list:?}"
        ),
        Err(e) => assert_no_device(&e, "USB"),
    }
    let ledger = bounded(Duration::from_secs(20), || RusbLedger::open(None).err());
    assert_no_device(&ledger.expect("no Ledger here"), "Ledger");
    let tezsign = bounded(Duration::from_secs(20), || {
        RusbTezSign::open(Some("0001")).err()
    });
    assert_no_device(&tezsign.expect("no TezSign here"), "TezSign");
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn no_device_maps_to_unavailable() {
    let e = RusbLedger::open(None).err().expect("no Ledger here");
    let err: slashguard::Error = e.into();
    assert!(err.is_unavailable(), "{err}");
    assert!(!err.is_refusal());
}
