//! `byok test`: ask the providers whether stored keys work.

use std::time::Duration;

use byok::KeyStorage as _;
use byok::check::{CheckClient, CheckError, CheckPolicy, Checker, HttpProber, KeyCheck, Prober};
use byok::secrecy::SecretString;
use clap::Args;
use serde::Serialize;

use crate::context::{self, Schema, Store};
use crate::error::{CliError, CliResult, Exit};
use crate::opt::{KeyringOpts, StoreOpts};

/// `byok test`.
#[derive(Debug, Args)]
pub struct TestOpts {
    /// The provider whose key to check, such as `openai`.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub provider: Option<String>,
    /// The user whose key to check (with --all: only this user's keys).
    #[arg(long, required_unless_present = "all")]
    pub user: Option<String>,
    /// Check every stored key (of --user, or of every user).
    #[arg(long)]
    pub all: bool,
    /// Ask this base URL instead of the provider's (the part before
    /// `/models`); for a provider byok has no check of, the URL of an
    /// OpenAI-compatible API; for `azure-openai`, the resource's endpoint.
    #[arg(long, value_name = "URL", conflicts_with = "all")]
    pub base_url: Option<String>,
    /// Ask MODEL for one token instead of making the free call: sees the
    /// quota where the free call cannot, and COSTS A REQUEST at the
    /// provider.
    #[arg(long, value_name = "MODEL", conflicts_with = "all")]
    pub model: Option<String>,
    /// How long to wait for each provider: `10s`, `1500ms`.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
    /// Allow a plain-http base URL (the key then crosses the network in
    /// clear text).
    #[arg(long)]
    pub allow_http: bool,
    /// Allow loopback and private addresses (a gateway on this network).
    #[arg(long)]
    pub allow_private_addresses: bool,
}

/// The exit code of a check: 0 when the provider accepted the key.
pub(crate) fn exit_of(check: &KeyCheck) -> Option<Exit> {
    match check {
        KeyCheck::Valid(_) => None,
        KeyCheck::Invalid(_) => Some(Exit::KeyInvalid),
        KeyCheck::OutOfCredit(_) => Some(Exit::KeyOutOfCredit),
        KeyCheck::RateLimited { .. } => Some(Exit::KeyRateLimited),
        KeyCheck::RegionBlocked(_) => Some(Exit::KeyRegionBlocked),
        KeyCheck::Forbidden(_) => Some(Exit::KeyForbidden),
        KeyCheck::Unavailable { .. } => Some(Exit::ProviderUnavailable),
        _ => Some(Exit::KeyCheckUnknown),
    }
}

/// One line of the report.
#[derive(Debug, Serialize)]
struct Reported {
    user: String,
    provider: String,
    /// `valid`, `invalid`, …, or `skipped` when byok has no check of the
    /// provider.
    outcome: &'static str,
    /// In plain words.
    message: String,
    /// What the provider told, as `KeyCheck`'s JSON form.
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<KeyCheck>,
}

fn policy(opts: &TestOpts) -> CliResult<CheckPolicy> {
    let timeout: Duration = humantime::parse_duration(&opts.timeout).map_err(|e| {
        CliError::usage(format!(
            "--timeout {:?} is not a duration ({e}); try 10s",
            opts.timeout
        ))
    })?;
    Ok(CheckPolicy::default()
        .allow_http(opts.allow_http)
        .allow_private_addresses(opts.allow_private_addresses)
        .timeout(timeout)
        .connect_timeout(timeout.min(byok::check::client::DEFAULT_CONNECT_TIMEOUT)))
}

fn check_failed(e: &CheckError, what: &str) -> CliError {
    match e {
        CheckError::Byok(b) => CliError::from_byok(what, b, None),
        CheckError::Client(_) => CliError::new(Exit::Config, format!("{what}: {e}")),
        _ => CliError::usage(format!("{what}: {e}")),
    }
}

/// The checker, with the one provider of --base-url pointed there.
fn checker(opts: &TestOpts, client: &CheckClient) -> CliResult<Checker> {
    let mut checker = Checker::builtin(client);
    if let (Some(url), Some(provider)) = (&opts.base_url, &opts.provider) {
        let fail = |e: CheckError| check_failed(&e, &format!("--base-url {url:?}"));
        let prober = match (provider.as_str(), checker.prober(provider)) {
            ("azure-openai", _) => HttpProber::azure_openai(client, url).map_err(fail)?,
            (_, Ok(p)) => {
                let builtin = builtin_named(client, p.provider()).ok_or_else(|| {
                    CliError::usage(format!("{provider} has no base URL to change"))
                })?;
                builtin
                    .with_base_url(url)
                    .and_then(|p| p.with_provider_id(provider))
                    .map_err(fail)?
            }
            (_, Err(_)) => HttpProber::openai_compatible(client, provider, url).map_err(fail)?,
        };
        checker = checker.register_as(provider, prober);
    }
    Ok(checker)
}

