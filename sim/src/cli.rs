//! The simulator's command line.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use deeb_sim::runner::mutants::Mutant;
use deeb_sim::runner::swarm::Scenario;
use deeb_sim::runner::{check_determinism, determinism_canary, run_seed, RunOptions, RunReport};

#[derive(Parser)]
#[command(name = "deeb-sim", about = "Deterministic simulation of a deeb cluster")]
struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run many seeds; print a replay line for each failure and a summary.
    Run {
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// mixed, partitions, crashes, membership (default: all, in turn)
        #[arg(long)]
        scenario: Option<String>,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Run each seed twice under madsim's determinism checker instead;
        /// any divergence between the two runs is a failure.
        #[arg(long)]
        check_determinism: bool,
        /// With this injected bug (to count the seeds that catch it).
        #[arg(long)]
        mutant: Option<String>,
    },
    /// Re-run one seed with logs; the history hash shows it replays exactly.
    Replay {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value = "mixed")]
        scenario: String,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long)]
        mutant: Option<String>,
    },
    /// Run each injected bug against a seed budget; print the first seed that caught it.
    Mutants {
        #[arg(long, default_value_t = 200)]
        budget: u64,
        /// Only these mutants (comma-separated names).
        #[arg(long)]
        only: Option<String>,
    },
    /// What CI runs: regression seeds, fresh seeds (from `DEEB_SIM_SEED_BASE`),
    /// a determinism check on a sample of them, and a mutation check.
    Ci {
        #[arg(long, default_value_t = 300)]
        seeds: u64,
    },
}

pub fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let ok = match arguments.command {
        Command::Run { seeds, first, scenario, nodes, check_determinism, mutant } => {
            match mutant.as_deref().map(|name| Mutant::parse(name).ok_or(name)).transpose() {
                Ok(mutant) => run_many(first, seeds, scenario.as_deref(), nodes, check_determinism, mutant),
                Err(name) => {
                    eprintln!("unknown mutant {name:?}");
                    false
                }
            }
        }
        Command::Replay { seed, scenario, nodes, mutant } => replay(seed, &scenario, nodes, mutant.as_deref()),
        Command::Mutants { budget, only } => mutants(budget, only.as_deref()),
        Command::Ci { seeds } => ci(seeds),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn options(seed: u64, scenario: Scenario, nodes: u64, mutant: Option<Mutant>) -> RunOptions {
    RunOptions { seed, scenario, nodes, mutant }
}

fn replay_line(options: &RunOptions) -> String {
    let mut line = format!(
        "{SIMULATOR_COMMAND} replay --seed {} --scenario {} --nodes {}",
        options.seed,
        options.scenario.name(),
        options.nodes
    );
    if let Some(mutant) = options.mutant {
        line.push_str(&format!(" --mutant {}", mutant.name()));
    }
    line
}

/// The command that re-runs one seed's determinism check.
fn determinism_line(options: &RunOptions) -> String {
    format!(
        "{SIMULATOR_COMMAND} run --check-determinism --first {} --seeds 1 --scenario {} --nodes {}",
        options.seed,
        options.scenario.name(),
        options.nodes
    )
}

fn run_many(
    first: u64,
    count: u64,
    scenario: Option<&str>,
    nodes: u64,
    check_determinism: bool,
    mutant: Option<Mutant>,
) -> bool {
    let scenarios: Vec<Scenario> = match scenario {
        Some(name) => match Scenario::parse(name) {
            Some(scenario) => vec![scenario],
            None => {
                eprintln!("unknown scenario {name:?}");
                return false;
            }
        },
        None => Scenario::ALL.to_vec(),
    };
    let runs: Vec<RunOptions> = (first..first + count)
        .map(|seed| options(seed, scenarios[(seed % scenarios.len() as u64) as usize], nodes, mutant))
        .collect();
    if check_determinism {
        determinism_batch(&runs)
    } else {
        run_batch(&runs)
    }
}

/// Seeds between progress lines of `run`.
const PROGRESS_EVERY: usize = 1000;

/// This process's resident memory and open file descriptors (Linux `/proc`;
/// "unknown" elsewhere).
fn process_footprint() -> String {
    let rss = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        status.lines().find(|line| line.starts_with("VmRSS:")).map(|line| line["VmRSS:".len()..].trim().to_owned())
    });
    let fds = std::fs::read_dir("/proc/self/fd").map(|entries| entries.count()).ok();
    format!(
        "rss {}, open descriptors {}",
        rss.unwrap_or_else(|| "unknown".into()),
        fds.map_or_else(|| "unknown".into(), |n| n.to_string())
    )
}

