//! The simulator's command line.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use deeb_sim::runner::mutants::Mutant;
use deeb_sim::runner::swarm::Scenario;
use deeb_sim::runner::{run_seed, RunOptions, RunReport};

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
    /// What CI runs: regression seeds, fresh seeds, and a mutation check.
    Ci {
        #[arg(long, default_value_t = 300)]
        seeds: u64,
    },
}

pub fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let ok = match arguments.command {
        Command::Run { seeds, first, scenario, nodes } => run_many(first, seeds, scenario.as_deref(), nodes),
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
        "RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target-sim cargo run --release -p deeb-sim -- replay --seed {} --scenario {} --nodes {}",
        options.seed,
        options.scenario.name(),
        options.nodes
    );
    if let Some(mutant) = options.mutant {
        line.push_str(&format!(" --mutant {}", mutant.name()));
    }
    line
}

fn run_many(first: u64, count: u64, scenario: Option<&str>, nodes: u64) -> bool {
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
        .map(|seed| options(seed, scenarios[(seed % scenarios.len() as u64) as usize], nodes, None))
        .collect();
    run_batch(&runs)
}

/// Runs seeds, prints a line per failure and a summary. True if all passed.
fn run_batch(runs: &[RunOptions]) -> bool {
    let start = Instant::now();
    let (mut failures, mut operations, mut faults) = (0, 0, 0);
    for options in runs {
        let report = run_seed(options);
        operations += report.operations;
        faults += report.faults;
        if report.failed() {
            failures += 1;
            print_failure(options, &report);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "simulated {} seeds in {seconds:.1}s ({:.1} seeds/min): {} failed, {faults} faults injected, {operations} operations checked",
        runs.len(),
        runs.len() as f64 * 60.0 / seconds.max(0.001),
        failures
    );
    failures == 0
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
    println!(
        "seed {seed} ({}): {} operations, {} faults, history hash {:016x}",
        report.swarm, report.operations, report.faults, report.history_hash
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
                report.violations.first().map(|v| v.chars().take(90).collect::<String>()).unwrap_or_default()
            ),
            None => {
                all_caught = false;
                println!("| {} | NOT CAUGHT | {tried} | |", mutant.name());
            }
        }
    }
    all_caught
}

fn first_catch(mutant: Mutant, budget: u64) -> (Option<(u64, Scenario, RunReport)>, u64) {
    for seed in 0..budget {
        let scenario = Scenario::for_seed(seed);
        let report = run_seed(&options(seed, scenario, 3, Some(mutant)));
        if report.failed() {
            return (Some((seed, scenario, report)), seed + 1);
        }
    }
    (None, budget)
}

/// Regression seeds first, then fresh ones, then the mutation check.
fn ci(seeds: u64) -> bool {
    let regressions = regression_runs();
    println!("== {} regression seeds (sim/regressions)", regressions.len());
    let mut ok = run_batch(&regressions);
    let base = fresh_seed_base();
    println!("== {seeds} seeds from {base} across scenarios");
    let fresh: Vec<RunOptions> =
        (base..base + seeds).map(|seed| options(seed, Scenario::for_seed(seed), 3, None)).collect();
    ok &= run_batch(&fresh);
    println!("== mutation check");
    ok &= mutants(CI_MUTANT_BUDGET, Some(CI_MUTANTS));
    ok
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

/// Where CI's seed range starts: 0 by default, so a CI verdict is
/// reproducible; set `DEEB_SIM_SEED_BASE` (e.g. to a commit hash prefix) to
/// explore new ground. Any failure found that way goes into sim/regressions.
fn fresh_seed_base() -> u64 {
    std::env::var("DEEB_SIM_SEED_BASE").ok().and_then(|text| text.parse().ok()).unwrap_or(0)
}

/// The mutants CI requires to be caught (the canary and three more; see
/// sim/README.md for the ones the simulator does not catch yet).
const CI_MUTANTS: &str = "canary,read-without-read-index,ack-before-fsync,replicate-statements";
const CI_MUTANT_BUDGET: u64 = 200;