fn builtin_named(client: &CheckClient, id: &str) -> Option<HttpProber> {
    Some(match id {
        "openai" => HttpProber::openai(client),
        "anthropic" => HttpProber::anthropic(client),
        "google" => HttpProber::gemini(client),
        "mistral" => HttpProber::mistral(client),
        "groq" => HttpProber::groq(client),
        "openrouter" => HttpProber::openrouter(client),
        "deepseek" => HttpProber::deepseek(client),
        "xai" => HttpProber::xai(client),
        "cohere" => HttpProber::cohere(client),
        _ => return None,
    })
}

/// `byok test`.
pub(crate) async fn run(
    opts: &TestOpts,
    store: &StoreOpts,
    ring: &KeyringOpts,
    json: bool,
) -> CliResult {
    let policy = policy(opts)?;
    let keyring = context::keyring(ring)?;
    let client = CheckClient::new(policy).map_err(|e| check_failed(&e, "key checks"))?;
    let checker = checker(opts, &client)?;
    let store = Store::open(store, Schema::AsItIs).await?;
    let byok = context::manager(&store, keyring)?;

    let reports = check_slots(opts, &store, &byok, &checker).await?;

    if json {
        if opts.all {
            context::print_json(&reports)?;
        } else if let Some(r) = reports.first() {
            context::print_json(r)?;
        }
    } else if reports.is_empty() {
        println!("no keys to check");
    } else {
        for r in &reports {
            println!("{} {}: {} ({})", r.user, r.provider, r.outcome, r.message);
        }
    }
    match worst(&reports) {
        None => Ok(()),
        Some((exit, r)) => Err(CliError::new(
            exit,
            format!("{}'s {} key: {}", r.user, r.provider, r.message),
        )),
    }
}

/// Checks the keys `opts` names and keeps each result with its key.
async fn check_slots(
    opts: &TestOpts,
    store: &Store,
    byok: &byok::Byok,
    checker: &Checker,
) -> CliResult<Vec<Reported>> {
    let slots: Vec<(String, String)> = match (&opts.provider, &opts.user) {
        (Some(provider), Some(user)) if !opts.all => vec![(user.clone(), provider.clone())],
        _ => every_slot(store, opts.user.as_deref()).await?,
    };
    let mut reports = Vec::new();
    for (user, provider) in slots {
        let what = format!("checking {user}'s {provider} key");
        if let Err(e) = checker.prober(&provider) {
            if !opts.all {
                return Err(check_failed(&e, &what));
            }
            {
                reports.push(Reported {
                    message: e.to_string(),
                    user,
                    provider,
                    outcome: "skipped",
                    check: None,
                });
                continue;
            }
        }
        let key: SecretString = byok
            .require_key(&user, &provider)
            .await
            .map_err(store.fail(&what))?;
        let check = match &opts.model {
            Some(model) => checker.check_with_completion(&provider, &key, model).await,
            None => checker.check(&provider, &key).await,
        }
        .map_err(|e| check_failed(&e, &what))?;
        drop(key);
        keep(byok, &user, &provider, &check).await;
        reports.push(Reported {
            message: check.to_string(),
            outcome: check.outcome(),
            user,
            provider,
            check: Some(check),
        });
    }
    Ok(reports)
}

