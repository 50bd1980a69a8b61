//! The `slashguard` binary against file stores and Agave tower files: every
//! command, every refusal and every exit code that needs no server.

mod cli_support;
#[path = "common/slot_image.rs"]
mod slot_image;

use cli_support::*;
use serde_json::Value;
use slashguard::agave;
use slashguard::file::{FileTowerStorage, FileWatermarks};
use slashguard::watermark::{
    ChainId, ConsensusKind, Curve, KeyHash, Mark, SetMode, SignerGuard, WatermarkKey,
};
use slashguard::NodeKeypair;

const MAINNET: ChainId = ChainId([0x7a, 0x06, 0xa7, 0x70]);

fn tz(curve: Curve, b: u8) -> KeyHash {
    KeyHash {
        curve,
        hash: [b; 20],
    }
}

fn level_of(v: &Value, key: &KeyHash, kind: &str) -> Option<(u64, u64)> {
    v["watermarks"].as_array().unwrap().iter().find_map(|w| {
        (w["key"] == key.to_string() && w["kind"] == kind)
            .then(|| (w["level"].as_u64().unwrap(), w["round"].as_u64().unwrap()))
    })
}

#[test]
fn usage_errors_exit_4_and_help_documents_exit_codes() {
    let out = expect(sg().arg("--help"), 0);
    let help = stdout(&out);
    for line in [
        "0  ok",
        "2  refused",
        "3  store or device unavailable",
        "4  bad input",
    ] {
        assert!(help.contains(line), "{line:?} missing from --help");
    }
    expect(sg().arg("--version"), 0);
    expect(sg().arg("no-such-command"), 4);
    expect(sg().args(["tower", "show", "--dir", "/tmp"]), 4); // no --node/--keypair
    expect(sg().args(["identity", "take-over", "--node", "x"]), 4); // neither --release nor --hold
}

