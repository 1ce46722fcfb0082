//! `check`, `verify`, `rotate` and `copy` of the built binary against
//! PostgreSQL, MariaDB and Redis, each test in its own table or key prefix.
//! Skipped (or failed, with BYOK_TEST_REQUIRE_SERVICES=1) when a server is
//! not there.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod common;

use byok::KeyStorage as _;
use byok_testkit::services;
use common::{Env, config, namespace, rt};

/// A server-backed store under a namespace of its own.
struct Server {
    url: String,
    namespace: String,
}

impl Server {
    fn args(&self) -> Vec<String> {
        vec![
            "--store".to_owned(),
            self.url.clone(),
            "--table".to_owned(),
            self.namespace.clone(),
            "--prefix".to_owned(),
            format!("{}:", self.namespace),
        ]
    }

    /// Drops the table, or removes every key under the prefix, whatever
    /// the test left.
    async fn cleanup(&self, users: &[String]) {
        if self.url.starts_with("redis") {
            let store = byok::RedisStorage::builder(&self.url)
                .config(&config(&self.namespace))
                .open()
                .await
                .unwrap();
            byok::StoreAdmin::destroy(&store).await.unwrap();
            return;
        }
        let store = byok::open_with(&self.url, &config(&self.namespace))
            .await
            .unwrap();
        for user in users {
            let _ = store.clear_all(user).await;
        }
        use byok::byok_sql::sqlx;
        let drop = sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", self.namespace));
        if self.url.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            sqlx::query(drop).execute(&pool).await.unwrap();
        } else if self.url.starts_with("mysql") {
            let pool = sqlx::MySqlPool::connect(&self.url).await.unwrap();
            sqlx::query(drop).execute(&pool).await.unwrap();
        }
    }
}

fn with(server: &Server, args: &[&str]) -> Vec<String> {
    let mut all = server.args();
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all
}

fn check(url: &str) -> String {
    let env = Env::new();
    let out = env.run(&["check", url], "");
    let text = out.ok();
    assert!(
        text.contains("ok      scan_visits_every_key_once"),
        "{text}"
    );
    assert!(text.contains(" passed, 0 failed; scratch "), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    text.to_owned()
}

/// The scratch table a check names in its summary.
fn scratch_table(output: &str) -> String {
    let start = output.find("scratch table ").unwrap() + "scratch table ".len();
    output[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn verify_and_rotate(url: &str) {
    let env = Env::new();
    let server = Server {
        url: url.to_owned(),
        namespace: namespace("rot"),
    };
    let users = rt().block_on(common::seed(
        url,
        &server.namespace,
        env.ring(),
        &server.namespace,
        12,
    ));
    let verify = env.run_k(&with(&server, &["--json", "verify"]), "").json();
    assert_eq!(verify["checked"], 12);
    assert_eq!(verify["ok_by_key_id"]["1"], 12);
    // A keyring without key id 1 fails to verify every key.
    let other = env
        .run(&["keygen", "--id", "2"], "")
        .ok()
        .trim_end()
        .to_owned();
    let mut cmd = env.command(&with(&server, &["verify"]));
    cmd.env("BYOK_KEYRING", &other);
    let wrong = env.run_cmd(cmd, "");
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong.stdout.contains("verified 12 key(s): 12 failed"),
        "{wrong:?}"
    );

    let p = env.keyring.display().to_string();
    env.run(&["keygen", "--add-to", &p, "--primary"], "").ok();
    let rotate = env
        .run_k(
            &with(&server, &["--json", "rotate", "--page-size", "5"]),
            "",
        )
        .json();
    assert_eq!(rotate["rotated"]["1"], 12);
    assert_eq!(rotate["complete"], true);
    let stats = env.run(&with(&server, &["--json", "stats"]), "").json();
    assert_eq!(stats["by_key_id"], serde_json::json!({ "2": 12 }));
    let mut ring = env.ring();
    ring.remove(1).unwrap();
    rt().block_on(async {
        common::assert_all_keys(url, &server.namespace, ring, &users).await;
        server.cleanup(&users).await;
    });
}

#[test]
fn check_passes_on_postgres() {
    let rt = rt();
    if let Some(url) = rt.block_on(services::postgres_url()) {
        let table = scratch_table(&check(&url));
        let left: i64 = rt.block_on(async {
            use byok::byok_sql::sqlx;
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = $1",
            )
            .bind(&table)
            .fetch_one(&pool)
            .await
            .unwrap()
        });
        assert_eq!(left, 0, "{table} was left behind");
    }
}

#[test]
fn check_passes_on_mariadb() {
    let rt = rt();
    if let Some(url) = rt.block_on(services::mysql_url()) {
        let table = scratch_table(&check(&url));
        let left: i64 = rt.block_on(async {
            use byok::byok_sql::sqlx;
            let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = ?",
            )
            .bind(&table)
            .fetch_one(&pool)
            .await
            .unwrap()
        });
        assert_eq!(left, 0, "{table} was left behind");
    }
}

