//! Redis helpers of the tests: a test's key prefix removed when the test
//! ends, also when it fails.

use byok::StoreAdmin as _;
use byok_testkit::services::CleanupOnDrop;

/// Destroys the Redis store under `prefix` at `url` on drop (a
/// `TieredStorage`'s copies and generations expire by themselves, but not
/// before a check for keys left behind runs).
pub(crate) fn destroyed_on_drop(url: &str, prefix: &str) -> CleanupOnDrop {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    CleanupOnDrop::new(format!("the Redis keys under {prefix}"), || async move {
        let store = byok::RedisStorage::builder(url)
            .prefix(prefix)
            .open()
            .await
            .map_err(|e| e.to_string())?;
        store.destroy().await.map_err(|e| e.to_string())
    })
}