#[test]
fn tower_import_show_export_and_every_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let seed = NodeKeypair::generate().node_id().0;
    let kp = NodeKeypair::from_seed(seed);
    let node = kp.node_id().to_string();
    let kpf = keypair_file(t, seed);
    let newer = agave_tower(&kp, 100, 1, 60);
    let older = agave_tower(&kp, 50, 2, 20);
    let agave_new = agave_dir(t, "agave-new", &newer);
    let agave_old = agave_dir(t, "agave-old", &older);
    let store = t.join("store");
    std::fs::create_dir(&store).unwrap();
    let s = store.to_str().unwrap();

    // An Agave file, shown.
    let v = json(
        sg().args(["tower", "show", "--node", &node, "--agave"])
            .arg(&agave_new),
        0,
    );
    assert_eq!(v["tower"]["last_vote"]["slot"], 100);
    assert_eq!(v["tower"]["root"], 60);
    assert_eq!(v["tower"]["signature_valid"], true);

    // No store yet: a read-only command is a configuration error (4), not
    // "nothing stored", and an import without --create creates nothing.
    json(sg().args(["tower", "show", "--node", &node, "--dir", s]), 4);
    json(
        sg().args(["tower", "import", "--dir", s, "--keypair"])
            .arg(&kpf)
            .arg("--from-agave")
            .arg(&agave_new),
        4,
    );
    assert!(std::fs::read_dir(&store).unwrap().next().is_none());
    // Nothing to export: bad input, nothing written.
    let out_dir = t.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    json(
        sg().args(["tower", "export", "--dir", s, "--keypair"])
            .arg(&kpf)
            .arg("--to-agave")
            .arg(&out_dir),
        4,
    );
    assert!(std::fs::read_dir(&out_dir).unwrap().next().is_none());

    // Import the newer tower into a new store; show it from the store.
    json(
        sg().args(["tower", "import", "--create", "--dir", s, "--keypair"])
            .arg(&kpf)
            .arg("--from-agave")
            .arg(&agave_new),
        0,
    );
    let v = json(
        sg().args(["tower", "show", "--keypair"])
            .arg(&kpf)
            .args(["--dir", s]),
        0,
    );
    assert_eq!(v["tower"]["last_vote"]["slot"], 100);
    assert_eq!(v["tower"]["signature_valid"], true);
    assert!(v["tower"]["age_ms"].as_u64().unwrap() < 60_000);

    // Importing an older tower is refused (exit 2) and changes nothing.
    let v = json(
        sg().args(["tower", "import", "--dir", s, "--keypair"])
            .arg(&kpf)
            .arg("--from-agave")
            .arg(&agave_old),
        2,
    );
    assert!(v["message"].as_str().unwrap().contains("regress"), "{v}");
    let v = json(sg().args(["tower", "show", "--node", &node, "--dir", s]), 0);
    assert_eq!(v["tower"]["last_vote"]["slot"], 100);

    // While a validator holds the store: import refused, show still works.
    {
        let _running = FileTowerStorage::open(&store, kp.node_id()).unwrap();
        let v = json(
            sg().args(["tower", "import", "--dir", s, "--keypair"])
                .arg(&kpf)
                .arg("--from-agave")
                .arg(&agave_new),
            2,
        );
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("held by another process"),
            "{v}"
        );
        assert!(v["hint"].as_str().unwrap().contains("stop it first"), "{v}");
        let v = json(sg().args(["tower", "show", "--node", &node, "--dir", s]), 0);
        assert_eq!(v["tower"]["last_vote"]["slot"], 100);
        // Nor is a live tower exported: the validator still votes.
        let v = json(
            sg().args(["tower", "export", "--dir", s, "--keypair"])
                .arg(&kpf)
                .arg("--to-agave")
                .arg(&out_dir),
            2,
        );
        assert!(
            v["message"].as_str().unwrap().contains("running validator"),
            "{v}"
        );
        assert!(std::fs::read_dir(&out_dir).unwrap().next().is_none());
    }

    // Export to an empty directory: the file Agave loads is the tower.
    json(
        sg().args(["tower", "export", "--dir", s, "--keypair"])
            .arg(&kpf)
            .arg("--to-agave")
            .arg(&out_dir),
        0,
    );
    let back = agave::load_tower(&out_dir, &kp.node_id()).unwrap().unwrap();
    assert_eq!(
        back.encode(),
        newer.encode(),
        "byte for byte the original file"
    );

    // Export over a newer Agave tower: refused, file untouched; --force overwrites.
    let ahead = agave_tower(&kp, 300, 3, 250);
    let agave_ahead = agave_dir(t, "agave-ahead", &ahead);
    json(
        sg().args(["tower", "export", "--dir", s, "--keypair"])
            .arg(&kpf)
            .arg("--to-agave")
            .arg(&agave_ahead),
        2,
    );
    assert_eq!(
        agave::load_tower(&agave_ahead, &kp.node_id())
            .unwrap()
            .unwrap()
            .tower()
            .last_voted_slot(),
        Some(300)
    );
    json(
        sg().args(["tower", "export", "--force", "--dir", s, "--keypair"])
            .arg(&kpf)
            .arg("--to-agave")
            .arg(&agave_ahead),
        0,
    );
    assert_eq!(
        agave::load_tower(&agave_ahead, &kp.node_id())
            .unwrap()
            .unwrap()
            .tower()
            .last_voted_slot(),
        Some(100)
    );

    // Forced import of the older tower (operator recovery).
    json(
        sg().args(["tower", "import", "--force", "--dir", s, "--keypair"])
            .arg(&kpf)
            .arg("--from-agave")
            .arg(&agave_old),
        0,
    );
    let v = json(sg().args(["tower", "show", "--node", &node, "--dir", s]), 0);
    assert_eq!(v["tower"]["last_vote"]["slot"], 50);

    // A tower file with a bad signature: shown as invalid, exit 4.
    let path = agave::tower_file_path(&agave_new, &kp.node_id(), agave::FileKind::V1_9);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5] ^= 0xff; // inside the signature
    std::fs::write(&path, &bytes).unwrap();
    let v = json(
        sg().args(["tower", "show", "--node", &node, "--agave"])
            .arg(&agave_new),
        4,
    );
    assert!(v["message"].as_str().unwrap().contains("signature"), "{v}");
    json(
        sg().args(["tower", "import", "--dir", s, "--keypair"])
            .arg(&kpf)
            .arg("--from-agave")
            .arg(&agave_new),
        4,
    );

    // A damaged store: corrupt, exit 4, not overwritten by an import.
    let data = FileTowerStorage::data_path(&store, &kp.node_id());
    std::fs::write(&data, vec![0x5a; 8192]).unwrap();
    json(sg().args(["tower", "show", "--node", &node, "--dir", s]), 4);
    json(
        sg().args(["tower", "import", "--dir", s, "--keypair"])
            .arg(&kpf)
            .arg("--from-agave")
            .arg(&agave_old),
        4,
    );
    assert_eq!(std::fs::read(&data).unwrap(), vec![0x5a; 8192]);

    // Bad keypair file, bad node id.
    let bad = t.join("bad.json");
    std::fs::write(&bad, "[1,2,3]").unwrap();
    json(
        sg().args(["tower", "export", "--dir", s, "--keypair"])
            .arg(&bad)
            .arg("--to-agave")
            .arg(&out_dir),
        4,
    );
    json(
        sg().args(["tower", "show", "--node", "not-a-key", "--dir", s]),
        4,
    );
}

