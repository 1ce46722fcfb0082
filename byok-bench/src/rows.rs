//! The rows of one backend: the same calls on byok and on the hand-written
//! store, through their public APIs only.

use std::sync::Arc;
use std::time::Duration;

use byok::{ApiKey, Byok, ByokConfig, KeyStorage, Keyring, MasterKey};
use secrecy::ExposeSecret;

use crate::hand::{HandCipher, HandStore, Record, now_ms};
use crate::harness::{self, BResult, Plan, Row, RowResult};
use crate::opt::Sizes;
use crate::sql::BulkLoad;

/// The providers a user with several keys has.
pub(crate) const PROVIDERS: [&str; 4] = ["anthropic", "google", "mistral", "openai"];

/// A plaintext the size of a real API key (100 bytes).
pub(crate) fn api_key(i: u64) -> String {
    format!("sk-proj-{i:012}{}", "x".repeat(80))
}

/// The TTL every write uses (the default of byok and of the Python library).
pub(crate) const TTL: Duration = Duration::from_secs(24 * 3600);

/// The master keys of the benchmark (fixed: nothing here is secret).
pub(crate) const KEY_1: [u8; 32] = [1; 32];
pub(crate) const KEY_2: [u8; 32] = [2; 32];

/// A manager without background cleanup, primary key `primary` of 1 and 2.
pub(crate) fn manager(storage: Arc<dyn KeyStorage>, primary: u32) -> BResult<Byok> {
    let mut ring = Keyring::new(1, MasterKey::from_bytes(&KEY_1)?);
    ring.add(2, MasterKey::from_bytes(&KEY_2)?)?;
    ring.set_primary(primary)?;
    let config = ByokConfig::for_tests();
    Ok(Byok::builder(storage, ring).config(config).build()?)
}

/// One backend under test.
pub(crate) struct Backend<H> {
    pub(crate) name: String,
    pub(crate) storage: Arc<dyn KeyStorage>,
    pub(crate) hand: Arc<H>,
    /// In-process backends time operations in batches (see [`Plan::batch`]).
    pub(crate) in_process: bool,
    /// The users of the hot-path rows; reads go to `users[i % len]`.
    pub(crate) users: Arc<Vec<String>>,
    /// Whether the server removes expired keys by itself (Redis), so that
    /// `purge_expired` may find fewer than were written.
    pub(crate) self_expiring: bool,
    /// Loads the other users' keys straight into both tables, where the
    /// engine allows it; otherwise they are written through both APIs.
    pub(crate) bulk: Option<Arc<dyn BulkLoad>>,
}

fn user_of(users: &[String], i: u64) -> &str {
    &users[(i % users.len() as u64) as usize]
}

fn record(value: Vec<u8>, expires_at_ms: Option<i64>) -> Record {
    Record {
        value,
        hint: Some("sk-p...xxxx".to_owned()),
        created_at_ms: now_ms(),
        expires_at_ms,
    }
}

/// Stores `n` keys through `store` on 16 tasks.
async fn fill<F, Fut>(n: usize, store: F) -> BResult<()>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = BResult<()>> + Send + 'static,
{
    if n == 0 {
        return Ok(());
    }
    let plan = Plan {
        rounds: 1,
        ops: n,
        batch: 1,
        tasks: 16.min(n),
    };
    let per_task = n / plan.tasks;
    let store = Arc::new(store);
    harness::run_side(&store, &plan, 0).await?;
    // run_side rounds down to whole tasks; store the rest here.
    for i in (per_task * plan.tasks) as u64..n as u64 {
        store(i).await?;
    }
    Ok(())
}

impl<H: HandStore> Backend<H> {
    /// Gives the first `n` of `users` (round robin) an `openai` key on the
    /// hand-written side, sealed with `cipher`.
    async fn fill_hand(
        &self,
        users: &Arc<Vec<String>>,
        n: usize,
        cipher: &HandCipher,
    ) -> BResult<()> {
        let (h, c, us) = (Arc::clone(&self.hand), cipher.clone(), Arc::clone(users));
        fill(n, move |i| {
            let (h, c, us) = (Arc::clone(&h), c.clone(), Arc::clone(&us));
            async move {
                let u = user_of(&us, i);
                let sealed = c.seal(u, "openai", api_key(i).as_bytes())?;
                h.write(
                    u,
                    "openai",
                    record(sealed, Some(now_ms() + TTL.as_millis() as i64)),
                )
                .await
            }
        })
        .await
    }