#[test]
fn check_passes_on_redis() {
    if let Some(url) = rt().block_on(services::redis_url()) {
        let env = Env::new();
        let report = env.run(&["--json", "check", &url], "").json();
        assert_eq!(report["failed"], 0, "{report}");
        assert_eq!(report["passed"], byok_testkit::CASES.len(), "{report}");
        assert_eq!(report["left_behind"], 0, "{report}");
        let cases = report["cases"].as_array().unwrap();
        assert!(cases.iter().all(|c| c["passed"] == true), "{report}");
    }
}

#[test]
fn check_passes_on_redis_cluster() {
    if let Some(urls) = rt().block_on(services::redis_cluster_urls()) {
        check(&urls.join(","));
    }
}

#[test]
fn verify_and_rotate_on_postgres() {
    if let Some(url) = rt().block_on(services::postgres_url()) {
        verify_and_rotate(&url);
    }
}

#[test]
fn verify_and_rotate_on_mariadb() {
    if let Some(url) = rt().block_on(services::mysql_url()) {
        verify_and_rotate(&url);
    }
}

#[test]
fn verify_and_rotate_on_redis() {
    if let Some(url) = rt().block_on(services::redis_url()) {
        verify_and_rotate(&url);
    }
}

/// SQLite → PostgreSQL → Redis → MariaDB → SQLite keeps every key.
#[test]
fn copy_round_trip_through_every_backend_keeps_every_key() {
    let rt = rt();
    let (Some(pg), Some(redis), Some(my)) = rt.block_on(async {
        (
            services::postgres_url().await,
            services::redis_url().await,
            services::mysql_url().await,
        )
    }) else {
        return;
    };
    let env = Env::new();
    let hops = [
        Server {
            url: env.sqlite("first.db"),
            namespace: "user_api_keys".to_owned(),
        },
        Server {
            url: pg,
            namespace: namespace("copy"),
        },
        Server {
            url: redis,
            namespace: namespace("copy"),
        },
        Server {
            url: my,
            namespace: namespace("copy"),
        },
        Server {
            url: env.sqlite("last.db"),
            namespace: "user_api_keys".to_owned(),
        },
    ];
    let n = 40;
    let users = rt.block_on(common::seed(
        &hops[0].url,
        &hops[0].namespace,
        env.ring(),
        &namespace("u"),
        n,
    ));
    for pair in hops.windows(2) {
        let (from, to) = (&pair[0], &pair[1]);
        let mut args = from.args();
        args.extend(
            [
                "--json",
                "copy",
                "--to",
                &to.url,
                "--to-table",
                &to.namespace,
                "--to-prefix",
                &format!("{}:", to.namespace),
                "--page-size",
                "16",
            ]
            .map(str::to_owned),
        );
        let report = env.run(&args, "").json();
        assert_eq!(report["copied"], n, "{} → {}: {report}", from.url, to.url);
        assert_eq!(report["target_keys"], n, "{report}");
        assert_eq!(report["verified"], true, "{report}");
    }
    rt.block_on(async {
        common::assert_all_keys(&hops[4].url, &hops[4].namespace, env.ring(), &users).await;
        for hop in &hops[1..4] {
            hop.cleanup(&users).await;
        }
    });
}
