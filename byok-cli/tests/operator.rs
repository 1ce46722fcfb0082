//! What an operator meets at the edges of the built binary: errors (one
//! line, or one JSON object), redaction of passwords and keys, exit codes,
//! closed pipes and full disks, defaults that are said out loud.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod common;

use std::process::Stdio;

use common::{Env, rt};

const KEY: &str = "sk-proj-canary-7d1e0c9b8a7f6e5d";
const PASSWORD: &str = "SECRETPW-4c1d";

/// Standard error is one line: no usage block, no blank lines.
fn one_line(stderr: &str) -> &str {
    let text = stderr.trim_end_matches('\n');
    assert!(!text.is_empty(), "nothing on standard error");
    assert!(!text.contains('\n'), "more than one line:\n{stderr}");
    text
}

/// A store with one key, `alice`'s `openai`.
fn store_with_a_key(env: &Env) -> String {
    let store = env.sqlite("keys.db");
    env.run_k(
        &["--store", &store, "set", "openai", "--user", "alice"],
        KEY,
    )
    .ok();
    store
}

#[test]
fn a_password_never_shows_in_clap_errors_wherever_the_url_is() {
    let env = Env::new();
    let url = format!("postgres://u:{PASSWORD}@127.0.0.1:1/db");
    let query = format!("postgres://u@127.0.0.1:1/db?sslmode=disable&password={PASSWORD}");
    for args in [
        // A URL where no argument is expected: clap quotes it.
        vec!["list".to_owned(), url.clone()],
        vec!["--store".to_owned(), url.clone(), "lisst".to_owned()],
        vec![
            format!("--store={url}"),
            "list".to_owned(),
            "--bogus".to_owned(),
        ],
        vec!["list".to_owned(), query.clone()],
        vec!["copy".to_owned(), "--too".to_owned(), url],
    ] {
        let run = env.run(&args, "");
        let err = one_line(run.fails(2));
        assert!(!err.contains(PASSWORD), "{args:?}: {err}");
    }
    // And in the command's own errors, the password of a query parameter.
    let run = env.run(&["--store", &query, "list"], "");
    assert!(!run.stderr.contains(PASSWORD), "{run:?}");
    assert!(run.stderr.contains("password=***"), "{run:?}");
}

#[test]
fn usage_errors_are_one_line_naming_where_help_is() {
    let env = Env::new();
    let run = env.run(&["list", "extra"], "");
    let err = one_line(run.fails(2));
    assert!(
        err.starts_with("byok: unexpected argument 'extra'"),
        "{err}"
    );
    assert!(err.contains("`byok list --help`"), "{err}");
    // An error clap spreads over lines, and its suggestion, on one.
    let run = env.run(&["rm"], "");
    let err = one_line(run.fails(2));
    assert!(
        err.contains("<PROVIDER>") && err.contains("--user"),
        "{err}"
    );
    let run = env.run(&["lisst"], "");
    let err = one_line(run.fails(2));
    assert!(err.contains("a similar subcommand exists: 'list'"), "{err}");
    let run = env.run(&["purge", "--page-size", "x"], "");
    one_line(run.fails(2));
    let run = env.run(&["list", "--page-size", "x"], "");
    let err = one_line(run.fails(2));
    assert!(!err.contains("For more information"), "{err}");
}

#[test]
fn json_errors_are_one_object_with_the_same_exit_code() {
    let env = Env::new();
    let store = store_with_a_key(&env);
    let cases: [(&[&str], i32); 4] = [
        (
            &["--store", &store, "rm", "anthropic", "--user", "alice"],
            6,
        ),
        (
            &["--store", &store, "get", "anthropic", "--user", "alice"],
            6,
        ),
        (&["lisst"], 2),
        (&["--store", "sqlite://./missing.db", "list"], 4),
    ];
    for (args, code) in cases {
        let plain = args.to_vec();
        let text = env.run_k(&plain, "");
        assert_eq!(text.code, code, "{plain:?} without --json: {text:?}");
        let mut json = vec!["--json"];
        json.extend_from_slice(&plain);
        let run = env.run_k(&json, "");
        assert_eq!(run.code, code, "{json:?}: {run:?}");
        let line = one_line(&run.stderr);
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(value["error"]["exit_code"], code, "{value}");
        assert!(value["error"]["message"].is_string(), "{value}");
        // Only a store's failure has a storage kind.
        if code != 4 {
            assert!(value["error"].get("storage_kind").is_none(), "{value}");
        }
        assert!(run.stdout.is_empty(), "{run:?}");
    }
}

