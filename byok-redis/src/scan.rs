//! `scan`: the walk over buckets, users and providers.

use std::collections::VecDeque;
use std::ops::Bound;

use byok_core::{ApiKey, Cursor, Result, ScanPage, validate};

use crate::connection::RedisStorage;
use crate::error::corrupt;
use crate::layout::{BUCKETS, Position};
use crate::record::{self, now_millis};
use crate::storage::provider_of;

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
        let now = now_millis();
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
                    // The whole hash is read: a user has few keys, and a
                    // hash cannot be read from a field on in order.
                    let records = self.user_records(&user).await?;
                    trips += 1;
                    let after = (
                        Bound::Excluded(after_provider.into_bytes()),
                        Bound::Unbounded,
                    );
                    let mut rest = records.range::<Vec<u8>, _>(after);
                    let mut last = None;
                    for (field, stored) in rest.by_ref().take(need) {
                        let provider = provider_of(field.clone())?;
                        if !record::is_expired_at(stored, now)? {
                            keys.push(record::decode(&user, &provider, stored)?);
                        }
                        last = Some(provider);
                    }
                    if rest.next().is_some() {
                        if let Some(last) = last {
                            pos.after = Some((user, last));
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
    pub(crate) async fn users_after(
        &self,
        bucket: u16,
        after: Option<&str>,
    ) -> Result<VecDeque<String>> {
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
                    .filter(|u| validate::stored_user_id(u).is_ok())
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
