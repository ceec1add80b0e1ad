//! A campaign's reports: `--out/report.json` for people and scripts, `--out/junit.xml` for
//! CI. Both are built from the state (counts and groups), so they stay small whatever the
//! campaign's length: groups with counts and exemplar artifacts, never every failing seed.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::campaign::Campaign;
use super::groups::{kind_name, Exemplar, Group};
use super::state::State;
use crate::reproduce::{replay_artifact_command, SeedRun};

/// The report's format.
pub const REPORT_FORMAT: &str = "shopsim-fuzz-report-1";
/// The most groups one JUnit failure body describes (the rest are counted).
const JUNIT_GROUPS_PER_CASE_MAX: usize = 20;

/// An exemplar as the report shows it, with the commands that replay it.
fn exemplar_json(campaign: &Campaign, group: &Group, e: &Exemplar) -> Value {
    // A mutated seed's draws do not follow from the seed: only its artifact replays it.
    let selected = campaign.run_named(&group.system).filter(|_| !e.mutated);
    let replay = selected.map(|s| {
        SeedRun {
            source: &s.source,
            profile: s.profile.name(),
            seed: e.seed,
            bugs: &campaign.bugs,
            draw: campaign.draw,
        }
        .replay_command()
    });
    let artifact = e.artifact.as_ref().map(|a| campaign.out.join(a));
    json!({
        "seed": e.seed.to_string(),
        "ops": e.ops,
        "virtual_ms": e.virtual_us as f64 / 1000.0,
        "artifact": artifact.as_ref().map(|p| p.display().to_string()),
        "replay": replay,
        "replay_artifact": artifact.as_ref().map(|p| replay_artifact_command(p)),
    })
}

