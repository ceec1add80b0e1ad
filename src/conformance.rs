//! `shopsim conformance FILE [--profile P ...]`.

use std::path::PathBuf;

use shopsim_sim::db::conformance::{check_file, ScriptFile};
use shopsim_sim::db::Profile;

use crate::{EXIT_BAD_INPUT, EXIT_OK, EXIT_VIOLATION};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A script file in the format of sim/conformance/hermitage.toml.
    file: PathBuf,
    /// Only these profiles (repeatable): pg_rc, pg_rr, pg_ser, maria_ru, maria_rc, maria_rr,
    /// maria_ser, maria_rr_si. Default: every profile a script has a measurement for.
    #[arg(long = "profile", value_name = "P")]
    profiles: Vec<String>,
}

/// Checks the profiles and the script file without running anything.
pub fn check_args(args: &Args) -> Result<(ScriptFile, Vec<Profile>), String> {
    let mut profiles = Vec::new();
    for name in &args.profiles {
        profiles.push(
            name.parse::<Profile>()
                .map_err(|e| format!("--profile: {e}"))?,
        );
    }
    if profiles.is_empty() {
        profiles = Profile::ALL.to_vec();
    }
    let text = crate::input::read_text(&args.file, crate::input::CONFORMANCE_BYTES_MAX)
        .map_err(|e| format!("FILE {e}"))?;
    let file = ScriptFile::parse(&text).map_err(|e| format!("{}: {e}", args.file.display()))?;
    Ok((file, profiles))
}

pub fn run(args: Args) -> u8 {
    let (file, profiles) = match check_args(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let explicit = !args.profiles.is_empty();
    let reports = check_file(&file, &profiles);
    if reports.is_empty() {
        // Nothing measured to compare with: that is no pass.
        let asked = if explicit {
            format!(" for --profile {}", args.profiles.join(", "))
        } else {
            String::new()
        };
        eprintln!(
            "error: {}: nothing to judge: no script has a measured outcome{asked}              (`shopsim crosscheck FILE --measure OUT` measures them on the real engines)",
            args.file.display()
        );
        return EXIT_BAD_INPUT;
    }
    if explicit {
        let unjudged: Vec<String> = file
            .scripts
            .iter()
            .flat_map(|script| {
                profiles
                    .iter()
                    .filter(|p| !script.outcomes.contains_key(p))
                    .map(|p| format!("{} {p}", script.name))
            })
            .collect();
        if !unjudged.is_empty() {
            println!("not judged (no measured outcome): {}", unjudged.join(", "));
        }
    }
    let failed = reports.iter().filter(|r| r.mismatch.is_some()).count();
    for report in &reports {
        println!("{report}");
    }
    println!("{} passed, {failed} failed", reports.len() - failed);
    if failed > 0 {
        EXIT_VIOLATION
    } else {
        EXIT_OK
    }
}