#[test]
fn a_key_given_as_an_argument_is_refused_without_being_echoed() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let run = env.run_k(
        &["--store", &store, "set", "openai", "--user", "u", KEY],
        "",
    );
    let err = one_line(run.fails(2));
    assert!(!err.contains(KEY) && !err.contains("canary"), "{err}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn a_provider_that_looks_like_a_key_is_refused() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let run = env.run_k(&["--store", &store, "set", KEY, "--user", "u"], "sk-x\n");
    let err = one_line(run.fails(2));
    assert!(err.contains("looks like an API key"), "{err}");
    assert!(!err.contains(KEY), "{err}");
    // Nothing was stored: not even the database was made.
    assert!(!env.path().join("keys.db").exists());
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let env = Env::new();
    let store = store_with_a_key(&env);
    // `keygen` prints with `println!`: the same for it.
    for args in [["list"], ["stats"], ["keygen"]] {
        let mut cmd = env.command(&["--store", &store, args[0]]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // The reader goes away before anything is written, as `head -1`
        // does after its first line.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_full_disk_is_a_one_line_error() {
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        return;
    }
    let env = Env::new();
    let store = store_with_a_key(&env);
    for args in [["list"], ["stats"], ["keygen"]] {
        let mut cmd = env.command(&["--store", &store, args[0]]);
        cmd.stdin(Stdio::null())
            .stdout(std::fs::OpenOptions::new().write(true).open(full).unwrap())
            .stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let err = one_line(&stderr);
        assert!(err.starts_with("byok: cannot write the output"), "{err}");
    }
}

#[test]
fn set_says_when_a_key_expires_and_the_default_can_change() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let run = env.run_k(&["--store", &store, "set", "openai", "--user", "u"], KEY);
    let text = run.ok();
    assert!(
        text.contains("(in 24h, the default time to live)"),
        "{text}"
    );
    assert!(text.contains("BYOK_DEFAULT_TTL"), "{text}");

    let mut cmd = env.command(&["--store", &store, "--json", "set", "groq", "--user", "u"]);
    cmd.env("BYOK_KEYRING_FILE", &env.keyring)
        .env("BYOK_DEFAULT_TTL", "30d");
    let row = env.run_cmd(cmd, KEY).json();
    let created = chrono_of(&row["created_at"]);
    let expires = chrono_of(&row["expires_at"]);
    assert_eq!((expires - created).num_days(), 30, "{row}");

    let mut cmd = env.command(&["--store", &store, "--json", "set", "mistral", "--user", "u"]);
    cmd.env("BYOK_KEYRING_FILE", &env.keyring)
        .env("BYOK_DEFAULT_TTL", "never");
    let row = env.run_cmd(cmd, KEY).json();
    assert!(row["expires_at"].is_null(), "{row}");

    let mut cmd = env.command(&["--store", &store, "set", "x", "--user", "u"]);
    cmd.env("BYOK_KEYRING_FILE", &env.keyring)
        .env("BYOK_DEFAULT_TTL", "soon");
    let run = env.run_cmd(cmd, KEY);
    assert!(
        one_line(run.fails(2)).contains("BYOK_DEFAULT_TTL"),
        "{run:?}"
    );
}

fn chrono_of(v: &serde_json::Value) -> byok::chrono::DateTime<byok::chrono::Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn completions_are_printed_for_each_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = env.run(&["completions", shell], "");
        let text = run.ok();
        assert!(text.contains("rotate"), "{shell}: {text}");
    }
    env.run(&["completions", "tcsh"], "").fails(2);
}

#[test]
fn verbose_logs_on_standard_error() {
    let env = Env::new();
    let store = store_with_a_key(&env);
    let mut cmd = env.command(&["--store", &store, "list"]);
    cmd.env("RUST_LOG", "trace");
    let run = env.run_cmd(cmd, "");
    run.ok();
    assert!(
        run.stderr.contains("TRACE") || run.stderr.contains("DEBUG"),
        "{run:?}"
    );
    let quiet = env.run(&["--store", &store, "list"], "");
    assert_eq!(quiet.ok().lines().count(), 6, "{quiet:?}");
    assert!(quiet.stderr.is_empty(), "{quiet:?}");
}

