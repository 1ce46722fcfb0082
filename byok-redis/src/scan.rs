//! `scan`: the walk over buckets, users and providers.

use std::collections::VecDeque;

use byok_core::{ApiKey, Cursor, Result, ScanPage, validate};
use chrono::Utc;

use crate::connection::RedisStorage;
use crate::error::corrupt;
use crate::layout::{BUCKETS, Position};

/// How many round trips one `scan` call makes at most before it returns a
/// (possibly short) page.
const SCAN_ROUND_TRIPS: usize = 256;
/// How many empty buckets `scan` probes at once at most.
const SCAN_PROBE_MAX: u16 = 32;
/// How many users one round trip of `scan` reads from a bucket.
const SCAN_USER_BATCH: usize = 64;

impl RedisStorage {
    /// One page of the walk; see the [crate docs](crate#scan).
    pub(crate) async fn scan_page(
        &self,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<ScanPage> {
        validate::page_size(limit)?;
        let mut pos = match cursor {
            Some(c) => Position::from_cursor(c)?,
            None => Position::START,
        };
        let mut keys: Vec<ApiKey> = Vec::new();
        // Users of the current bucket after `pos`, read ahead in one batch.
        let mut next_users: VecDeque<String> = VecDeque::new();
        let mut trips = 0usize;
        let mut probe: u16 = 1;
        let now = Utc::now();
        loop {
            if pos.bucket >= BUCKETS {
                return Ok(ScanPage { keys, next: None });
            }
            if keys.len() == limit || trips >= SCAN_ROUND_TRIPS {
                return Ok(ScanPage {
                    keys,
                    next: Some(pos.to_cursor()),
                });
            }
            match pos.after.clone() {
                Some((user, after_provider)) => {
                    let need = limit - keys.len();
                    let mut read = redis::cmd("ZRANGEBYLEX");
                    read.arg(self.layout.user_index(&user))
                        .arg(exclusive_after(&after_provider))
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(need);
                    let raw: Vec<Vec<u8>> = self.query("scanning failed", &read).await?;
                    trips += 1;
                    let providers = raw
                        .into_iter()
                        .map(|p| {
                            String::from_utf8(p)
                                .map_err(|_| corrupt("a provider index holds non-UTF-8"))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let found = self.read_keys(&user, &providers).await?;
                    if !providers.is_empty() {
                        trips += 1;
                    }
                    keys.extend(
                        found
                            .into_iter()
                            .flatten()
                            .filter(|k| !k.is_expired_at(now)),
                    );
                    if providers.len() == need {
                        if let Some(last) = providers.last() {
                            pos.after = Some((user, last.clone()));
                        }
                        continue;
                    }
                    // This user is done: on to the next one of the bucket.
                    if next_users.is_empty() {
                        next_users = self.users_after(pos.bucket, Some(&user)).await?;
                        trips += 1;
                    }
                    match next_users.pop_front() {
                        Some(u) => pos.after = Some((u, String::new())),
                        None => pos = next_bucket(pos.bucket),
                    }
                }
                None => {
                    // The start of a bucket: read the first users of the next
                    // `probe` buckets at once, doubling `probe` while they
                    // come back empty, so a sparse store costs few round trips.
                    let end = pos.bucket.saturating_add(probe).min(BUCKETS);
                    let firsts = futures::future::try_join_all(
                        (pos.bucket..end).map(|b| self.users_after(b, None)),
                    )
                    .await?;
                    trips += 1;
                    let found = (pos.bucket..end)
                        .zip(firsts)
                        .find_map(|(b, mut users)| users.pop_front().map(|u| (b, u, users)));
                    match found {
                        Some((bucket, first, rest)) => {
                            pos = Position {
                                bucket,
                                after: Some((first, String::new())),
                            };
                            next_users = rest;
                            probe = 1;
                        }
                        None => {
                            pos = Position {
                                bucket: end,
                                after: None,
                            };
                            probe = (probe * 2).min(SCAN_PROBE_MAX);
                        }
                    }
                }
            }
        }
    }

    /// Up to [`SCAN_USER_BATCH`] users of a bucket after `after`, in byte order.
    async fn users_after(&self, bucket: u16, after: Option<&str>) -> Result<VecDeque<String>> {
        let mut read = redis::cmd("ZRANGEBYLEX");
        read.arg(self.layout.bucket_users(bucket))
            .arg(exclusive_after(after.unwrap_or("")))
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(SCAN_USER_BATCH);
        let raw: Vec<Vec<u8>> = self.query("scanning failed", &read).await?;
        raw.into_iter()
            .map(|u| {
                String::from_utf8(u)
                    .ok()
                    .filter(|u| validate::user_id(u).is_ok())
                    .ok_or_else(|| corrupt("a bucket's user set holds an invalid user id"))
            })
            .collect()
    }
}

/// The `ZRANGEBYLEX` bound just after `member` (`(` and the member: every
/// member is non-empty, so `(` alone starts at the first).
fn exclusive_after(member: &str) -> Vec<u8> {
    let mut bound = Vec::with_capacity(member.len() + 1);
    bound.push(b'(');
    bound.extend_from_slice(member.as_bytes());
    bound
}

fn next_bucket(bucket: u16) -> Position {
    Position {
        bucket: bucket + 1,
        after: None,
    }
}