    fn plan(&self, sizes: &Sizes, tasks: usize) -> Plan {
        let (ops, batch) = match (self.in_process, tasks) {
            (true, _) => (sizes.in_process_ops, 32),
            (false, 1) => (sizes.server_ops, 1),
            (false, _) => (sizes.server_ops * 4, 1),
        };
        Plan {
            rounds: sizes.rounds,
            ops,
            batch,
            tasks,
        }
    }

    /// Emits the row, or a row naming the error when the comparison failed
    /// (the run goes on with the next row).
    fn emit_result(
        &self,
        out: &mut Vec<Row>,
        operation: &str,
        tasks: usize,
        c: BResult<harness::Comparison>,
    ) {
        match c {
            Ok(c) => crate::emit(out, self.row(operation, tasks, c)),
            Err(e) => crate::emit(
                out,
                Row {
                    backend: self.name.clone(),
                    operation: operation.to_owned(),
                    tasks,
                    result: RowResult::Failed(e.to_string()),
                },
            ),
        }
    }

    fn row(&self, operation: &str, tasks: usize, c: harness::Comparison) -> Row {
        Row {
            backend: self.name.clone(),
            operation: operation.to_owned(),
            tasks,
            result: RowResult::Timing(c),
        }
    }

    /// Every row of this backend, printed as each is done.
    pub(crate) async fn run(&self, sizes: &Sizes, out: &mut Vec<Row>) -> BResult<()> {
        let cipher = HandCipher::new(&KEY_1)?;
        let byok = manager(Arc::clone(&self.storage), 1)?;
        if sizes.wants("rotate") {
            let row = self.rotate(sizes).await?;
            crate::emit(out, row);
        }
        // The users of the hot path, each with a key on both sides.
        let users = Arc::clone(&self.users);
        {
            let (b, us) = (byok.clone(), Arc::clone(&users));
            fill(users.len(), move |i| {
                let (b, us) = (b.clone(), Arc::clone(&us));
                async move {
                    let u = user_of(&us, i);
                    Ok(b.set_key(u, "openai", &api_key(i), TTL).await?)
                }
            })
            .await?;
            self.fill_hand(&users, users.len(), &cipher).await?;
        }
        for tasks in [1, 64] {
            let plan = self.plan(sizes, tasks);
            if sizes.wants("retrieve") {
                let (s, us) = (Arc::clone(&self.storage), Arc::clone(&users));
                let (h, us2) = (Arc::clone(&self.hand), Arc::clone(&users));
                let c = harness::compare(
                    plan,
                    move |i| {
                        let (s, us) = (Arc::clone(&s), Arc::clone(&us));
                        async move {
                            let k = s.retrieve(user_of(&us, i), "openai").await?;
                            k.map(|_| ()).ok_or_else(|| "a key is missing".into())
                        }
                    },
                    move |i| {
                        let (h, us) = (Arc::clone(&h), Arc::clone(&us2));
                        async move {
                            let k = h.read(user_of(&us, i), "openai").await?;
                            k.map(|_| ()).ok_or_else(|| "a key is missing".into())
                        }
                    },
                )
                .await;
                self.emit_result(out, "retrieve", tasks, c);
            }
            if sizes.wants("get_key") {
                let (b, us) = (byok.clone(), Arc::clone(&users));
                let (h, c, us2) = (Arc::clone(&self.hand), cipher.clone(), Arc::clone(&users));
                let cmp = harness::compare(
                    plan,
                    move |i| {
                        let (b, us) = (b.clone(), Arc::clone(&us));
                        async move {
                            let k = b.get_key(user_of(&us, i), "openai").await?;
                            match k {
                                Some(k) if k.expose_secret().len() == 100 => Ok(()),
                                _ => Err("get_key returned no key of 100 bytes".into()),
                            }
                        }
                    },
                    move |i| {
                        let (h, c, us) = (Arc::clone(&h), c.clone(), Arc::clone(&us2));
                        async move {
                            let u = user_of(&us, i);
                            let sealed = h.read(u, "openai").await?.ok_or("a key is missing")?;
                            let key = c.open(u, "openai", &sealed)?;
                            if key.len() == 100 {
                                Ok(())
                            } else {
                                Err("wrong key length".into())
                            }
                        }
                    },
                )
                .await;
                self.emit_result(out, "get_key", tasks, cmp);
            }
            if sizes.wants("store") {
                let value: Arc<Vec<u8>> = Arc::new(cipher.seal("u", "p", &[b'k'; 100])?);
                let (s, us, v) = (
                    Arc::clone(&self.storage),
                    Arc::clone(&users),
                    Arc::clone(&value),
                );
                let (h, us2, v2) = (Arc::clone(&self.hand), Arc::clone(&users), value);
                let c = harness::compare(
                    plan,
                    move |i| {
                        let (s, us, v) = (Arc::clone(&s), Arc::clone(&us), Arc::clone(&v));
                        async move {
                            let expires = chrono::Utc::now()
                                + chrono::Duration::from_std(TTL).map_err(|_| "ttl")?;
                            let key = ApiKey::new(user_of(&us, i), "openai", v.to_vec())?
                                .with_hint(Some("sk-p...xxxx".to_owned()))?
                                .with_expires_at(Some(expires));
                            Ok(s.store(&key).await?)
                        }
                    },
                    move |i| {
                        let (h, us, v) = (Arc::clone(&h), Arc::clone(&us2), Arc::clone(&v2));
                        async move {
                            h.write(
                                user_of(&us, i),
                                "openai",
                                record(v.to_vec(), Some(now_ms() + TTL.as_millis() as i64)),
                            )
                            .await
                        }
                    },
                )
                .await;
                self.emit_result(out, "store", tasks, c);
            }
            if sizes.wants("set_key") {
                let (b, us) = (byok.clone(), Arc::clone(&users));
                let (h, c, us2) = (Arc::clone(&self.hand), cipher.clone(), Arc::clone(&users));
                let key = Arc::new(api_key(7));
                let key2 = Arc::clone(&key);
                let cmp = harness::compare(
                    plan,
                    move |i| {
                        let (b, us, key) = (b.clone(), Arc::clone(&us), Arc::clone(&key));
                        async move { Ok(b.set_key(user_of(&us, i), "openai", &key, TTL).await?) }
                    },
                    move |i| {
                        let (h, c, us, key) = (
                            Arc::clone(&h),
                            c.clone(),
                            Arc::clone(&us2),
                            Arc::clone(&key2),
                        );
                        async move {
                            let u = user_of(&us, i);
                            let sealed = c.seal(u, "openai", key.as_bytes())?;
                            let mut r = record(sealed, Some(now_ms() + TTL.as_millis() as i64));
                            r.hint = Some(format!("{}...{}", &key[..4], &key[key.len() - 4..]));
                            h.write(u, "openai", r).await
                        }
                    },
                )
                .await;
                self.emit_result(out, "set_key", tasks, cmp);
            }
        }
        if sizes.loads_others() {
            self.scaling_rows(sizes, 0, out).await?;
            self.load_others(sizes).await?;
            self.scaling_rows(sizes, sizes.others, out).await?;
            if sizes.wants("purge") {
                let row = self.purge(sizes).await?;
                crate::emit(out, row);
            }
        }
        Ok(())
    }