#[test]
fn store_errors_of_postgres_are_plain() {
    let Some(url) = rt().block_on(byok_testkit::services::postgres_url()) else {
        return;
    };
    let env = Env::new();
    // A role that does not exist: an authentication failure.
    let mut bad = url::Url::parse(&url).unwrap();
    bad.set_username("byok_no_such_role").unwrap();
    bad.set_password(Some(PASSWORD)).unwrap();
    let run = env.run(&["--store", bad.as_str(), "list"], "");
    let err = one_line(run.fails(4));
    assert!(!err.contains("byok migrate"), "{err}");
    assert!(err.contains("password"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(!err.contains(" at line "), "{err}");
    // A missing table still points at `byok migrate`.
    let table = common::namespace("missing");
    let run = env.run(&["--store", &url, "--table", &table, "list"], "");
    let err = one_line(run.fails(4));
    assert!(err.contains("byok migrate"), "{err}");
    assert!(!err.contains(" at line "), "{err}");
}

/// Every Redis key that starts with `prefix`, sorted.
fn redis_keys(url: &str, prefix: &str) -> Vec<String> {
    use byok::byok_redis::redis;
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap();
    keys.sort();
    keys
}

#[test]
fn read_only_commands_on_redis_write_nothing() {
    let Some(url) = rt().block_on(byok_testkit::services::redis_url()) else {
        return;
    };
    let env = Env::new();
    // A prefix nobody wrote to: a mistyped --prefix is refused, and
    // nothing is created under it.
    let typo = format!("{}:", common::namespace("typo"));
    for args in [
        &["list"][..],
        &["stats"],
        &["get", "openai", "--user", "u"],
        &["rm", "openai", "--user", "u"],
    ] {
        let mut all = vec!["--store", &url, "--prefix", &typo];
        all.extend_from_slice(args);
        let run = env.run_k(&all, "");
        let err = one_line(run.fails(4));
        assert!(err.contains("no byok store under the key prefix"), "{err}");
    }
    assert_eq!(redis_keys(&url, &typo), Vec::<String>::new());

    // A store with keys: reading it changes no Redis key.
    let ns = common::namespace("ro");
    let prefix = format!("{ns}:");
    let users = rt().block_on(common::seed(&url, &ns, env.ring(), &ns, 3));
    let before = redis_keys(&url, &prefix);
    assert!(before.iter().any(|k| k.ends_with("format")), "{before:?}");
    for args in [
        &["list"][..],
        &["stats"],
        &["verify"],
        &["get", "openai", "--user", &users[0]],
    ] {
        let mut all = vec!["--store", &url, "--prefix", &prefix];
        all.extend_from_slice(args);
        env.run_k(&all, "").ok();
    }
    assert_eq!(redis_keys(&url, &prefix), before);
    for user in &users {
        env.run(
            &[
                "--store", &url, "--prefix", &prefix, "clear", "--user", user, "--yes",
            ],
            "",
        )
        .ok();
    }
    let leftover = redis_keys(&url, &prefix);
    assert_eq!(leftover, [format!("{prefix}format")]);
    let mut conn = byok::byok_redis::redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: i64 = byok::byok_redis::redis::cmd("DEL")
        .arg(&leftover)
        .query(&mut conn)
        .unwrap();
}

#[test]
fn check_on_redis_leaves_nothing_behind() {
    let Some(url) = rt().block_on(byok_testkit::services::redis_url()) else {
        return;
    };
    let env = Env::new();
    let run = env.run(&["check", &url], "");
    let text = run.ok();
    let start = text.find("key prefix ").unwrap() + "key prefix ".len();
    let prefix = text[start..].split(')').next().unwrap().to_owned();
    assert!(prefix.starts_with("byok_scratch_"), "{prefix}");
    assert_eq!(redis_keys(&url, &prefix), Vec::<String>::new());
}

#[test]
fn ctrl_c_during_check_still_removes_the_scratch_table() {
    use std::io::BufRead as _;
    let Some(url) = rt().block_on(byok_testkit::services::postgres_url()) else {
        return;
    };
    let env = Env::new();
    let mut cmd = env.command(&["check", &url]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let start = first.find("(table ").unwrap() + "(table ".len();
    let table = first[start..].trim_end_matches(')').to_owned();
    // One case done: the table exists and the check is under way.
    let case = lines.next().unwrap().unwrap();
    assert!(case.starts_with("ok "), "{case}");
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    // Read to the end, so that no write of the command meets a closed pipe.
    for line in lines {
        line.unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The check may have ended before the signal came; killed by it, it
    // would have no exit code at all.
    if out.status.code() == Some(130) {
        assert!(
            one_line(&stderr).contains(&format!("the scratch table {table} was removed")),
            "{stderr}"
        );
    } else {
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    }
    let left: i64 = rt().block_on(async {
        use byok::byok_sql::sqlx;
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = $1")
            .bind(&table)
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    assert_eq!(left, 0, "{table} was left behind");
}

#[test]
fn ctrl_c_at_the_key_prompt_leaves_echo_on() {
    use std::io::{Read as _, Write as _};
    if !std::path::Path::new("/usr/bin/script").exists() {
        return;
    }
    let env = Env::new();
    let store = env.sqlite("keys.db");
    // `script` gives the command a terminal of its own; the shell runs
    // `stty` on that terminal once the command is over. Its trap is a
    // handler, so the command starts with SIGINT's default action.
    let line = format!(
        "trap 'echo trapped' INT; '{}' --store '{store}' set openai --user u; echo \"rc=$?\"; \
         stty -a",
        env!("CARGO_BIN_EXE_byok")
    );
    let mut child = std::process::Command::new("/usr/bin/script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(env.path())
        .env("SHELL", "/bin/sh")
        .env("BYOK_KEYRING_FILE", &env.keyring)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("API key") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // Ctrl-C, as the terminal sends it.
    child.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    stdout.read_to_end(&mut seen).unwrap();
    drop(child.stdin.take());
    child.wait().unwrap();
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("rc=130"), "{text}");
    let flags: Vec<&str> = text.split_whitespace().collect();
    assert!(
        flags.contains(&"echo"),
        "echo is off after the prompt:\n{text}"
    );
    assert!(
        !flags.contains(&"-echo"),
        "echo is off after the prompt:\n{text}"
    );
}

#[test]
fn ids_with_bidirectional_or_invisible_characters_are_refused_by_code_point() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    for (user, provider, code) in [
        ("u", "open\u{202e}ia", "U+202E"),
        ("ali\u{200b}ce", "openai", "U+200B"),
        ("\u{feff}bob", "openai", "U+FEFF"),
        ("u", "\u{2066}x\u{2069}", "U+2066"),
    ] {
        let run = env.run_k(&["--store", &store, "set", provider, "--user", user], KEY);
        let err = one_line(run.fails(2));
        assert!(err.contains(code), "{err}");
        assert!(!err.contains(user) || user == "u", "{err}");
        assert!(!err.contains(provider), "{err}");
    }
    let list = env.run(&["--store", &store, "--json", "list"], "");
    // Nothing was stored (the schema was, by the first `set`).
    assert_eq!(list.json(), serde_json::json!([]), "{list:?}");
}

#[test]
fn an_interrupted_rotation_says_where_it_saved_and_resumes_from_anywhere() {
    use std::io::BufRead as _;
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let n = 200;
    rt().block_on(common::seed(&store, "user_api_keys", env.ring(), "k", n));
    let p = env.keyring.display().to_string();
    env.run(&["keygen", "--add-to", &p, "--primary"], "").ok();

    let mut cmd = env.command(&[
        "--store",
        &store,
        "rotate",
        "--page-size",
        "5",
        "--pause-ms",
        "40",
    ]);
    cmd.env("BYOK_KEYRING_FILE", &env.keyring)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = stderr.next().unwrap().unwrap();
    let start = first.find(" in ").unwrap() + " in ".len();
    let state = std::path::PathBuf::from(first[start..].split(';').next().unwrap());
    // Beside the database, not in the directory the command ran in.
    let db_dir = std::fs::canonicalize(env.path()).unwrap();
    assert_eq!(state.parent(), Some(db_dir.as_path()), "{first}");
    for _ in 0..2000 {
        if let Ok(bytes) = std::fs::read(&state) {
            let saved: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if saved["seen"].as_u64().unwrap() >= 20 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let rest: Vec<String> = stderr.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    let last = rest.last().unwrap();
    assert!(
        last.contains("run the same command again to resume"),
        "{last}"
    );
    assert!(last.contains(&state.display().to_string()), "{last}");
    assert!(state.exists());

    // From another directory, the same command resumes.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = env.command(&["--store", &store, "--json", "rotate"]);
    cmd.env("BYOK_KEYRING_FILE", &env.keyring)
        .current_dir(elsewhere.path());
    let resumed = env.run_cmd(cmd, "");
    assert!(
        resumed.stderr.contains("resuming the rotation saved in"),
        "{resumed:?}"
    );
    let report = resumed.json();
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["keys"], n, "{report}");
    assert!(!state.exists(), "a finished rotation removes its state");
}

#[test]
fn ctrl_c_during_bench_still_removes_the_scratch_table() {
    let env = Env::new();
    let store = env.sqlite("bench.db");
    env.run(&["--store", &store, "migrate"], "").ok();
    let mut cmd = env.command(&["bench", &store, "-n", "1000000"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let tables = || -> Vec<String> {
        rt().block_on(async {
            use byok::byok_sql::sqlx;
            let pool = sqlx::SqlitePool::connect(&store).await.unwrap();
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&pool)
                .await
                .unwrap()
        })
    };
    // Under way: the scratch table is there.
    let mut scratch = None;
    for _ in 0..1000 {
        scratch = tables()
            .into_iter()
            .find(|t| t.starts_with("byok_scratch_"));
        if scratch.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let scratch = scratch.expect("the bench made no scratch table");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        one_line(&stderr).contains(&format!("the scratch table {scratch} was removed")),
        "{stderr}"
    );
    assert!(!tables().contains(&scratch), "{scratch} was left behind");
}

#[test]
fn migrate_print_sql_prints_a_schema_that_works_without_connecting() {
    let env = Env::new();
    let store = env.sqlite("printed.db");
    let run = env.run(
        &[
            "--store",
            &store,
            "--table",
            "printed_keys",
            "migrate",
            "--print-sql",
        ],
        "",
    );
    let sql = run.ok().to_owned();
    assert!(
        sql.starts_with("CREATE TABLE IF NOT EXISTS printed_keys ("),
        "{sql}"
    );
    assert!(sql.contains("last_check TEXT"), "{sql}");
    assert!(!env.path().join("printed.db").exists(), "it connected");
    // The printed statements make a table the command then uses.
    rt().block_on(async {
        use byok::byok_sql::sqlx;
        let pool = sqlx::SqlitePool::connect(&format!("{store}?mode=rwc"))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    env.run_k(
        &[
            "--store",
            &store,
            "--table",
            "printed_keys",
            "set",
            "openai",
            "--user",
            "u",
        ],
        KEY,
    )
    .ok();
    let list = env
        .run(
            &[
                "--store",
                &store,
                "--table",
                "printed_keys",
                "--json",
                "list",
            ],
            "",
        )
        .json();
    assert_eq!(list[0]["provider"], "openai", "{list}");
    let redis = env.run(
        &["--store", "redis://127.0.0.1:1", "migrate", "--print-sql"],
        "",
    );
    one_line(redis.fails(2));
}

#[test]
fn authentication_failures_point_at_the_credentials() {
    let env = Env::new();
    let mut urls = Vec::new();
    if let Some(url) = rt().block_on(byok_testkit::services::mysql_url()) {
        urls.push(url);
    }
    if let Some(url) = rt().block_on(byok_testkit::services::redis_url()) {
        urls.push(url);
    }
    for url in urls {
        let mut bad = url::Url::parse(&url).unwrap();
        bad.set_password(Some(PASSWORD)).unwrap();
        let run = env.run(&["--store", bad.as_str(), "list"], "");
        let err = one_line(run.fails(4));
        assert!(err.contains("check the user name and password"), "{err}");
        assert!(
            !err.contains("byok migrate") && !err.contains(PASSWORD),
            "{err}"
        );
    }
}

#[test]
fn ctrl_c_during_check_on_redis_leaves_nothing_behind() {
    use std::io::BufRead as _;
    let Some(url) = rt().block_on(byok_testkit::services::redis_url()) else {
        return;
    };
    let env = Env::new();
    let mut cmd = env.command(&["check", &url]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let start = first.find("(key prefix ").unwrap() + "(key prefix ".len();
    let prefix = first[start..].trim_end_matches(')').to_owned();
    let case = lines.next().unwrap().unwrap();
    assert!(case.starts_with("ok "), "{case}");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    for line in lines {
        line.unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The check may have ended before the signal came: either way,
    // nothing is left under the scratch prefix.
    if out.status.code() == Some(130) {
        assert!(one_line(&stderr).contains("was removed"), "{stderr}");
    } else {
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    }
    assert_eq!(redis_keys(&url, &prefix), Vec::<String>::new());
}

#[test]
fn list_shows_a_stored_id_with_a_format_character_escaped() {
    let env = Env::new();
    let store = env.sqlite("keys.db");
    let user = "ali\u{202e}ecila";
    rt().block_on(async {
        let storage = byok::connect_with(&store, &common::config("user_api_keys"))
            .await
            .unwrap();
        // As a store written before such ids were refused holds it.
        let key = byok::ApiKey::new(user, "openai", b"not a ciphertext".to_vec()).unwrap();
        byok::KeyStorage::store(&storage, &key).await.unwrap();
    });
    let list = env.run(&["--store", &store, "list"], "");
    let out = list.ok();
    assert!(out.contains("ali\\u{202e}ecila"), "{out}");
    assert!(!out.contains('\u{202e}'), "{out}");
    let json = env.run(&["--store", &store, "--json", "list"], "");
    assert_eq!(json.json()[0]["user"], user, "JSON keeps the id as it is");
}