/// `report.json`.
pub fn report_json(campaign: &Campaign, state: &State, exit_code: u8, stopped: bool) -> Value {
    let elapsed_s = state.elapsed_ms as f64 / 1000.0;
    let scenarios: Vec<Value> = state
        .runs
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "seeds": r.seeds,
                "failing_seeds": r.failing_seeds,
                "groups": state.groups.iter().filter(|g| g.system == r.name).count(),
                "wall_s": r.wall_ms as f64 / 1000.0,
                "checks": r.checks,
            })
        })
        .collect();
    let groups: Vec<Value> = state
        .groups
        .iter()
        .map(|g| {
            json!({
                "id": g.id,
                "scenario": g.system,
                "check": g.check,
                "kind": kind_name(g.kind),
                "shape": g.shape,
                "count": g.count,
                "witness": g.witness,
                "first": exemplar_json(campaign, g, &g.first),
                "smallest": exemplar_json(campaign, g, &g.smallest),
                "artifacts": g.artifacts().iter().map(|a| campaign.out.join(a).display().to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "format": REPORT_FORMAT,
        "version": crate::artifact::VERSION,
        "commit": crate::artifact::BUILD_COMMIT,
        "campaign": state.identity,
        "out": campaign.out.display().to_string(),
        "sessions": state.sessions,
        "seeds_run": state.seeds_run,
        "elapsed_s": elapsed_s,
        "seeds_per_s": if elapsed_s > 0.0 { state.seeds_run as f64 / elapsed_s } else { 0.0 },
        "limits": {
            "duration_s": campaign.duration.map(|d| d.as_secs()),
            "seeds": campaign.seeds_target,
        },
        "stopped": stopped,
        "exit_code": exit_code,
        "failing_seeds": state.failing_seeds(),
        "nondeterministic": state.nondeterministic,
        "io": state.io,
        "scenarios": scenarios,
        "groups": groups,
        "windows": state.windows.iter().map(|w| json!({
            "window": w.window,
            "hits": w.hits,
            "seeds": w.seeds,
            "never_reached": w.first.is_none(),
            "first_hit": w.first.as_ref().map(|f| json!({
                "seed": f.seed.to_string(),
                "scenario": f.run,
                "elapsed_s": f.elapsed_ms as f64 / 1000.0,
                "mutated_draws": f.mutated,
            })),
            "runs": w.runs,
        })).collect::<Vec<_>>(),
    })
}

/// The window report, one line per declared window: times reached, seeds, and the time
/// and seed of its first hit, or that it was never reached.
pub fn window_lines(state: &State) -> Vec<String> {
    state
        .windows
        .iter()
        .map(|w| match &w.first {
            Some(f) => format!(
                "{:>9} hits {:>8} seeds  first at {:>9.1} s seed={} {}{}  {}",
                w.hits,
                w.seeds,
                f.elapsed_ms as f64 / 1000.0,
                f.seed,
                f.run,
                if f.mutated { " (corpus)" } else { "" },
                w.window
            ),
            None => format!("never reached: sometimes!(\"{}\")", w.window),
        })
        .collect()
}

/// Text for XML: `&<>"'` escaped, and characters XML 1.0 cannot hold replaced by `?`.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// `junit.xml`: one testsuite per `scenario@profile`, one testcase per check (passing ones
/// included, `panic` and `time_limit` too), each with `classname` and `time`. A check that
/// judged no seed (unknown on all) is `skipped`; a failing one holds, per group, the count,
/// the witness, the replay commands and the artifact paths.
pub fn junit_xml(campaign: &Campaign, state: &State) -> String {
    let mut suites = String::new();
    let (mut tests_total, mut failures_total, mut skipped_total) = (0usize, 0usize, 0usize);
    for run in &state.runs {
        let names = campaign.check_names(&run.name, state);
        let time_each = if names.is_empty() {
            0.0
        } else {
            run.wall_ms as f64 / 1000.0 / names.len() as f64
        };
        let mut cases = String::new();
        let (mut failures, mut skipped) = (0usize, 0usize);
        for check in &names {
            let counts = run.checks.iter().find(|c| &c.check == check);
            let groups: Vec<&Group> = state
                .groups
                .iter()
                .filter(|g| g.system == run.name && &g.check == check)
                .collect();
            let _ = write!(
                cases,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{time_each:.3}\"",
                xml_escape(check),
                xml_escape(&run.name)
            );
            let invalid = counts.map_or(0, |c| c.invalid);
            let valid = counts.map_or(0, |c| c.valid);
            if !groups.is_empty() || invalid > 0 {
                failures += 1;
                let seeds: u64 = groups.iter().map(|g| g.count).sum();
                let _ = write!(
                    cases,
                    ">\n      <failure message=\"{}\" type=\"{}\">",
                    xml_escape(&format!(
                        "{check} failed on {seeds} of {} seeds ({} failure groups)",
                        run.seeds,
                        groups.len()
                    )),
                    groups.first().map_or("violation", |g| kind_name(g.kind))
                );
                cases.push_str(&xml_escape(&failure_body(campaign, &groups)));
                cases.push_str("</failure>\n    </testcase>\n");
            } else if valid == 0 && run.seeds > 0 {
                skipped += 1;
                let _ = writeln!(
                    cases,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    xml_escape(&format!(
                        "{check} had nothing to judge in any of {} seeds (unknown)",
                        run.seeds
                    ))
                );
            } else {
                cases.push_str("/>\n");
            }
        }
        tests_total += names.len();
        failures_total += failures;
        skipped_total += skipped;
        let _ = write!(
            suites,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">\n    <properties>\n      <property name=\"seeds\" value=\"{}\"/>\n      <property name=\"failing_seeds\" value=\"{}\"/>\n    </properties>\n{cases}  </testsuite>\n",
            xml_escape(&run.name),
            names.len(),
            run.wall_ms as f64 / 1000.0,
            run.seeds,
            run.failing_seeds,
        );
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"shopsim fuzz {} ({})\" tests=\"{tests_total}\" failures=\"{failures_total}\" errors=\"0\" skipped=\"{skipped_total}\" time=\"{:.3}\">\n{suites}</testsuites>\n",
        xml_escape(crate::artifact::VERSION),
        xml_escape(crate::artifact::BUILD_COMMIT),
        state.elapsed_ms as f64 / 1000.0
    )
}

/// The text of a JUnit failure: per group its count, witness, replay commands, artifacts.
fn failure_body(campaign: &Campaign, groups: &[&Group]) -> String {
    let mut body = String::from("\n");
    for g in groups.iter().take(JUNIT_GROUPS_PER_CASE_MAX) {
        let first = exemplar_json(campaign, g, &g.first);
        let smallest = exemplar_json(campaign, g, &g.smallest);
        let _ = writeln!(body, "group {}: {} failing seeds", g.id, g.count);
        let _ = writeln!(body, "witness (seed {}): {}", g.first.seed, g.witness);
        for (what, e) in [("first", &first), ("smallest", &smallest)] {
            if let Some(cmd) = e["replay_artifact"].as_str() {
                let _ = writeln!(body, "replay {what}: {cmd}");
            }
            if let Some(cmd) = e["replay"].as_str() {
                let _ = writeln!(body, "replay {what} by seed: {cmd}");
            }
        }
        for a in g.artifacts() {
            let _ = writeln!(body, "artifact: {}", campaign.out.join(a).display());
        }
        body.push('\n');
    }
    if groups.len() > JUNIT_GROUPS_PER_CASE_MAX {
        let _ = writeln!(
            body,
            "and {} more groups (report.json lists them all)",
            groups.len() - JUNIT_GROUPS_PER_CASE_MAX
        );
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(
            xml_escape("a<b & \"c\" 'd'\u{1}\n"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;?\n"
        );
    }
}