fn interchange(entries: &[(KeyHash, &str, u32, u32)], alias: Option<(&KeyHash, &str)>) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|(k, kind, level, round)| {
            let a = match alias {
                Some((ak, name)) if ak == k => format!(r#","alias":"{name}""#),
                _ => String::new(),
            };
            format!(r#"{{"chain":"NetXdQprcVkpaWU","key":"{k}"{a},"kind":"{kind}","level":{level},"round":{round}}}"#)
        })
        .collect();
    format!(
        r#"{{"format":"slashguard-watermarks","version":1,"watermarks":[{}]}}"#,
        items.join(",")
    )
}

#[test]
fn watermarks_import_set_level_export_and_every_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let consensus = tz(Curve::Bls, 1);
    let companion = tz(Curve::Bls, 2);
    let hwm = t.join("hwm");
    let h = hwm.to_str().unwrap();

    // Import an interchange file (alias carried), then show it.
    let f1 = t.join("in.json");
    std::fs::write(
        &f1,
        interchange(
            &[
                (consensus, "block", 1000, 2),
                (consensus, "attestation", 1001, 0),
                (companion, "attestation", 1001, 0),
            ],
            Some((&consensus, "consensus")),
        ),
    )
    .unwrap();
    // No store there yet: read-only commands exit 4, an import without
    // --create is refused, and nothing is created.
    json(
        sg().args(["watermark", "show", "--file", "/no/such/dir/hwm"]),
        4,
    );
    json(sg().args(["watermark", "show", "--file", h]), 4);
    json(
        sg().args(["watermark", "import", "--file", h, "--in"])
            .arg(&f1),
        4,
    );
    assert!(!hwm.exists() && !t.join("hwm.lock").exists());
    let v = json(
        sg().args(["watermark", "import", "--create", "--file", h, "--in"])
            .arg(&f1),
        0,
    );
    assert_eq!(v["set"].as_array().unwrap().len(), 3, "{v}");
    // --create on an existing store is refused and changes nothing.
    json(
        sg().args(["watermark", "import", "--create", "--file", h, "--in"])
            .arg(&f1),
        4,
    );
    let v = json(sg().args(["watermark", "show", "--file", h]), 0);
    assert_eq!(level_of(&v, &consensus, "block"), Some((1000, 2)));
    assert!(
        v["watermarks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["key"] != consensus.to_string() || w["alias"] == Value::Null),
        "aliases come from the operator's settings, not the store"
    );
    let out = expect(
        sg().args(["watermark", "show", "--file", h, "--alias"])
            .arg(format!("consensus={consensus}")),
        0,
    );
    assert!(stdout(&out).contains("consensus"), "{}", stdout(&out));

    // set-level below a stored mark: refused, nothing changed, the hint names it.
    let v = json(
        sg().args([
            "watermark",
            "set-level",
            "--file",
            h,
            "--chain",
            "mainnet",
            "--level",
            "1000",
            "--all",
        ]),
        2,
    );
    assert!(
        v["hint"].as_str().unwrap().contains("above level 1000"),
        "{v}"
    );
    let v = json(sg().args(["watermark", "show", "--file", h]), 0);
    assert_eq!(level_of(&v, &consensus, "block"), Some((1000, 2)));
    assert_eq!(level_of(&v, &companion, "block"), None);

    // set-level above: every kind of every key of the chain.
    let v = json(
        sg().args([
            "watermark",
            "set-level",
            "--file",
            h,
            "--chain",
            "NetXdQprcVkpaWU",
            "--level",
            "1011",
            "--all",
        ]),
        0,
    );
    assert_eq!(v["marks"].as_array().unwrap().len(), 6);
    let v = json(sg().args(["watermark", "show", "--file", h]), 0);
    for k in [&consensus, &companion] {
        for kind in ["block", "preattestation", "attestation"] {
            assert_eq!(level_of(&v, k, kind), Some((1011, 0)), "{k} {kind}");
        }
    }
    // One key by alias, from an alias file.
    let aliases = t.join("aliases");
    std::fs::write(&aliases, format!("# keys\nconsensus = {consensus}\n")).unwrap();
    json(
        sg().args([
            "watermark",
            "set-level",
            "--file",
            h,
            "--chain",
            "mainnet",
            "--level",
            "1020",
            "--key",
            "consensus",
            "--alias-file",
        ])
        .arg(&aliases),
        0,
    );
    let v = json(sg().args(["watermark", "show", "--file", h]), 0);
    assert_eq!(level_of(&v, &consensus, "attestation"), Some((1020, 0)));
    assert_eq!(level_of(&v, &companion, "attestation"), Some((1011, 0)));
    // --force lowers (recovery).
    json(
        sg().args([
            "watermark",
            "set-level",
            "--force",
            "--yes",
            "--file",
            h,
            "--chain",
            "mainnet",
            "--level",
            "900",
            "--key",
        ])
        .arg(companion.to_string()),
        0,
    );
    let v = json(sg().args(["watermark", "show", "--file", h]), 0);
    assert_eq!(level_of(&v, &companion, "attestation"), Some((900, 0)));

    // While a baker holds the file: set-level and import refused, show works.
    {
        let _baker = FileWatermarks::open(&hwm).unwrap();
        let v = json(
            sg().args([
                "watermark",
                "set-level",
                "--file",
                h,
                "--chain",
                "mainnet",
                "--level",
                "5000",
                "--all",
            ]),
            2,
        );
        assert!(v["hint"].as_str().unwrap().contains("stop it first"), "{v}");
        json(
            sg().args(["watermark", "import", "--file", h, "--in"])
                .arg(&f1),
            2,
        );
        json(sg().args(["watermark", "show", "--file", h]), 0);
    }

    // Export, then import into a fresh store: the same marks.
    let exported = t.join("export.json");
    json(
        sg().args(["watermark", "export", "--file", h, "--out"])
            .arg(&exported)
            .args(["--alias"])
            .arg(format!("consensus={consensus}")),
        0,
    );
    let text = std::fs::read_to_string(&exported).unwrap();
    assert!(text.contains("\"alias\": \"consensus\""), "{text}");
    let hwm2 = t.join("hwm2");
    json(
        sg().args(["watermark", "import", "--create", "--file"])
            .arg(&hwm2)
            .arg("--in")
            .arg(&exported),
        0,
    );
    let a = json(sg().args(["watermark", "show", "--file", h]), 0);
    let b = json(
        sg().arg("watermark").arg("show").arg("--file").arg(&hwm2),
        0,
    );
    assert_eq!(a["watermarks"], b["watermarks"]);

    // Importing a file below the store: refused whole; --keep-higher merges; --force lowers.
    let low = t.join("low.json");
    let third = tz(Curve::Ed25519, 3);
    std::fs::write(
        &low,
        interchange(
            &[(consensus, "block", 10, 0), (third, "block", 10, 0)],
            None,
        ),
    )
    .unwrap();
    let v = json(
        sg().args(["watermark", "import", "--file", h, "--in"])
            .arg(&low),
        2,
    );
    assert!(v["hint"].as_str().unwrap().contains("--keep-higher"), "{v}");
    let v = json(sg().args(["watermark", "show", "--file", h]), 0);
    assert_eq!(level_of(&v, &third, "block"), None, "all or nothing");
    let v = json(
        sg().args(["watermark", "import", "--keep-higher", "--file", h, "--in"])
            .arg(&low),
        0,
    );
    assert_eq!(v["kept_higher"], 1);
    let v = json(sg().args(["watermark", "show", "--file", h]), 0);
    assert_eq!(level_of(&v, &third, "block"), Some((10, 0)));
    assert_eq!(level_of(&v, &consensus, "block"), Some((1020, 0)));
    let v = json(
        sg().args(["watermark", "import", "--force", "--file", h, "--in"])
            .arg(&low),
        0,
    );
    assert_eq!(v["lowered"], 1);

    // Bad input: damaged, foreign, newer-version files; no chain; unknown alias.
    for (name, text) in [
        ("garbage.json", "{not json".to_string()),
        (
            "other.json",
            r#"{"format":"something-else","version":1,"watermarks":[]}"#.to_string(),
        ),
        (
            "v2.json",
            r#"{"format":"slashguard-watermarks","version":2,"watermarks":[]}"#.to_string(),
        ),
        (
            "dup.json",
            interchange(&[(third, "block", 1, 0), (third, "block", 2, 0)], None),
        ),
    ] {
        let p = t.join(name);
        std::fs::write(&p, text).unwrap();
        let v = json(
            sg().args(["watermark", "import", "--file", h, "--in"])
                .arg(&p),
            4,
        );
        assert!(
            v["message"].as_str().unwrap().contains(name),
            "names the file: {v}"
        );
    }
    json(
        sg().args(["watermark", "import", "--file", h, "--in"])
            .arg(t.join("missing.json")),
        4,
    );
    json(
        sg().args([
            "watermark",
            "set-level",
            "--file",
            h,
            "--level",
            "5",
            "--all",
        ]),
        4,
    );
    json(
        sg().args([
            "watermark",
            "set-level",
            "--file",
            h,
            "--chain",
            "mainnet",
            "--level",
            "5",
            "--key",
            "nobody",
        ]),
        4,
    );
    json(
        sg().args([
            "watermark",
            "set-level",
            "--file",
            h,
            "--chain",
            "NetXnope",
            "--level",
            "5",
            "--all",
        ]),
        4,
    );
    std::fs::write(&hwm, vec![7u8; 8192]).unwrap();
    json(sg().args(["watermark", "show", "--file", h]), 4);
}

