//! The `slashguard` binary against a Ledger running Tezos Baking in the
//! Speculos emulator protocol (the crate's device simulator behind a real
//! TCP port): show its marks, raise it with a store for failover, and the
//! refusals.

mod cli_support;

use cli_support::*;
use serde_json::Value;
use slashguard::usb::ledger::LedgerHwm;
use slashguard::usb::sim::{LedgerSim, SpeculosServer};
use slashguard::watermark::ChainId;

const MAINNET: ChainId = ChainId([0x7a, 0x06, 0xa7, 0x70]);

#[test]
fn ledger_marks_are_shown_and_raised_with_the_store_first() {
    let sim = LedgerSim::new([7; 32]);
    sim.set_hwm(MAINNET, LedgerHwm::at(4000), LedgerHwm::at(0));
    let server = SpeculosServer::start(sim.clone()).unwrap();
    let addr = server.addr().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let hwm = tmp.path().join("hwm");

    let v = json(
        sg().args([
            "watermark",
            "show",
            "--ledger-speculos",
            &addr,
            "--chain",
            "mainnet",
        ]),
        0,
    );
    let rows = v["watermarks"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|w| w["level"] == 4000), "{v}");
    let key = rows[0]["key"].as_str().unwrap().to_string();

    // Step 5 of the failover procedure: store, then device, to 4010.
    let v = json(
        sg().args([
            "watermark",
            "set-level",
            "--ledger-speculos",
            &addr,
            "--chain",
            "mainnet",
            "--level",
            "4010",
            "--all",
            "--create",
            "--file",
        ])
        .arg(&hwm),
        0,
    );
    assert_eq!(v["devices"][0]["changed"], true, "{v}");
    assert_eq!(sim.hwm().0.mark().level, 4010);
    let v = json(sg().arg("watermark").arg("show").arg("--file").arg(&hwm), 0);
    assert!(
        v["watermarks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["level"] == 4010 && w["key"] == Value::String(key.clone())),
        "{v}"
    );

    // Lower: refused, neither the device nor the store moves.
    json(
        sg().args([
            "watermark",
            "set-level",
            "--ledger-speculos",
            &addr,
            "--chain",
            "mainnet",
            "--level",
            "4005",
            "--all",
            "--file",
        ])
        .arg(&hwm),
        2,
    );
    assert_eq!(sim.hwm().0.mark().level, 4010);
    // A device is never lowered, even with --force.
    let v = json(
        sg().args([
            "watermark",
            "set-level",
            "--force",
            "--ledger-speculos",
            &addr,
            "--chain",
            "mainnet",
            "--level",
            "1",
            "--all",
        ]),
        4,
    );
    assert!(v["message"].as_str().unwrap().contains("device"), "{v}");
    assert_eq!(sim.hwm().0.mark().level, 4010);

    // Export the device's marks (a chain is needed for them).
    let out = tmp.path().join("ledger.json");
    json(
        sg().args([
            "watermark",
            "export",
            "--ledger-speculos",
            &addr,
            "--chain",
            "mainnet",
            "--out",
        ])
        .arg(&out),
        0,
    );
    assert!(std::fs::read_to_string(&out).unwrap().contains("4010"));

    // The emulator gone: the device is unavailable (3).
    drop(server);
    json(
        sg().args([
            "watermark",
            "show",
            "--ledger-speculos",
            &addr,
            "--chain",
            "mainnet",
        ]),
        3,
    );
}
