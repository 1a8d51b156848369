//! `runs`: a project's runs from its run record, and what differs between two of them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::Value;

use super::Failure;
use crate::project::{ProjectMetadata, RunRecord};
use crate::tracking::mlflow::flatten_config;

/// The options of `runs`.
#[derive(Debug, Clone, Args)]
pub(super) struct RunsArgs {
    /// The project directory.
    project_dir: PathBuf,
    #[command(subcommand)]
    command: Option<RunsCommand>,
}

#[derive(Debug, Clone, Subcommand)]
enum RunsCommand {
    /// What differs between runs A and B (numbers from the list): config values, versions and
    /// the build, and the final values.
    Diff {
        /// The first run's number.
        a: usize,
        /// The second run's number.
        b: usize,
    },
}

/// Lists the runs, or diffs two.
pub(super) fn run_runs(
    args: RunsArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, Failure> {
    let meta = ProjectMetadata::read(&args.project_dir)?;
    if meta.runs.is_empty() {
        writeln!(err, "{} has no runs yet", args.project_dir.display())?;
        return Ok(1);
    }
    match args.command {
        None => {
            writeln!(
                out,
                "{:>3}  {:<5}  {:<20}  {:<9}  {:<22}  values",
                "#", "type", "started", "status", "folder"
            )?;
            for (i, r) in meta.runs.iter().enumerate() {
                writeln!(
                    out,
                    "{:>3}  {:<5}  {:<20}  {:<9}  {:<22}  {}",
                    i + 1,
                    r.run_type,
                    r.start,
                    r.status,
                    r.run_dir,
                    main_values(&r.metrics)
                )?;
            }
            Ok(0)
        }
        Some(RunsCommand::Diff { a, b }) => {
            let get = |n: usize| {
                n.checked_sub(1)
                    .and_then(|i| meta.runs.get(i))
                    .ok_or_else(|| {
                        format!(
                            "there is no run {n}; `runs {}` lists runs 1 to {}",
                            args.project_dir.display(),
                            meta.runs.len()
                        )
                    })
            };
            let (ra, rb) = match (get(a), get(b)) {
                (Ok(ra), Ok(rb)) => (ra, rb),
                (Err(e), _) | (_, Err(e)) => {
                    writeln!(err, "{e}")?;
                    return Ok(1);
                }
            };
            write!(out, "{}", diff(&args.project_dir, (a, ra), (b, rb)))?;
            Ok(0)
        }
    }
}

/// Up to four final values, `loss` first, vectors' elements left out.
fn main_values(metrics: &BTreeMap<String, f64>) -> String {
    let mut keys: Vec<&String> = metrics
        .keys()
        .filter(|k| !crate::kpi::is_element(k))
        .collect();
    keys.sort_by_key(|k| (k.as_str() != "loss", k.as_str()));
    keys.iter()
        .take(4)
        .map(|k| format!("{k} {:.4}", metrics[*k]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn config_of(project: &Path, r: &RunRecord) -> BTreeMap<String, String> {
    r.config_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(project.join(f)).ok())
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|v| flatten_config(&v))
        .unwrap_or_default()
}

/// The differences between two runs, section by section.
fn diff(project: &Path, (a, ra): (usize, &RunRecord), (b, rb): (usize, &RunRecord)) -> String {
    let mut out = format!(
        "run {a}: {} {} ({})\nrun {b}: {} {} ({})\n",
        ra.run_type, ra.run_dir, ra.start, rb.run_type, rb.run_dir, rb.start
    );
    let section = |out: &mut String,
                   title: &str,
                   x: &BTreeMap<String, String>,
                   y: &BTreeMap<String, String>| {
        let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
        let lines: Vec<String> = keys
            .into_iter()
            .filter(|k| x.get(*k) != y.get(*k))
            .map(|k| {
                let show = |v: Option<&String>| v.map_or("(none)".to_owned(), Clone::clone);
                format!("  {k}: {} → {}\n", show(x.get(k)), show(y.get(k)))
            })
            .collect();
        if lines.is_empty() {
            out.push_str(&format!("{title}: the same\n"));
        } else {
            out.push_str(&format!("{title}:\n"));
            out.extend(lines);
        }
    };
    section(
        &mut out,
        "config",
        &config_of(project, ra),
        &config_of(project, rb),
    );
    let build = |r: &RunRecord| -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put("nc7", Some(r.nc7_version.clone()));
        put("rustc", r.rustc_version.clone());
        put("burn", r.burn_version.clone());
        put("Cargo.lock", r.cargo_lock_hash.clone());
        put("features", Some(r.features.join(",")));
        put("git commit", r.git_commit.clone());
        put("git dirty", r.git_dirty.map(|d| d.to_string()));
        put("device", r.device.clone());
        put("threads", r.threads.map(|n| n.to_string()));
        put("seed", r.seed.map(|s| s.to_string()));
        put("host", Some(r.host.clone()));
        m
    };
    section(&mut out, "build and machine", &build(ra), &build(rb));
    let values = |r: &RunRecord| -> BTreeMap<String, String> {
        r.metrics
            .iter()
            .map(|(k, v)| (k.clone(), format!("{v:.6}")))
            .collect()
    };
    section(&mut out, "values", &values(ra), &values(rb));
    out
}