#[test]
fn octez_signer_marks_are_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tz1 = tz(Curve::Ed25519, 9);
    let octez = t.join("tezos-signer");
    std::fs::create_dir(&octez).unwrap();
    let hash = "ab".repeat(32);
    std::fs::write(
        octez.join("block_high_watermarks"),
        format!(r#"{{"NetXdQprcVkpaWU":{{"{tz1}":{{"level":7000,"round":1,"hash":"{hash}","signature":"sigXYZ"}}}}}}"#),
    )
    .unwrap();
    std::fs::write(
        octez.join("attestation_high_watermarks"),
        format!(r#"{{"NetXdQprcVkpaWU":{{"{tz1}":{{"level":7001,"round":0,"hash":"{hash}"}}}}}}"#),
    )
    .unwrap();
    let hwm = t.join("hwm");
    // A store already ahead for one kind: refused, then merged.
    {
        let store = FileWatermarks::create(&hwm).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(store.set_marks(
            &[(
                WatermarkKey {
                    chain: MAINNET,
                    key: tz1,
                    kind: ConsensusKind::Block,
                },
                Mark::level(8000),
            )],
            SetMode::RaiseOnly,
        ))
        .unwrap();
    }
    json(
        sg().args(["watermark", "import", "--file"])
            .arg(&hwm)
            .arg("--from-octez")
            .arg(&octez),
        2,
    );
    let v = json(
        sg().args(["watermark", "import", "--keep-higher", "--file"])
            .arg(&hwm)
            .arg("--from-octez")
            .arg(&octez),
        0,
    );
    assert_eq!(v["kept_higher"], 1);
    let v = json(sg().arg("watermark").arg("show").arg("--file").arg(&hwm), 0);
    assert_eq!(level_of(&v, &tz1, "block"), Some((8000, 0)));
    assert_eq!(level_of(&v, &tz1, "attestation"), Some((7001, 0)));

    // Not an octez directory; a damaged file.
    json(
        sg().args(["watermark", "import", "--file"])
            .arg(&hwm)
            .arg("--from-octez")
            .arg(t),
        4,
    );
    std::fs::write(
        octez.join("block_high_watermarks"),
        "{\"NetXdQprcVkpaWU\": 5}",
    )
    .unwrap();
    let v = json(
        sg().args(["watermark", "import", "--file"])
            .arg(&hwm)
            .arg("--from-octez")
            .arg(&octez),
        4,
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("block_high_watermarks"),
        "{v}"
    );
}

#[test]
fn config_file_and_environment_give_the_same_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let key = tz(Curve::Bls, 4);
    let hwm = t.join("hwm");
    let config = t.join("slashguard.toml");
    std::fs::write(
        &config,
        format!("chain = \"mainnet\"\n[aliases]\nconsensus = \"{key}\"\n"),
    )
    .unwrap();
    // The chain and the alias come from the config file.
    json(
        sg().args(["watermark", "set-level", "--create", "--file"])
            .arg(&hwm)
            .args(["--level", "50", "--key", "consensus", "--config"])
            .arg(&config),
        0,
    );
    // The same file through the environment.
    let v = json(
        sg().env("SLASHGUARD_CONFIG", &config)
            .arg("watermark")
            .arg("show")
            .arg("--file")
            .arg(&hwm),
        0,
    );
    assert_eq!(level_of(&v, &key, "block"), Some((50, 0)));
    assert_eq!(v["watermarks"][0]["alias"], "consensus");
    // The chain from the environment wins over the file.
    let v = json(
        sg().env("SLASHGUARD_CHAIN", "NetXnHfVqm9iesp")
            .arg("watermark")
            .arg("show")
            .arg("--file")
            .arg(&hwm)
            .arg("--config")
            .arg(&config),
        0,
    );
    assert_eq!(v["watermarks"].as_array().unwrap().len(), 0);
    // A bad config file is bad input, naming the file.
    std::fs::write(&config, "[etcd]\nendpoint = \"x\"\n").unwrap();
    let v = json(
        sg().arg("watermark")
            .arg("show")
            .arg("--file")
            .arg(&hwm)
            .arg("--config")
            .arg(&config),
        4,
    );
    assert!(
        v["message"].as_str().unwrap().contains("slashguard.toml"),
        "{v}"
    );
}