    /// `list_providers` of a user with four keys, and `clear_all` of users
    /// with four keys each, with `others` other users' keys in the store.
    async fn scaling_rows(&self, sizes: &Sizes, others: usize, out: &mut Vec<Row>) -> BResult<()> {
        let plan = Plan {
            tasks: 1,
            ..self.plan(sizes, 1)
        };
        let has_hand = self.hand.has_index();
        let label = |op: &str| format!("{op}, {others} other keys");
        if sizes.wants("list") {
            let listers: Arc<Vec<String>> = Arc::new(
                (0..16)
                    .map(|i| format!("{}lister-{others}-{i}", sizes.namespace))
                    .collect(),
            );
            self.give_four_keys(&listers, has_hand).await?;
            let (s, ls) = (Arc::clone(&self.storage), Arc::clone(&listers));
            let byok_list = move |i| {
                let (s, ls) = (Arc::clone(&s), Arc::clone(&ls));
                async move {
                    let n = s.list_providers(user_of(&ls, i)).await?.len();
                    if n == 4 {
                        Ok(())
                    } else {
                        Err(format!("listed {n} keys, not 4").into())
                    }
                }
            };
            let (h, ls2) = (Arc::clone(&self.hand), Arc::clone(&listers));
            let hand_list = move |i| {
                let (h, ls) = (Arc::clone(&h), Arc::clone(&ls2));
                async move {
                    match h.list(user_of(&ls, i)).await? {
                        Some(l) if l.len() == 4 => Ok(()),
                        _ => Err("the hand-written list is wrong".into()),
                    }
                }
            };
            let c = if has_hand {
                harness::compare(plan, byok_list, hand_list).await?
            } else {
                let mut c = harness::compare(plan, byok_list.clone(), byok_list).await?;
                c.hand = None;
                c.ratios.clear();
                c
            };
            crate::emit(out, self.row(&label("list_providers"), 1, c));
            self.clear_users(&listers, has_hand).await?;
        }
        if sizes.wants("clear") {
            // Users made before each round, untimed; each op clears one.
            let per_round = (plan.ops / plan.batch.max(1)).clamp(8, 400);
            let rounds = sizes.rounds;
            let mut c = harness::Comparison {
                byok: harness::Side::default(),
                hand: has_hand.then(harness::Side::default),
                ratios: Vec::new(),
            };
            for round in 0..rounds {
                let victims: Arc<Vec<String>> = Arc::new(
                    (0..per_round)
                        .map(|i| format!("{}clear-{others}-{round}-{i}", sizes.namespace))
                        .collect(),
                );
                self.give_four_keys(&victims, has_hand).await?;
                let start = std::time::Instant::now();
                let mut samples = Vec::with_capacity(per_round);
                for v in victims.iter() {
                    let t = std::time::Instant::now();
                    let n = self.storage.clear_all(v).await?;
                    samples.push(t.elapsed().as_nanos() as f64);
                    if n != 4 {
                        return Err(format!("clear_all removed {n} keys, not 4").into());
                    }
                }
                let a = start.elapsed().as_nanos() as f64 / per_round as f64;
                c.byok.round_ns.push(a);
                c.byok.samples.extend(samples);
                if let Some(side) = c.hand.as_mut() {
                    let start = std::time::Instant::now();
                    let mut samples = Vec::with_capacity(per_round);
                    for v in victims.iter() {
                        let t = std::time::Instant::now();
                        let n = self.hand.clear(v).await?;
                        samples.push(t.elapsed().as_nanos() as f64);
                        if n != Some(4) {
                            return Err("the hand-written clear removed the wrong keys".into());
                        }
                    }
                    let b = start.elapsed().as_nanos() as f64 / per_round as f64;
                    side.round_ns.push(b);
                    side.samples.extend(samples);
                    c.ratios.push(a / b);
                }
            }
            crate::emit(out, self.row(&label("clear_all"), 1, c));
        }
        Ok(())
    }

