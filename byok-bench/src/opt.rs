//! The command line.

use clap::Parser;

/// Every backend, in the order of the table.
pub(crate) const BACKENDS: [&str; 6] = [
    "memory",
    "sqlite",
    "postgres",
    "mysql",
    "redis",
    "redis-cluster",
];

/// Every kind of row.
pub(crate) const ROWS: [&str; 11] = [
    "crypto", "retrieve", "get_key", "store", "set_key", "list", "clear", "purge", "rotate",
    "bytes", "web",
];

/// Measures byok against the code a user would write by hand, interleaved
/// in one run, and prints one table.
///
/// Servers come from the test variables: BYOK_TEST_POSTGRES_URL,
/// BYOK_TEST_MYSQL_URL, BYOK_TEST_REDIS_URL (defaults on 127.0.0.1) and
/// BYOK_TEST_REDIS_CLUSTER_URLS (no default; scripts/redis-cluster.sh sets
/// it). Every run works in its own random tables and key prefixes and
/// removes them at the end.
#[derive(Debug, Parser)]
#[command(name = "byok-bench")]
pub(crate) struct Opt {
    /// Small sizes and few rounds: the whole table in a minute or two.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Backends to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = BACKENDS.map(String::from))]
    pub(crate) backends: Vec<String>,
    /// Kinds of rows to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ROWS.map(String::from))]
    pub(crate) rows: Vec<String>,
    /// Other users' keys in the store for the scaling rows (default
    /// 1,000,000; 2,000 with --quick). A tenth of them expire.
    #[arg(long)]
    pub(crate) others: Option<usize>,
    /// Keys of the rotation row (default 10,000; 200 with --quick).
    #[arg(long)]
    pub(crate) rotate_keys: Option<usize>,
    /// Rounds of each comparison (default 9; 3 with --quick).
    #[arg(long)]
    pub(crate) rounds: Option<usize>,
    /// Measures the memory of one map in this process and prints it:
    /// `byok|hand:KEYS_PER_USER:KEYS`. Used by the `bytes` rows, which run
    /// each map in a process of its own.
    #[arg(long, hide = true)]
    pub(crate) footprint: Option<String>,
}

/// The sizes a run uses.
#[derive(Debug, Clone)]
pub(crate) struct Sizes {
    pub(crate) rounds: usize,
    /// Operations per round of in-process rows.
    pub(crate) in_process_ops: usize,
    /// Operations per round of server rows at one task (four times as many
    /// at 64 tasks).
    pub(crate) server_ops: usize,
    pub(crate) others: usize,
    pub(crate) rotate_keys: usize,
    /// Users of the hot-path rows.
    pub(crate) users: usize,
    /// Keys of the `bytes` rows.
    pub(crate) footprint_keys: usize,
    /// Prefix of every user id of this run.
    pub(crate) namespace: String,
    pub(crate) rows: Vec<String>,
}

impl Sizes {
    pub(crate) fn of(opt: &Opt) -> Self {
        let quick = opt.quick;
        Sizes {
            rounds: opt.rounds.unwrap_or(if quick { 3 } else { 9 }).max(1),
            in_process_ops: if quick { 16_384 } else { 131_072 },
            server_ops: if quick { 128 } else { 2_048 },
            others: opt.others.unwrap_or(if quick { 2_000 } else { 1_000_000 }),
            rotate_keys: opt.rotate_keys.unwrap_or(if quick { 200 } else { 10_000 }),
            users: if quick { 200 } else { 10_000 },
            footprint_keys: if quick { 100_000 } else { 1_000_000 },
            namespace: format!("bench-{:08x}-", rand::random::<u32>()),
            rows: opt.rows.clone(),
        }
    }

    /// Whether the run loads the other users' keys (for the scaling rows).
    pub(crate) fn loads_others(&self) -> bool {
        self.wants("list") || self.wants("clear") || self.wants("purge")
    }

    /// Whether the run includes rows of `kind`.
    pub(crate) fn wants(&self, kind: &str) -> bool {
        self.rows.iter().any(|r| r == kind)
    }
}