#[test]
fn device_list_reports_the_bus_or_its_absence() {
    let out = sg().args(["device", "list", "--json"]).output().unwrap();
    let code = out.status.code().unwrap();
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    if cfg!(feature = "usb") {
        // A container has no USB bus (3, with what to do); a host lists what it has (0).
        match code {
            0 => assert!(v["devices"].is_array(), "{v}"),
            3 => assert!(v["hint"].as_str().unwrap().contains("plugged"), "{v}"),
            other => panic!("exit {other}: {v}"),
        }
    } else {
        assert_eq!(code, 4, "{v}");
        assert!(v["hint"].as_str().unwrap().contains("--features"), "{v}");
    }
}

#[test]
fn octez_entries_of_unknown_key_schemes_are_named_and_skipped_only_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tz1 = tz(Curve::Ed25519, 9);
    let tz5 = bs58::encode([&[6u8, 161, 169][..], &[3; 20]].concat())
        .with_check()
        .into_string();
    let octez = t.join("tezos-signer");
    std::fs::create_dir(&octez).unwrap();
    let hash = "ab".repeat(32);
    std::fs::write(
        octez.join("attestation_high_watermarks"),
        format!(r#"{{"NetXdQprcVkpaWU":{{"{tz1}":{{"level":7001,"round":0,"hash":"{hash}"}},"{tz5}":{{"level":7002,"round":0,"hash":"{hash}"}}}}}}"#),
    )
    .unwrap();
    let hwm = t.join("hwm");
    FileWatermarks::create(&hwm).unwrap();
    // Refused whole, naming the entry and its scheme; nothing imported.
    let v = json(
        sg().args(["watermark", "import", "--file"])
            .arg(&hwm)
            .arg("--from-octez")
            .arg(&octez),
        4,
    );
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(&tz5) && msg.contains("tz5 (ML-DSA-44)"), "{v}");
    let shown = json(sg().arg("watermark").arg("show").arg("--file").arg(&hwm), 0);
    assert_eq!(level_of(&shown, &tz1, "attestation"), None);
    // Asked to skip: the rest is imported, the skipped entry named.
    let v = json(
        sg().args(["watermark", "import", "--skip-unknown-keys", "--file"])
            .arg(&hwm)
            .arg("--from-octez")
            .arg(&octez),
        0,
    );
    let skipped = v["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{v}");
    assert!(skipped[0].as_str().unwrap().contains(&tz5), "{v}");
    let shown = json(sg().arg("watermark").arg("show").arg("--file").arg(&hwm), 0);
    assert_eq!(level_of(&shown, &tz1, "attestation"), Some((7001, 0)));
}

