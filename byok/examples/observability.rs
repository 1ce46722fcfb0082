#![allow(clippy::print_stdout, reason = "an example prints what it does")]

//! The spans and metrics of one `get_key`: a `byok.manager` span around a
//! `byok.storage` span, printed as they close, and (with the `metrics`
//! feature) the counters and histograms a recorder receives.
//!
//! ```text
//! cargo run --example observability --features metrics
//! ```

use std::time::Duration;

use byok::{Byok, ByokConfig, Keyring, MasterKey, Ttl};

#[cfg(feature = "metrics")]
#[path = "../tests/support/metrics.rs"]
mod recorder;
use tracing_subscriber::fmt::format::FmtSpan;

#[tokio::main(flavor = "current_thread")]
async fn main() -> byok::Result<()> {
    // Spans of byok are INFO (manager) and DEBUG (storage); print each as it
    // closes, with its fields.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();
    // In an application: a Prometheus exporter, for instance.
    #[cfg(feature = "metrics")]
    let recorder = {
        let recorder = recorder::Capture::default();
        metrics::set_global_recorder(recorder.clone())
            .map_err(|_| byok::ConfigError::new("a metrics recorder is already installed"))?;
        recorder
    };

    // `connect` wraps the store in an ObservedStorage named after its backend.
    let storage = byok::connect("memory:").await?;
    let config = ByokConfig::for_tests();
    let byok = Byok::new(storage, Keyring::new(1, MasterKey::generate()), config)?;
    // A TTL chosen on purpose: the key lives for 30 days.
    let ttl = Ttl::After(Duration::from_secs(30 * 24 * 3600));
    byok.set_key("alice", "openai", "sk-proj-observability-0123", ttl)
        .await?;

    println!("--- one get_key:");
    byok.get_key("alice", "openai").await?;

    #[cfg(feature = "metrics")]
    {
        println!("--- metrics recorded so far:");
        for (metric, value) in recorder.snapshot() {
            println!("{metric} {value:?}");
        }
    }
    Ok(())
}
