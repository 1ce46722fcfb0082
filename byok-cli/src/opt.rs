//! The whole command-line surface, as clap derive types.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::secrets::redact;

pub use crate::key_test::TestOpts;

const EXAMPLES: &str = "\
Examples:
  byok demo                                   # a tour on a temporary store
  byok keygen --out keyring.txt               # a first master key, mode 0600
  byok --keyring keyring.txt migrate          # create the schema of ./byok.db
  echo \"$OPENAI_KEY\" | byok --keyring keyring.txt set openai --user alice
  byok --keyring keyring.txt list
  byok keygen --add-to keyring.txt            # a new master key, decrypt-only
  byok --keyring keyring.txt keyring promote 2 # once every instance has it
  byok --keyring keyring.txt rotate            # once every instance has it primary
  byok --keyring keyring.txt keyring remove 1  # once no key is under it
  byok --store postgres://app@db/keys check
  byok --keyring keyring.txt test openai --user alice   # ask OpenAI

Exit codes:
  0  success
  1  the command ran and found a problem: keys that do not decrypt (verify),
     failed cases (check), a copy that does not match, an incomplete rotation
  2  bad input: a malformed URL or argument, an empty key on standard input,
     an --out file that already exists
  3  configuration: no keyring, or a keyring that cannot be read
  4  the store failed or cannot be reached
  5  a key did not decrypt: wrong master key, or tampered data
  6  the key asked for does not exist
  byok test, by what the provider said (with --all, the lowest code):
  10 invalid key   11 no credit or quota   12 rate-limited
  13 region blocked   14 forbidden   15 provider unreachable   16 unknown
  130  interrupted (Ctrl-C)

With --json, an error is one JSON object on standard error, with the same
exit code.";

/// Run and operate a byok key store: users' API keys, encrypted at rest.
///
/// The store is named by a URL (--store or BYOK_STORE): sqlite://FILE,
/// postgres://…, mysql://…, redis://…, redis+cluster://h1:p1,h2:p2, memory:.
/// The master keys come from a keyring: --keyring FILE, or the keyring text
/// itself in BYOK_KEYRING (`ID:KEY` entries, `*` marks the primary key).
#[derive(Debug, Parser)]
#[command(name = "byok", version, after_help = EXAMPLES)]
pub struct Opt {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalOpts,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log what the library does on standard error: -v, -vv, -vvv
    /// (RUST_LOG, when set, chooses instead).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The store.
    #[command(flatten)]
    pub store: StoreOpts,
    /// The master keys.
    #[command(flatten)]
    pub keyring: KeyringOpts,
}

/// Where the keys are. Its `Debug` shows the URL without its password.
#[derive(Clone, Args)]
pub struct StoreOpts {
    /// The store's URL. A password in it is never printed; keep it out of
    /// the command line with BYOK_STORE, or for PostgreSQL with PGPASSWORD
    /// or ~/.pgpass and a URL without one.
    #[arg(
        long = "store",
        global = true,
        env = "BYOK_STORE",
        default_value = "sqlite://./byok.db",
        hide_env_values = true
    )]
    pub url: String,
    /// The table of a SQL store.
    #[arg(
        long,
        global = true,
        env = "BYOK_TABLE",
        default_value = "user_api_keys"
    )]
    pub table: String,
    /// The key prefix of a Redis store.
    #[arg(long, global = true, env = "BYOK_PREFIX", default_value = "byok_")]
    pub prefix: String,
}

