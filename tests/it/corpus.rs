//! Coverage-guided fuzzing through the real binary: a campaign keeps the draws of seeds that
//! reached a window first or a rare one, spends its corpus share mutating them, lists every
//! declared window with its first hit, keeps corpus and windows across `--resume`, and every
//! corpus entry replays as an artifact does.

use std::path::{Path, PathBuf};

use crate::cli::{shopsim, temp_dir};

fn json_of(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn entries(out: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(dirs) = std::fs::read_dir(out.join("corpus")) else {
        return found;
    };
    for dir in dirs {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            found.push(file.unwrap().path());
        }
    }
    found.sort();
    found
}

fn fuzz(out: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = out.to_str().unwrap();
    let mut args = vec![
        "fuzz",
        "checkout-concurrency",
        "--profile",
        "pg_rc",
        "--jobs",
        "2",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    shopsim(&args)
}

#[test]
fn a_campaign_keeps_replayable_corpus_entries_and_reports_every_window() {
    let out = temp_dir("corpus");
    let (code, stdout, err) = fuzz(&out, &["--seeds", "120"]);
    assert_eq!(code, 0, "{stdout}{err}");
    let report = json_of(&out.join("report.json"));
    let windows = report["windows"].as_array().unwrap();
    // Every declared window is listed, reached or not, and a reached one names its first hit.
    assert!(windows.len() >= 6, "{windows:?}");
    let reached: Vec<_> = windows
        .iter()
        .filter(|w| w["seeds"].as_u64() > Some(0))
        .collect();
    assert!(!reached.is_empty(), "{windows:?}");
    for w in &reached {
        assert!(!w["never_reached"].as_bool().unwrap(), "{w}");
        let first = &w["first_hit"];
        assert!(
            first["seed"].as_str().unwrap().parse::<u64>().is_ok(),
            "{w}"
        );
        assert_eq!(first["scenario"], "checkout-concurrency@pg_rc", "{w}");
        assert!(first["elapsed_s"].as_f64().unwrap() >= 0.0, "{w}");
    }
    assert!(
        windows.iter().any(|w| w["never_reached"] == true),
        "{windows:?}"
    );
    assert!(stdout.contains("never reached: sometimes!("), "{stdout}");
    // The first reach of each window is kept, and every entry replays with its hash.
    let kept = entries(&out);
    assert!(!kept.is_empty(), "{stdout}");
    assert_eq!(
        report["corpus"]["entries"].as_array().unwrap().len(),
        kept.len()
    );
    for entry in &kept {
        let a = json_of(entry);
        assert_eq!(a["format"], "shopsim-corpus-1");
        assert!(a.get("failure").is_none(), "{a}");
        assert!(!a["windows"].as_array().unwrap().is_empty(), "{a}");
        let (code, replayed, err) = shopsim(&["replay", entry.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {replayed}{err}", entry.display());
        let hash = a["trace_hash"].as_str().unwrap();
        assert!(replayed.contains(hash), "{hash}: {replayed}");
        // A corpus entry holds no failure to shrink.
        let (code, _, err) = shopsim(&["shrink", entry.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("corpus entry"), "{err}");
    }
    let mutated = report["corpus"]["mutated_seeds"].as_u64().unwrap();
    assert!(
        mutated > 0,
        "a quarter of the seeds mutate corpus draws: {report}"
    );
    let first_session = windows.clone();

    // --resume keeps the corpus and the window counts, and adds to them.
    let (code, stdout, err) = fuzz(&out, &["--seeds", "200", "--resume"]);
    assert_eq!(code, 0, "{stdout}{err}");
    let report = json_of(&out.join("report.json"));
    assert!(entries(&out).len() >= kept.len());
    assert!(report["corpus"]["mutated_seeds"].as_u64().unwrap() > mutated);
    for (before, after) in first_session
        .iter()
        .zip(report["windows"].as_array().unwrap())
    {
        assert_eq!(before["window"], after["window"]);
        assert!(
            after["seeds"].as_u64() >= before["seeds"].as_u64(),
            "{after}"
        );
        if before["seeds"].as_u64() > Some(0) {
            // The first hit stays the first.
            assert_eq!(before["first_hit"], after["first_hit"]);
        }
    }

    // A corrupt entry is refused by name on --resume; a new campaign starts a new corpus.
    let victim = entries(&out)[0].clone();
    std::fs::write(&victim, "{\"format\": \"shopsim-corpus-1\"}").unwrap();
    let (code, _, err) = fuzz(&out, &["--seeds", "220", "--resume"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(victim.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    let (code, stdout, err) = fuzz(&out, &["--seeds", "40", "--corpus-share", "0"]);
    assert_eq!(code, 0, "{stdout}{err}");
    let report = json_of(&out.join("report.json"));
    assert_eq!(report["corpus"]["mutated_seeds"], 0, "{report}");
    // The old campaign's corpus (with the corrupt entry) was removed with it.
    assert!(!victim.exists() || json_of(&victim)["trace_hash"].is_string());
}

#[test]
fn a_corpus_share_out_of_range_is_refused() {
    let out = temp_dir("corpus-share");
    for share in ["-0.1", "0.95", "NaN", "x"] {
        let flag = format!("--corpus-share={share}");
        let (code, _, err) = fuzz(&out, &["--seeds", "1", &flag]);
        assert_eq!(code, 2, "{share}: {err}");
        assert!(err.contains("--corpus-share"), "{share}: {err}");
    }
}