#[test]
fn set_level_through_a_link_is_refused_while_a_baker_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let key = tz(Curve::Bls, 7).to_string();
    let hwm = t.join("hwm");
    let _baker = FileWatermarks::create(&hwm).unwrap();
    let hard = t.join("hard");
    std::fs::hard_link(&hwm, &hard).unwrap();
    let sym = t.join("sym");
    std::os::unix::fs::symlink(&hwm, &sym).unwrap();
    // Before: the raise through a link was acknowledged, and the baker
    // then overwrote it.
    for link in [&hard, &sym] {
        json(
            sg().args([
                "watermark",
                "set-level",
                "--chain",
                "mainnet",
                "--level",
                "50",
            ])
            .args(["--key", &key, "--file"])
            .arg(link),
            2,
        );
    }
}

#[test]
fn a_damaged_store_is_refused_until_set_level_all_or_accept_older() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let key = tz(Curve::Bls, 8).to_string();
    let hwm = t.join("hwm");
    let h = hwm.to_str().unwrap();
    for level in ["10", "20"] {
        json(
            sg().args([
                "watermark",
                "set-level",
                "--chain",
                "mainnet",
                "--key",
                &key,
            ])
            .args(["--level", level, "--file", h])
            .args(if level == "10" {
                &["--create"][..]
            } else {
                &[][..]
            }),
            0,
        );
    }
    // Both copies of the newest slot.
    let damage = |path: &std::path::Path| slot_image::damage_newest_slot(path, 2);
    damage(&hwm);
    // Refused (2), naming the recovery command; nothing written.
    let v = json(sg().args(["watermark", "show", "--file", h]), 2);
    assert!(v.to_string().contains("watermark set-level"), "{v}");
    json(
        sg().args([
            "watermark",
            "set-level",
            "--chain",
            "mainnet",
            "--key",
            &key,
        ])
        .args(["--level", "30", "--file", h]),
        0,
    );
    let v = json(sg().args(["watermark", "show", "--file", h]), 0);
    assert_eq!(level_of(&v, &tz(Curve::Bls, 8), "block"), Some((30, 0)));

    // The tower: stored twice, damaged, refused, accepted.
    let kp = NodeKeypair::generate();
    let node = kp.node_id().to_string();
    let store = t.join("towers");
    std::fs::create_dir(&store).unwrap();
    {
        use slashguard::tower::{StoreMode, TowerRecord, TowerStorage, VoteRef};
        let s = FileTowerStorage::create(&store, kp.node_id()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for slot in [10, 20] {
            let r = TowerRecord::sign(
                &kp,
                Some(VoteRef {
                    slot,
                    hash: [1; 32],
                }),
                None,
                vec![1; 8],
            )
            .unwrap();
            rt.block_on(s.store(&r, StoreMode::Advance)).unwrap();
        }
    }
    damage(&FileTowerStorage::data_path(&store, &kp.node_id()));
    let d = store.to_str().unwrap();
    json(sg().args(["tower", "show", "--node", &node, "--dir", d]), 2);
    let v = json(
        sg().args(["tower", "accept-older", "--node", &node, "--dir", d]),
        0,
    );
    assert_eq!(v["was_damaged"], true, "{v}");
    assert_eq!(v["last_vote"]["slot"], 10, "{v}");
    let v = json(sg().args(["tower", "show", "--node", &node, "--dir", d]), 0);
    assert_eq!(v["tower"]["last_vote"]["slot"], 10);
}