    async fn give_four_keys(&self, users: &Arc<Vec<String>>, hand: bool) -> BResult<()> {
        let value = HandCipher::new(&KEY_1)?.seal("u", "p", b"k")?;
        let n = users.len() * PROVIDERS.len();
        let (s, us, v) = (Arc::clone(&self.storage), Arc::clone(users), value.clone());
        fill(n, move |i| {
            let (s, us, v) = (Arc::clone(&s), Arc::clone(&us), v.clone());
            async move {
                let u = &us[i as usize / PROVIDERS.len()];
                let p = PROVIDERS[i as usize % PROVIDERS.len()];
                Ok(s.store(&ApiKey::new(u.as_str(), p, v)?).await?)
            }
        })
        .await?;
        if hand {
            let (h, us) = (Arc::clone(&self.hand), Arc::clone(users));
            fill(n, move |i| {
                let (h, us, v) = (Arc::clone(&h), Arc::clone(&us), value.clone());
                async move {
                    let u = &us[i as usize / PROVIDERS.len()];
                    let p = PROVIDERS[i as usize % PROVIDERS.len()];
                    h.write(u, p, record(v, None)).await
                }
            })
            .await?;
        }
        Ok(())
    }

    async fn clear_users(&self, users: &[String], hand: bool) -> BResult<()> {
        for u in users {
            self.storage.clear_all(u).await?;
            if hand {
                self.hand.clear(u).await?;
            }
        }
        Ok(())
    }