/// Keeps `check` with the saved key it was made of, for `byok list` and
/// the settings page to show. A check that cannot be kept is said on
/// stderr; the check itself stands.
async fn keep(byok: &byok::Byok, user: &str, provider: &str, check: &KeyCheck) {
    let kept = match check.record() {
        Ok(record) => byok
            .record_check(user, provider, &record)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = kept {
        eprintln!(
            "warning: the result of checking {}'s {} key was not kept: {e}",
            byok::validate::shown_id(user),
            byok::validate::shown_id(provider)
        );
    }
}

/// The report of the lowest exit code: a wrong key before a busy provider.
fn worst(reports: &[Reported]) -> Option<(Exit, &Reported)> {
    reports
        .iter()
        .filter_map(|r| r.check.as_ref().and_then(exit_of).map(|e| (e, r)))
        .min_by_key(|(e, _)| *e as u8)
}

/// Every (user, provider) of the store, or of one user.
async fn every_slot(store: &Store, user: Option<&str>) -> CliResult<Vec<(String, String)>> {
    let what = "listing the keys failed";
    if let Some(user) = user {
        let providers = store
            .storage
            .list_providers(user)
            .await
            .map_err(store.fail(what))?;
        return Ok(providers
            .into_iter()
            .map(|p| (user.to_owned(), p))
            .collect());
    }
    // A walk returns live keys only.
    store
        .map_keys(500, what, |k| {
            (k.user_id().to_owned(), k.provider().to_owned())
        })
        .await
}

#[cfg(test)]
mod tests {
    use byok::check::{Detail, KeyInfo, Unavailable};

    use super::*;

    fn reported(provider: &str, check: Option<KeyCheck>) -> Reported {
        Reported {
            user: "alice".into(),
            provider: provider.into(),
            outcome: check.as_ref().map_or("skipped", KeyCheck::outcome),
            message: String::new(),
            check,
        }
    }

    use byok::Ttl;
    use byok_testkit::provider_stub::{ProviderStub, Scenario, StubProvider, answer};

    fn opts(provider: Option<&str>, user: Option<&str>, all: bool) -> TestOpts {
        TestOpts {
            provider: provider.map(str::to_owned),
            user: user.map(str::to_owned),
            all,
            base_url: None,
            model: None,
            timeout: "5s".into(),
            allow_http: true,
            allow_private_addresses: true,
        }
    }

    /// A memory store with alice's OpenAI key, a manager, and a checker
    /// that asks the stub for OpenAI.
    async fn setup(stub: &ProviderStub) -> (Store, byok::Byok, Checker) {
        let store = Store::open_url("memory:", "t", "p", Schema::AsItIs)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let keyring = byok::Keyring::new(1, byok::MasterKey::generate());
        let byok = context::manager(&store, keyring).unwrap_or_else(|e| panic!("{e}"));
        byok.set_key("alice", "openai", "sk-proj-0123456789abcdef", Ttl::Never)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let client =
            CheckClient::new(policy(&opts(None, None, true)).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        let prober = HttpProber::openai(&client)
            .with_base_url(&format!("{}/v1", stub.url()))
            .unwrap_or_else(|e| panic!("{e}"));
        (store, byok, Checker::new().register(prober))
    }

    #[tokio::test]
    async fn a_test_of_a_saved_key_keeps_its_result() {
        let stub = ProviderStub::start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (store, byok, checker) = setup(&stub).await;
        assert_eq!(byok.last_check("alice", "openai").await.ok(), Some(None));
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::InvalidKey));
        let one = opts(Some("openai"), Some("alice"), false);
        let reports = check_slots(&one, &store, &byok, &checker)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].outcome, "invalid");
        let kept = byok
            .last_check("alice", "openai")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("nothing kept"));
        assert_eq!(kept.outcome(), "invalid");
        assert_eq!(kept.summary(), "The provider does not accept this key.");

        // --all keeps every result too, an outage's as well.
        stub.set_answer(answer(StubProvider::OpenAi, Scenario::ServerError));
        let reports = check_slots(&opts(None, None, true), &store, &byok, &checker)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reports.len(), 1);
        let kept = byok.last_check("alice", "openai").await.ok().flatten();
        assert_eq!(
            kept.map(|k| k.outcome().to_owned()).as_deref(),
            Some("unavailable")
        );

        // A key byok has no check of is skipped, and nothing is kept.
        byok.set_key("alice", "nocheck", "sk-some-other-key-0123", Ttl::Never)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let reports = check_slots(&opts(None, Some("alice"), true), &store, &byok, &checker)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reports.len(), 2);
        assert!(reports.iter().any(|r| r.outcome == "skipped"));
        assert_eq!(byok.last_check("alice", "nocheck").await.ok(), Some(None));
    }

    #[test]
    fn the_lowest_code_wins_and_valid_or_skipped_keys_pass() {
        let unavailable = KeyCheck::Unavailable {
            reason: Unavailable::Timeout,
            detail: Detail::default(),
        };
        let reports = [
            reported("a", Some(unavailable)),
            reported("b", Some(KeyCheck::Invalid(Detail::default()))),
            reported("c", Some(KeyCheck::Valid(KeyInfo::default()))),
            reported("d", None),
        ];
        let (exit, r) = worst(&reports).unwrap_or_else(|| panic!("no worst"));
        assert_eq!((exit, r.provider.as_str()), (Exit::KeyInvalid, "b"));
        assert!(worst(&reports[2..]).is_none());
    }
}