/// Runs seeds, prints a line per failure and a summary. True if all passed.
fn run_batch(runs: &[RunOptions]) -> bool {
    let start = Instant::now();
    let (mut failures, mut operations, mut sql_operations, mut faults, mut disk_crashes) = (0, 0, 0, 0, 0);
    let (mut sqlite_crash_points, mut sqlite_changes_undone) = (0, 0);
    let (mut determinate, mut unknown) = (0, 0);
    let (mut stale_reads, mut stale_reads_served) = (0, 0);
    for (done, options) in runs.iter().enumerate() {
        if done > 0 && done % PROGRESS_EVERY == 0 {
            // Long runs must stay flat: what the process holds so far.
            println!("after {done} seeds: {failures} failed, {}", process_footprint());
        }
        let report = run_seed(options);
        operations += report.operations;
        sql_operations += report.sql_operations;
        faults += report.faults;
        disk_crashes += report.disk_crashes;
        sqlite_crash_points += report.sqlite_crash_points;
        sqlite_changes_undone += report.sqlite_changes_undone;
        determinate += report.determinate;
        unknown += report.unknown;
        stale_reads += report.stale_reads;
        stale_reads_served += report.stale_reads_served;
        if report.failed() {
            failures += 1;
            print_failure(options, &report);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "simulated {} seeds in {seconds:.1}s ({:.1} seeds/min): {} failed, {faults} faults injected ({disk_crashes} crashes at a disk operation, {sqlite_crash_points} of them in SQLite files; {sqlite_changes_undone} unsynced SQLite changes undone), {operations} operations checked ({sql_operations} of them SQL)",
        runs.len(),
        runs.len() as f64 * 60.0 / seconds.max(0.001),
        failures
    );
    let share = |count: usize| count as f64 * 100.0 / (determinate + unknown).max(1) as f64;
    println!(
        "outcomes: {determinate} determinate ({:.1}%), {unknown} unknown ({:.1}%: timed out or broke in flight)",
        share(determinate),
        share(unknown)
    );
    println!(
        "bounded-stale reads: {stale_reads}, {stale_reads_served} served ({} refused, timed out or broke)",
        stale_reads - stale_reads_served
    );
    failures == 0
}

/// Runs each seed twice under madsim's determinism checker; prints every
/// seed it checks, a loud line per divergence, and a summary. True if no run
/// diverged and every second run passed the checks.
fn determinism_batch(runs: &[RunOptions]) -> bool {
    let start = Instant::now();
    let mut failures = 0;
    for options in runs {
        print!("determinism: seed {} ({}, {} nodes): ", options.seed, options.scenario.name(), options.nodes);
        match check_determinism(options).and_then(|report| agrees_across_processes(options, report)) {
            Ok(report) => {
                println!(
                    "both runs and a run in a fresh process agree, {} operations, history hash {:016x}",
                    report.operations, report.history_hash
                );
                if report.failed() {
                    failures += 1;
                    print_failure(options, &report);
                }
            }
            Err(divergence) => {
                failures += 1;
                println!("the runs differ\nFAIL NONDETERMINISTIC seed {}: {divergence}", options.seed);
                println!("  replay: {}", determinism_line(options));
            }
        }
    }
    println!("determinism: {} seeds run twice in {:.1}s: {failures} failed", runs.len(), start.elapsed().as_secs_f64());
    failures == 0
}

/// The same seed run again in a fresh process (this binary's `replay`) must
/// end with the same history: madsim seeds its own randomness, not the
/// process's (std's `HashMap` keys come from the OS here, see
/// sim/README), so a run that leans on something per process agrees with
/// itself within one process and not across two.
fn agrees_across_processes(options: &RunOptions, report: RunReport) -> Result<RunReport, String> {
    let fresh = hash_in_fresh_process(options, false)?;
    if fresh == report.history_hash {
        Ok(report)
    } else {
        Err(format!(
            "history hash {:016x} in this process, {fresh:016x} in a fresh one (replay it twice: {})",
            report.history_hash,
            replay_line(options)
        ))
    }
}

/// Set for `replay` by the cross-process canary: the printed history hash
/// then mixes in the process id, as a run leaning on process state would.
const PROCESS_NOISE_VARIABLE: &str = "DEEB_SIM_CANARY_PROCESS_NOISE";

/// Runs `replay` for one seed in a child process; its history hash.
fn hash_in_fresh_process(options: &RunOptions, noise: bool) -> Result<u64, String> {
    let program = std::env::current_exe().map_err(|error| format!("cannot find this binary: {error}"))?;
    let mut command = std::process::Command::new(program);
    command.args(["replay", "--seed", &options.seed.to_string(), "--scenario", options.scenario.name()]);
    command.args(["--nodes", &options.nodes.to_string()]).env("RUST_LOG", "off");
    if noise {
        command.env(PROCESS_NOISE_VARIABLE, "1");
    }
    let output = command.output().map_err(|error| format!("cannot run a replay: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.split_once("history hash ").map(|(_, hash)| hash.trim().to_owned()))
        .and_then(|hash| u64::from_str_radix(&hash, 16).ok())
        .ok_or_else(|| format!("the replay printed no history hash: {stdout}"))
}

/// The cross-process check must fail on a run that differs per process:
/// two replays of one seed with per-process noise must disagree.
fn process_canary_caught() -> bool {
    let canary = options(0, Scenario::for_seed(0), 3, None);
    match (hash_in_fresh_process(&canary, true), hash_in_fresh_process(&canary, true)) {
        (Ok(first), Ok(second)) if first != second => {
            println!("cross-process canary (a hash mixed with per-process noise): caught");
            true
        }
        (Ok(_), Ok(_)) => {
            println!("FAIL cross-process canary: two processes with per-process noise agreed");
            false
        }
        (Err(problem), _) | (_, Err(problem)) => {
            println!("FAIL cross-process canary: {problem}");
            false
        }
    }
}

/// The determinism check must fail on runs that differ (see
/// `determinism_canary`); madsim's panic for it is silenced.
fn determinism_canary_caught() -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let canary = determinism_canary();
    std::panic::set_hook(hook);
    match canary {
        Ok(()) => {
            println!("determinism canary (two runs 1 ms apart): caught");
            true
        }
        Err(problem) => {
            println!("FAIL determinism canary: {problem}");
            false
        }
    }
}

fn print_failure(options: &RunOptions, report: &RunReport) {
    println!("FAIL seed {} ({}): {}", options.seed, report.swarm, report.violations.join("; "));
    println!("  replay: {}", replay_line(options));
}

fn replay(seed: u64, scenario: &str, nodes: u64, mutant: Option<&str>) -> bool {
    let Some(scenario) = Scenario::parse(scenario) else {
        eprintln!("unknown scenario {scenario:?}");
        return false;
    };
    let mutant = match mutant.map(|name| Mutant::parse(name).ok_or(name)) {
        Some(Err(name)) => {
            eprintln!("unknown mutant {name:?}");
            return false;
        }
        Some(Ok(mutant)) => Some(mutant),
        None => None,
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,raft=info".to_owned());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    let options = options(seed, scenario, nodes, mutant);
    let report = run_seed(&options);
    let mut history_hash = report.history_hash;
    if std::env::var_os(PROCESS_NOISE_VARIABLE).is_some() {
        history_hash ^= u64::from(std::process::id());
    }
    println!(
        "seed {seed} ({}): {} operations, {} faults, history hash {history_hash:016x}",
        report.swarm, report.operations, report.faults
    );
    for violation in &report.violations {
        println!("  violation: {violation}");
    }
    if let Ok(path) = std::env::var("DEEB_SIM_DUMP") {
        let lines: Vec<String> = report.history.iter().map(|operation| operation.to_string()).collect();
        match std::fs::write(&path, lines.join("\n")) {
            Ok(()) => println!("history written to {path}"),
            Err(error) => eprintln!("could not write {path}: {error}"),
        }
    }
    !report.failed()
}

/// Per mutant, the first seed (within the budget) on which a check failed.
fn mutants(budget: u64, only: Option<&str>) -> bool {
    let selected: Vec<Mutant> = match only {
        Some(names) => names.split(',').filter_map(Mutant::parse).collect(),
        None => Mutant::ALL.to_vec(),
    };
    let mut all_caught = true;
    println!("| mutant | first catching seed | seeds run | what caught it |");
    println!("|---|---|---|---|");
    for mutant in selected {
        let (caught, tried) = first_catch(mutant, budget);
        match caught {
            Some((seed, scenario, report)) => println!(
                "| {} | {seed} ({}) | {tried} | {} |",
                mutant.name(),
                scenario.name(),
                caught_by(&report).chars().take(90).collect::<String>()
            ),
            None => {
                all_caught = false;
                println!("| {} | NOT CAUGHT | {tried} | |", mutant.name());
            }
        }
    }
    all_caught
}

/// The violation that names the bug best: a node's stop if there was one
/// (the liveness failures that follow it say less), else the first.
fn caught_by(report: &RunReport) -> &str {
    let stopped = report.violations.iter().find(|violation| violation.starts_with("node stopped"));
    stopped.or(report.violations.first()).map_or("", String::as_str)
}

fn first_catch(mutant: Mutant, budget: u64) -> (Option<(u64, Scenario, RunReport)>, u64) {
    for seed in 0..budget {
        let scenario = mutant.scenario(seed);
        let report = run_seed(&options(seed, scenario, mutant.nodes(), Some(mutant)));
        if report.failed() {
            return (Some((seed, scenario, report)), seed + 1);
        }
    }
    (None, budget)
}

/// Regression seeds first, then fresh ones, then the mutation check.
fn ci(seeds: u64) -> bool {
    let Some(base) = fresh_seed_base() else {
        return false;
    };
    let regressions = regression_runs();
    println!("== {} regression seeds (sim/regressions)", regressions.len());
    let mut ok = run_batch(&regressions);
    println!("== {seeds} seeds from {base} across scenarios, one in {FIVE_NODE_EVERY} with 5 nodes");
    let fresh: Vec<RunOptions> = (base..base + seeds).map(fresh_run).collect();
    ok &= run_batch(&fresh);
    let mut sample = determinism_sample(&fresh);
    sample.extend(regressions);
    println!(
        "== determinism check on {} seeds: a sample of those and the regression seeds (each run twice, and once more in a fresh process)",
        sample.len()
    );
    ok &= determinism_batch(&sample);
    ok &= determinism_canary_caught();
    ok &= process_canary_caught();
    println!("== mutation check");
    ok &= mutants(CI_MUTANT_BUDGET, None);
    ok
}

/// A fresh CI seed: its scenario by `Scenario::for_seed`; 5 nodes for one
/// seed in `FIVE_NODE_EVERY`, 3 for the rest.
fn fresh_run(seed: u64) -> RunOptions {
    // A match, not is_multiple_of: that needs Rust 1.87 and the workspace says 1.85.
    let nodes = match seed % FIVE_NODE_EVERY {
        0 => 5,
        _ => 3,
    };
    options(seed, Scenario::for_seed(seed), nodes, None)
}

/// Every `DETERMINISM_STEP`-th fresh run, or every (len / 3)-th when that is
/// smaller, so at least three (all of them when fewer). The step is prime to
/// the 4 scenarios and to `FIVE_NODE_EVERY`, so the sample moves through the
/// scenarios and both cluster sizes.
fn determinism_sample(fresh: &[RunOptions]) -> Vec<RunOptions> {
    let step = (fresh.len() / 3).clamp(1, DETERMINISM_STEP);
    fresh.iter().step_by(step).cloned().collect()
}

/// `sim/regressions`: `SEED SCENARIO NODES  # what it found`.
fn regression_runs() -> Vec<RunOptions> {
    let text = include_str!("../regressions");
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let seed = fields.next()?.parse().ok()?;
            let scenario = Scenario::parse(fields.next()?)?;
            let nodes = fields.next().map_or(Some(3), |n| n.parse().ok())?;
            Some(options(seed, scenario, nodes, None))
        })
        .collect()
}

/// Where CI's seed range starts: `DEEB_SIM_SEED_BASE`, which `.ci/test`
/// derives from the commit so each commit explores new seeds (0 when unset).
/// Every FAIL line names its seed, so it replays whatever the base. Any
/// failure found that way goes into sim/regressions. None (after saying
/// why) if the variable is set but not a number.
fn fresh_seed_base() -> Option<u64> {
    let Ok(text) = std::env::var("DEEB_SIM_SEED_BASE") else {
        return Some(0);
    };
    let parsed = text.trim().parse().ok();
    if parsed.is_none() {
        eprintln!("DEEB_SIM_SEED_BASE={text:?} is not a decimal u64");
    }
    parsed
}

/// CI requires every mutant to be caught within this many seeds.
const CI_MUTANT_BUDGET: u64 = 200;
/// One CI fresh seed in this many runs a 5-node cluster.
const FIVE_NODE_EVERY: u64 = 5;
/// How far apart (in fresh seeds) the determinism check samples.
const DETERMINISM_STEP: usize = 51;
const SIMULATOR_COMMAND: &str =
    "RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target-sim cargo run --release -p deeb-sim --";