    /// `sizes.others` keys of other users, one per user; a tenth of them
    /// expire one second after they are written.
    async fn load_others(&self, sizes: &Sizes) -> BResult<()> {
        let has_hand = self.hand.has_index();
        let value = Arc::new(HandCipher::new(&KEY_1)?.seal("u", "p", &[b'k'; 100])?);
        let ns = Arc::new(sizes.namespace.clone());
        let expiring = |i: u64| i.is_multiple_of(10);
        let (s, v, n) = (
            Arc::clone(&self.storage),
            Arc::clone(&value),
            Arc::clone(&ns),
        );
        let started = std::time::Instant::now();
        if let Some(bulk) = self.bulk.as_ref().filter(|_| has_hand) {
            bulk.load(&ns, sizes.others, &value, false).await?;
            eprintln!(
                "  {}: loaded {} other keys on each side in one statement each in {}",
                self.name,
                sizes.others,
                harness::fmt_duration(started.elapsed())
            );
            return Ok(());
        }
        fill(sizes.others, move |i| {
            let (s, v, n) = (Arc::clone(&s), Arc::clone(&v), Arc::clone(&n));
            async move {
                let expires = if expiring(i) {
                    chrono::Utc::now() + chrono::Duration::seconds(1)
                } else {
                    chrono::Utc::now() + chrono::Duration::days(1)
                };
                let key = ApiKey::new(format!("{n}other-{i}"), "openai", v.to_vec())?
                    .with_expires_at(Some(expires));
                Ok(s.store(&key).await?)
            }
        })
        .await?;
        if has_hand {
            let (h, n) = (Arc::clone(&self.hand), Arc::clone(&ns));
            fill(sizes.others, move |i| {
                let (h, v, n) = (Arc::clone(&h), Arc::clone(&value), Arc::clone(&n));
                async move {
                    let ttl = if expiring(i) { 1_000 } else { 86_400_000 };
                    h.write(
                        &format!("{n}other-{i}"),
                        "openai",
                        record(v.to_vec(), Some(now_ms() + ttl)),
                    )
                    .await
                }
            })
            .await?;
        }
        eprintln!(
            "  {}: loaded {} other keys on each side in {}",
            self.name,
            sizes.others,
            harness::fmt_duration(started.elapsed())
        );
        Ok(())
    }