/// Where the master keys are.
#[derive(Debug, Clone, Args)]
pub struct KeyringOpts {
    /// A keyring file; without it, the keyring text is read from the
    /// BYOK_KEYRING environment variable.
    #[arg(long, global = true, env = "BYOK_KEYRING_FILE", value_name = "FILE")]
    pub keyring: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a new master key: prints `ID:KEY`, or writes or adds it to a file.
    Keygen(KeygenOpts),
    /// The stages of a rotation on the keyring file of --keyring: show its
    /// ids, promote a key, remove an old one.
    #[command(subcommand)]
    Keyring(KeyringCommand),
    /// Create or upgrade the store's schema (other commands never do,
    /// except `set` and the targets of `copy` and `import-python`).
    Migrate(MigrateOpts),
    /// Store a user's key, read from standard input (never an argument).
    Set(SetOpts),
    /// Show a user's key: its masked hint, or the key with --reveal.
    Get(GetOpts),
    /// List keys (masked): one user's, or every user's, page by page.
    List(ListOpts),
    /// Remove a user's key for a provider.
    Rm {
        /// The provider, such as `openai`.
        provider: String,
        /// The user id.
        #[arg(long)]
        user: String,
    },
    /// Remove every key of a user (asks first on a terminal; elsewhere
    /// it needs --yes).
    Clear {
        /// The user id.
        #[arg(long)]
        user: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// Delete expired keys and print how many; fit for cron.
    Purge {
        /// Count the expired keys and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Count keys per master-key id and per provider, decrypting nothing.
    Stats,
    /// Decrypt every key (printing nothing secret); fail if any does not.
    Verify,
    /// Re-encrypt every key under the primary master key; resumable.
    Rotate(RotateOpts),
    /// Copy every key to another store, ciphertexts as they are; never
    /// replaces a different target key unless told to. With a keyring
    /// (--keyring or BYOK_KEYRING), first checks that every key decrypts.
    Copy(CopyOpts),
    /// Move keys from the Python library cjm-fasthtml-byok into this store:
    /// decrypts its Fernet tokens, re-encrypts them under the keyring's
    /// primary key, and reports every row; the source is only read.
    ImportPython(ImportPythonOpts),
    /// Run the conformance suite against a live store, in a scratch
    /// namespace that is removed afterwards.
    Check(ScratchOpts),
    /// Measure set/get/list throughput and latency against a live store.
    Bench(BenchOpts),
    /// Ask the provider whether a stored key works, and why not: invalid,
    /// out of credit, rate-limited, region-blocked, … (free calls only,
    /// unless --model); the exit code says which.
    Test(TestOpts),
    /// A tour on a temporary SQLite store with a fresh keyring.
    Demo,
    /// Print a completion script for a shell, e.g.
    /// `byok completions bash > /etc/bash_completion.d/byok`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `byok keygen`.
#[derive(Debug, Args)]
pub struct KeygenOpts {
    /// The key id (default: 1, or one more than the largest id of --add-to).
    #[arg(long)]
    pub id: Option<u32>,
    /// Write the entry to this new file (mode 0600); never overwrites.
    #[arg(long, conflicts_with = "add_to")]
    pub out: Option<PathBuf>,
    /// Add the entry to this keyring file (created if missing), decrypt-only:
    /// the primary key stays what it was (promote it later with `byok
    /// keyring promote ID`). A symbolic link is followed; the file is
    /// replaced atomically, keeping its mode and owner.
    #[arg(long)]
    pub add_to: Option<PathBuf>,
    /// With --add-to: make the new key primary at once. Only safe when no
    /// running instance lacks it: one that does cannot read keys written
    /// under it.
    #[arg(long, requires = "add_to")]
    pub primary: bool,
    /// Have a key management service make the key, and write only the key
    /// it wraps (`ID:kms:aws:ARN:BLOB`): `aws:KEY` for AWS KMS, where KEY
    /// is a key id, an alias (`alias/byok`) or an ARN. Credentials and
    /// region come from the AWS SDK's usual places.
    #[arg(long, value_name = "KMS:KEY")]
    pub kms: Option<String>,
}

/// `byok keyring`.
#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// The key ids, which one is primary, and which KMS key wraps each
    /// (nothing secret).
    Show,
    /// Wrap every entry anew under another KMS key (`aws:KEY`): entries
    /// wrapped already are re-encrypted inside KMS, entries in the clear
    /// are wrapped. The master keys stay the same, so no stored key
    /// changes. Each result is checked to unwrap to the same key before the
    /// file is rewritten.
    Rewrap {
        /// The KMS key to wrap under, as `aws:KEY`.
        #[arg(long, value_name = "KMS:KEY")]
        kms: String,
    },
    /// Make a key primary: new keys are written under it from then on.
    Promote {
        /// The master key id.
        id: u32,
    },
    /// Remove a key that is not primary; refused while a stored key is
    /// under it.
    Remove {
        /// The master key id.
        id: u32,
        /// Remove it without looking at the store: keys still under it
        /// will no longer decrypt.
        #[arg(long)]
        force: bool,
    },
}

/// `byok migrate`.
#[derive(Debug, Args)]
pub struct MigrateOpts {
    /// Print the SQL that creates the table and its index instead of
    /// running it (nothing is connected to).
    #[arg(long)]
    pub print_sql: bool,
    /// Say where the store's schema stands, changing nothing; exits 1
    /// when `byok migrate` has work to do.
    #[arg(long, conflicts_with = "print_sql")]
    pub check: bool,
}

/// `byok set`.
#[derive(Debug, Args)]
pub struct SetOpts {
    /// The provider, such as `openai`.
    pub provider: String,
    /// The user id.
    #[arg(long)]
    pub user: String,
    /// How long the key lives: `30d`, `12h`, `90min` (default: 24h, or
    /// BYOK_DEFAULT_TTL: a duration or `never`).
    #[arg(long, conflicts_with = "no_expiry")]
    pub ttl: Option<String>,
    /// The key never expires.
    #[arg(long)]
    pub no_expiry: bool,
}

/// `byok get`.
#[derive(Debug, Args)]
pub struct GetOpts {
    /// The provider, such as `openai`.
    pub provider: String,
    /// The user id.
    #[arg(long)]
    pub user: String,
    /// Print the key itself.
    #[arg(long)]
    pub reveal: bool,
}

/// `byok list`.
#[derive(Debug, Args)]
pub struct ListOpts {
    /// Only this user's keys (expired ones included, marked).
    #[arg(long)]
    pub user: Option<String>,
    /// Keys fetched per round trip when listing every user.
    #[arg(long, default_value_t = 500)]
    pub page_size: usize,
}

/// `byok rotate`.
#[derive(Debug, Args)]
pub struct RotateOpts {
    /// Where the cursor is saved after each page (default: a file named
    /// after the store, beside a SQLite database, else in
    /// $XDG_STATE_HOME/byok or ~/.local/state/byok; the command says
    /// which, and a re-run from any directory resumes from it).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Keys per page.
    #[arg(long, default_value_t = 100)]
    pub page_size: usize,
    /// Milliseconds to pause between pages, to spare a busy store.
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
    /// Count what would be rotated (decrypting each key) and write nothing,
    /// not even the rotation state.
    #[arg(long)]
    pub dry_run: bool,
}

/// `byok copy`. Its `Debug` shows the URL without its password.
#[derive(Args)]
pub struct CopyOpts {
    /// The target store's URL; its schema is created if missing.
    #[arg(long)]
    pub to: String,
    /// The table of a SQL target.
    #[arg(long, default_value = "user_api_keys")]
    pub to_table: String,
    /// The key prefix of a Redis target.
    #[arg(long, default_value = "byok_")]
    pub to_prefix: String,
    /// Keys per page.
    #[arg(long, default_value_t = 500)]
    pub page_size: usize,
    /// How many copied keys to compare byte for byte at the end.
    #[arg(long, default_value_t = 100)]
    pub sample: usize,
    /// What to do where the target holds a different key for a slot: keep
    /// it and report (exit 1), keep the later-created key, or replace it.
    #[arg(long, value_enum, default_value_t = OnConflict::Skip)]
    pub on_conflict: OnConflict,
    /// Report what the copy would do and write nothing (the target's schema
    /// is not created either).
    #[arg(long)]
    pub dry_run: bool,
    /// With --on-conflict overwrite: do not ask for confirmation.
    #[arg(short, long)]
    pub yes: bool,
}

/// `byok copy --on-conflict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnConflict {
    /// Keep the target's key, list the conflict, exit 1.
    Skip,
    /// The key with the later creation date wins (the target's on a tie).
    Newer,
    /// The source's key replaces the target's.
    Overwrite,
}

/// `byok import-python`. Its `Debug` shows the URL without its password.
#[derive(Args)]
pub struct ImportPythonOpts {
    /// The Python library's database, in byok's URL form: sqlite://FILE
    /// (SQLAlchemy's sqlite:///FILE), postgres://…, mysql://…. Only read.
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Its table (the Python library's `BYOKConfig.db_table_name`).
    #[arg(long, default_value = "user_api_keys")]
    pub from_table: String,
    /// A file holding the Python application's secret key (`-`: standard
    /// input; one trailing newline is ignored). Without it, the secret is
    /// read from the BYOK_PYTHON_SECRET variable.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// The secret is the application's own Fernet key
    /// (`BYOKConfig.encryption_key`) rather than its secret key.
    #[arg(long)]
    pub fernet_key: bool,
    /// The UTC offset of the times the Python application wrote (naive
    /// local times), such as +00:00 (default: this machine's time zone).
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true)]
    pub utc_offset: Option<String>,
    /// Report what would be converted and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A store given as an optional positional URL, for `check`. Its `Debug`
/// shows the URL without its password.
#[derive(Args)]
pub struct ScratchOpts {
    /// The store's URL (default: --store, BYOK_STORE, or ./byok.db).
    pub url: Option<String>,
}

/// `byok bench`.
#[derive(Debug, Args)]
pub struct BenchOpts {
    /// The store to measure.
    #[command(flatten)]
    pub target: ScratchOpts,
    /// Operations of each kind.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub ops: usize,
}

// The options hold store URLs, whose passwords must not reach a debug
// print (a `dbg!`, a `?opt` in a log line): each URL is shown redacted.

impl fmt::Debug for StoreOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOpts")
            .field("url", &redact(&self.url))
            .field("table", &self.table)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl fmt::Debug for CopyOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyOpts")
            .field("to", &redact(&self.to))
            .field("to_table", &self.to_table)
            .field("to_prefix", &self.to_prefix)
            .field("page_size", &self.page_size)
            .field("sample", &self.sample)
            .field("on_conflict", &self.on_conflict)
            .field("dry_run", &self.dry_run)
            .field("yes", &self.yes)
            .finish()
    }
}

impl fmt::Debug for ImportPythonOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportPythonOpts")
            .field("from", &redact(&self.from))
            .field("from_table", &self.from_table)
            .field("secret_file", &self.secret_file)
            .field("fernet_key", &self.fernet_key)
            .field("utc_offset", &self.utc_offset)
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

impl fmt::Debug for ScratchOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScratchOpts")
            .field("url", &self.url.as_deref().map(redact))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_store_password() {
        for args in [
            &["byok", "--store", "postgres://u:SECRETPW@h/db", "list"][..],
            &["byok", "copy", "--to", "mysql://r:SECRETPW@h/x"],
            &[
                "byok",
                "import-python",
                "--from",
                "postgres://p:SECRETPW@h/py",
            ],
            &["byok", "check", "redis://:SECRETPW@h:6379"],
            &["byok", "bench", "redis://:SECRETPW@h:6379"],
        ] {
            let opt = Opt::try_parse_from(args).unwrap();
            let shown = format!("{opt:?}");
            assert!(!shown.contains("SECRETPW"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }
}