/// A tower stored through `VoteGuard::vote` holds the validator's own
/// format: `tower export` refuses it and says why, instead of calling it a
/// corrupt Agave tower.
#[test]
fn tower_export_refuses_an_opaque_record_and_says_why() {
    use slashguard::tower::vote_tx::CastVote;
    use slashguard::tower::{TowerUpdate, VoteGuard, VoteRef};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let seed = [0x61; 32];
    let kp = NodeKeypair::from_seed(seed);
    let node = kp.node_id();
    let kpf = keypair_file(t, seed);
    let store = t.join("store");
    std::fs::create_dir(&store).unwrap();
    let account = slashguard::NodeId([0x5a; 32]);
    {
        let guard = VoteGuard::new(FileTowerStorage::create(&store, node).unwrap(), kp)
            .unwrap()
            .with_vote_account(account);
        let update = TowerUpdate {
            vote: VoteRef {
                slot: 5,
                hash: [1; 32],
            },
            root: None,
            tower: vec![0xAB; 288],
        };
        let message = CastVote::tower_sync_for(update.vote, None, account, node)
            .to_legacy_message(node, [0; 32])
            .unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(guard.vote(update, &message))
            .unwrap();
    }
    let out_dir = t.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let v = json(
        sg().args(["tower", "export", "--dir"])
            .arg(&store)
            .arg("--keypair")
            .arg(&kpf)
            .arg("--to-agave")
            .arg(&out_dir),
        4,
    );
    let text = v.to_string();
    assert!(text.contains("validator's own format"), "{v}");
    assert!(!text.contains("trailing bytes"), "{v}");
    assert!(std::fs::read_dir(&out_dir).unwrap().next().is_none());
}