    /// One `purge_expired` over the expired tenth of the other keys.
    async fn purge(&self, sizes: &Sizes) -> BResult<Row> {
        // Every expiring key expires one second after it was written.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let expected = sizes.others.div_ceil(10) as u64;
        let has_hand = self.hand.has_index();
        let storage = Arc::clone(&self.storage);
        let hand = Arc::clone(&self.hand);
        let self_expiring = self.self_expiring;
        // Where both tables can be refilled in one statement each, every
        // round after the first writes `expected` more expiring keys and
        // waits for them to expire; otherwise there is one round.
        let bulk = self.bulk.clone().filter(|_| has_hand);
        let rounds = if bulk.is_some() { sizes.rounds } else { 1 };
        let value = Arc::new(HandCipher::new(&KEY_1)?.seal("u", "p", &[b'k'; 100])?);
        let ns = sizes.namespace.clone();
        let c = harness::compare_once(
            rounds,
            |round| {
                let (bulk, value, ns) = (bulk.clone(), Arc::clone(&value), ns.clone());
                async move {
                    if let (Some(bulk), true) = (bulk, round > 0) {
                        let ns = format!("{ns}purge{round}-");
                        bulk.load(&ns, expected as usize, &value, true).await?;
                        tokio::time::sleep(Duration::from_millis(1_100)).await;
                    }
                    Ok(())
                }
            },
            |_| {
                let s = Arc::clone(&storage);
                async move {
                    let n = s.purge_expired().await?;
                    // Redis expires keys by itself; byok's purge then only
                    // tidies what the server has not removed yet.
                    if n == expected || self_expiring {
                        Ok(())
                    } else {
                        Err(format!("purged {n} keys, expected {expected}").into())
                    }
                }
            },
            has_hand.then_some(|_| {
                let h = Arc::clone(&hand);
                async move {
                    let n = h.purge().await?;
                    if n == Some(expected) {
                        Ok(())
                    } else {
                        Err(format!("hand-written purge removed {n:?}, expected {expected}").into())
                    }
                }
            }),
        )
        .await?;
        Ok(self.row(
            &format!("purge_expired, {expected} of {} keys", sizes.others),
            1,
            c,
        ))
    }

    /// `rotate` over `sizes.rotate_keys` keys, from key 1 to key 2 and
    /// back, against a hand-written walk that decrypts, encrypts and swaps.
    async fn rotate(&self, sizes: &Sizes) -> BResult<Row> {
        let n = sizes.rotate_keys;
        let users: Arc<Vec<String>> = Arc::new(
            (0..n)
                .map(|i| format!("{}rot-{i}", sizes.namespace))
                .collect(),
        );
        let has_hand = self.hand.has_index();
        let one = manager(Arc::clone(&self.storage), 1)?;
        let two = manager(Arc::clone(&self.storage), 2)?;
        let (b, us) = (one.clone(), Arc::clone(&users));
        fill(n, move |i| {
            let (b, us) = (b.clone(), Arc::clone(&us));
            async move {
                Ok(b.set_key(&us[i as usize], "openai", &api_key(i), TTL)
                    .await?)
            }
        })
        .await?;
        let ciphers = [HandCipher::new(&KEY_1)?, HandCipher::new(&KEY_2)?];
        if has_hand {
            self.fill_hand(&users, n, &ciphers[0]).await?;
        }
        let rounds = sizes.rounds.clamp(2, 3);
        let hand = Arc::clone(&self.hand);
        let c = harness::compare_once(
            rounds,
            |_| async { Ok(()) },
            |round| {
                let m = if round.is_multiple_of(2) {
                    two.clone()
                } else {
                    one.clone()
                };
                async move {
                    let report = m.rotate().await?;
                    let moved: u64 = report.rotated.values().sum();
                    if moved == n as u64 && report.is_complete() {
                        Ok(())
                    } else {
                        Err(format!("rotate moved {moved} of {n} keys").into())
                    }
                }
            },
            has_hand.then_some(|round: usize| {
                let h = Arc::clone(&hand);
                let (from, to) = if round.is_multiple_of(2) {
                    (ciphers[0].clone(), ciphers[1].clone())
                } else {
                    (ciphers[1].clone(), ciphers[0].clone())
                };
                async move {
                    let mut moved = 0;
                    for (u, p, old) in h.all().await?.unwrap_or_default() {
                        let plain = from.open(&u, &p, &old)?;
                        let new = to.seal(&u, &p, plain.as_bytes())?;
                        if h.swap(&u, &p, &old, &new).await? {
                            moved += 1;
                        }
                    }
                    if moved == n {
                        Ok(())
                    } else {
                        Err(format!("hand-written rotation moved {moved} of {n}").into())
                    }
                }
            }),
        )
        .await?;
        self.clear_users(&users, has_hand).await?;
        Ok(self.row(&format!("rotate, {n} keys"), 1, c))
    }
}
