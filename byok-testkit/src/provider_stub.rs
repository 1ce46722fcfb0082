//! A stub LLM provider: a real HTTP server on loopback (plain or TLS) that
//! answers key checks as each provider documents, and records every
//! request it receives.
//!
//! [`ProviderStub`] listens on a free `127.0.0.1` port and answers every
//! request with the [`StubAnswer`] it was last given; [`answer`] holds the
//! answers of each [`StubProvider`] for each [`Scenario`] (a valid key, an
//! invalid one, no credit, a rate limit with `Retry-After`, a region block,
//! a server error, a slow answer, an oversized body), in that provider's
//! documented error shape. Tests then read [`ProviderStub::requests`] to
//! assert the exact method, path and headers a probe sent, and that the
//! key went in the right header only.
//!
//! Every connection gets one answer and is closed (`Connection: close`).
//!
//! ```
//! use byok_testkit::provider_stub::{answer, ProviderStub, Scenario, StubProvider};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let stub = ProviderStub::start().await?;
//! stub.set_answer(answer(StubProvider::OpenAi, Scenario::InvalidKey));
//!
//! let mut socket = tokio::net::TcpStream::connect(stub.addr()).await?;
//! socket
//!     .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n\r\n")
//!     .await?;
//! let mut reply = String::new();
//! socket.read_to_string(&mut reply).await?;
//! assert!(reply.starts_with("HTTP/1.1 401 "));
//! assert!(reply.contains("invalid_api_key"));
//!
//! let seen = &stub.requests()[0];
//! assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/v1/models"));
//! assert_eq!(seen.header("authorization"), Some("Bearer sk-test"));
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The most bytes of a request the stub reads: heads and bodies of key
/// checks are small.
const MAX_REQUEST: usize = 64 * 1024;

/// How long [`Scenario::Slow`] waits before answering: far longer than any
/// timeout a test sets.
pub const SLOW: Duration = Duration::from_secs(5);

/// The size of the body of [`Scenario::Oversized`]: 2 MiB, twice the
/// default cap of a check.
pub const OVERSIZED: usize = 2 << 20;

/// The `Retry-After` of every [`Scenario::RateLimited`] answer that has
/// one, in seconds (Gemini's is in its body: 27 s).
pub const RETRY_AFTER_SECS: u64 = 20;

/// What the stub answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubAnswer {
    /// The status.
    pub status: u16,
    /// Headers beside `Content-Type`, `Content-Length` and `Connection`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// How long to wait before answering.
    pub delay: Duration,
    /// Whether to send `Content-Length` (without it, the body ends when the
    /// connection closes, and its size is known only by reading it).
    pub content_length: bool,
}

impl StubAnswer {
    /// A JSON answer.
    pub fn json(status: u16, body: &str) -> Self {
        StubAnswer {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
            content_length: true,
        }
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A request as the stub received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method, such as `GET`.
    pub method: String,
    /// The request target: path and query, as sent.
    pub path: String,
    /// The headers in the order received, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The value of the first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The names of the headers whose value contains `needle`, and
    /// `"path"` or `"body"` when those do: where a secret went.
    pub fn places_of(&self, needle: &str) -> Vec<String> {
        let mut places: Vec<String> = self
            .headers
            .iter()
            .filter(|(_, v)| v.contains(needle))
            .map(|(n, _)| n.clone())
            .collect();
        if self.path.contains(needle) {
            places.push("path".to_owned());
        }
        if String::from_utf8_lossy(&self.body).contains(needle) {
            places.push("body".to_owned());
        }
        places
    }
}

#[derive(Debug)]
struct State {
    answer: StubAnswer,
    requests: Vec<RecordedRequest>,
}

/// A stub provider on a free loopback port; it stops when dropped.
#[derive(Debug)]
pub struct ProviderStub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tls_root: Option<Vec<u8>>,
    task: JoinHandle<()>,
}

impl Drop for ProviderStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves the state usable.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ProviderStub {
    /// Starts a plain HTTP stub that answers 200 `{}` until told otherwise.
    pub async fn start() -> io::Result<Self> {
        Self::launch(None).await
    }

    /// Starts an HTTPS stub whose certificate, for `localhost` and
    /// `127.0.0.1`, is signed by a fresh CA; trust
    /// [`root_certificate`](Self::root_certificate) to reach it.
    pub async fn start_tls() -> io::Result<Self> {
        let (acceptor, root) = tls::acceptor().map_err(io::Error::other)?;
        let mut stub = Self::launch(Some(acceptor)).await?;
        stub.tls_root = Some(root);
        Ok(stub)
    }

    async fn launch(tls: Option<tokio_rustls::TlsAcceptor>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            answer: StubAnswer::json(200, "{}"),
            requests: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = match tls {
                        Some(tls) => match tls.accept(socket).await {
                            Ok(stream) => serve(stream, &state).await,
                            Err(e) => Err(e),
                        },
                        None => serve(socket, &state).await,
                    };
                });
            }
        });
        Ok(ProviderStub {
            addr,
            state,
            tls_root: None,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://localhost:PORT` for a TLS
    /// stub, the name its certificate carries), without a trailing slash.
    pub fn url(&self) -> String {
        match self.tls_root {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// The DER certificate of the CA that signed a TLS stub's certificate.
    pub fn root_certificate(&self) -> Option<&[u8]> {
        self.tls_root.as_deref()
    }

    /// What to answer from now on.
    pub fn set_answer(&self, answer: StubAnswer) {
        lock(&self.state).answer = answer;
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    state: &Mutex<State>,
) -> io::Result<()> {
    let Some(request) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let answer = {
        let mut state = lock(state);
        state.requests.push(request);
        state.answer.clone()
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nConnection: close\r\n",
        answer.status,
        reason(answer.status)
    );
    if answer.content_length {
        head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
    }
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    // A client that stops reading an oversized body closes the connection:
    // that is expected, not an error of the stub.
    let _ = stream.write_all(&answer.body).await;
    let _ = stream.shutdown().await;
    Ok(())
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<RecordedRequest>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST {
            return Err(io::Error::other("request head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Some(RecordedRequest {
        method,
        path,
        headers,
        body,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

/// The providers whose answers the stub knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StubProvider {
    /// OpenAI.
    OpenAi,
    /// Anthropic.
    Anthropic,
    /// Google Gemini.
    Gemini,
    /// Mistral.
    Mistral,
    /// Groq.
    Groq,
    /// OpenRouter.
    OpenRouter,
    /// DeepSeek.
    DeepSeek,
    /// xAI.
    Xai,
    /// Cohere.
    Cohere,
    /// Azure OpenAI.
    AzureOpenAi,
    /// An OpenAI-compatible server.
    OpenAiCompatible,
}

impl StubProvider {
    /// Every provider.
    pub const ALL: [StubProvider; 11] = [
        StubProvider::OpenAi,
        StubProvider::Anthropic,
        StubProvider::Gemini,
        StubProvider::Mistral,
        StubProvider::Groq,
        StubProvider::OpenRouter,
        StubProvider::DeepSeek,
        StubProvider::Xai,
        StubProvider::Cohere,
        StubProvider::AzureOpenAi,
        StubProvider::OpenAiCompatible,
    ];
}

/// What happens to the key being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scenario {
    /// The key is accepted.
    Valid,
    /// The key is unknown or revoked.
    InvalidKey,
    /// The account has no credit or quota left.
    NoCredit,
    /// Too many requests, with a wait to respect.
    RateLimited,
    /// The provider does not serve the caller's region.
    RegionBlocked,
    /// The provider fails (5xx).
    ServerError,
    /// The answer comes after [`SLOW`].
    Slow,
    /// A 200 whose body is [`OVERSIZED`] bytes, without `Content-Length`.
    Oversized,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 8] = [
        Scenario::Valid,
        Scenario::InvalidKey,
        Scenario::NoCredit,
        Scenario::RateLimited,
        Scenario::RegionBlocked,
        Scenario::ServerError,
        Scenario::Slow,
        Scenario::Oversized,
    ];
}

/// OpenAI's error envelope, which Groq, DeepSeek and OpenAI-compatible
/// servers copy.
fn openai_error(status: u16, message: &str, kind: &str, code: &str) -> StubAnswer {
    let code = if code.is_empty() {
        "null".to_owned()
    } else {
        format!("\"{code}\"")
    };
    StubAnswer::json(
        status,
        &format!(
            r#"{{"error":{{"message":"{message}","type":"{kind}","param":null,"code":{code}}}}}"#
        ),
    )
}

const OPENAI_MODELS: &str = r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}]}"#;

/// A region block where the provider documents no shape of its own: a 403
/// that says so in words.
fn generic_region(status: u16) -> StubAnswer {
    StubAnswer::json(
        status,
        r#"{"message":"This service is not available in your country or region."}"#,
    )
}

/// What `provider` answers a key check in `scenario`, in its documented
/// shape.
///
/// Shapes that a provider does not document (a region block at Mistral,
/// Groq, DeepSeek, Cohere, Azure or a compatible server; no credit at
/// Mistral) use the common HTTP meaning: 402 for no credit, a 403 that
/// names the region.
pub fn answer(provider: StubProvider, scenario: Scenario) -> StubAnswer {
    use Scenario as S;
    use StubProvider as P;
    let retry = RETRY_AFTER_SECS.to_string();
    match scenario {
        S::Slow => {
            let mut a = answer(provider, S::Valid);
            a.delay = SLOW;
            return a;
        }
        S::Oversized => {
            let mut body = String::with_capacity(OVERSIZED + 64);
            body.push_str(r#"{"data":["#);
            while body.len() < OVERSIZED {
                body.push_str(r#"{"id":"padding-model","object":"model"},"#);
            }
            body.push_str(r#"{"id":"last"}]}"#);
            return StubAnswer {
                status: 200,
                headers: Vec::new(),
                body: body.into_bytes(),
                delay: Duration::ZERO,
                content_length: false,
            };
        }
        _ => {}
    }
    match (provider, scenario) {
        // OpenAI and the servers that copy its envelope.
        (P::OpenAi | P::OpenAiCompatible, S::Valid) => StubAnswer::json(200, OPENAI_MODELS),
        (P::OpenAi | P::OpenAiCompatible, S::InvalidKey) => openai_error(
            401,
            "Incorrect API key provided: sk-test-****cdef. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        ),
        (P::OpenAi | P::OpenAiCompatible, S::NoCredit) => openai_error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        ),
        (P::OpenAi | P::OpenAiCompatible, S::RateLimited) => openai_error(
            429,
            "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1.",
            "requests",
            "rate_limit_exceeded",
        )
        .with_header("retry-after", &retry),
        (P::OpenAi | P::OpenAiCompatible, S::RegionBlocked) => StubAnswer::json(
            403,
            r#"{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}"#,
        ),
        (P::OpenAi | P::OpenAiCompatible, S::ServerError) => openai_error(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            "",
        ),

        (P::Anthropic, S::Valid) => StubAnswer::json(
            200,
            r#"{"data":[{"type":"model","id":"claude-sonnet-4-20250514","display_name":"Claude Sonnet 4","created_at":"2025-05-22T00:00:00Z"}],"has_more":false,"first_id":"claude-sonnet-4-20250514","last_id":"claude-sonnet-4-20250514"}"#,
        ),
        (P::Anthropic, S::InvalidKey) => StubAnswer::json(
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        ),
        (P::Anthropic, S::NoCredit) => StubAnswer::json(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#,
        ),
        (P::Anthropic, S::RateLimited) => StubAnswer::json(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
        )
        .with_header("retry-after", &retry),
        (P::Anthropic, S::RegionBlocked) => StubAnswer::json(
            403,
            r#"{"type":"error","error":{"type":"permission_error","message":"This API is not available in your country, region, or territory."}}"#,
        ),
        (P::Anthropic, S::ServerError) => StubAnswer::json(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),

        (P::Gemini, S::Valid) => StubAnswer::json(
            200,
            r#"{"models":[{"name":"models/gemini-2.0-flash","version":"2.0","displayName":"Gemini 2.0 Flash","supportedGenerationMethods":["generateContent","countTokens"]}],"nextPageToken":"Ch5tb2RlbHMv"}"#,
        ),
        (P::Gemini, S::InvalidKey) => StubAnswer::json(
            400,
            r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#,
        ),
        (P::Gemini, S::NoCredit) => StubAnswer::json(
            429,
            r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#,
        ),
        (P::Gemini, S::RateLimited) => StubAnswer::json(
            429,
            r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"27s"}]}}"#,
        ),
        (P::Gemini, S::RegionBlocked) => StubAnswer::json(
            400,
            r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#,
        ),
        (P::Gemini, S::ServerError) => StubAnswer::json(
            503,
            r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
        ),

        (P::Mistral, S::Valid) => StubAnswer::json(
            200,
            r#"{"object":"list","data":[{"id":"mistral-large-latest","object":"model","created":1727000000,"owned_by":"mistralai"}]}"#,
        ),
        (P::Mistral, S::InvalidKey) => StubAnswer::json(
            401,
            r#"{"message":"Unauthorized","request_id":"4b1d8c2e"}"#,
        ),
        (P::Mistral, S::NoCredit) => StubAnswer::json(
            402,
            r#"{"message":"Payment required","request_id":"4b1d8c2e"}"#,
        ),
        (P::Mistral, S::RateLimited) => StubAnswer::json(
            429,
            r#"{"message":"Requests rate limit exceeded","request_id":"4b1d8c2e"}"#,
        )
        .with_header("retry-after", &retry),
        (P::Mistral, S::RegionBlocked) => generic_region(403),
        (P::Mistral, S::ServerError) => StubAnswer::json(
            503,
            r#"{"message":"Service unavailable","request_id":"4b1d8c2e"}"#,
        ),

        (P::Groq, S::Valid) => StubAnswer::json(
            200,
            r#"{"object":"list","data":[{"id":"llama-3.3-70b-versatile","object":"model","created":1733447754,"owned_by":"Meta","active":true,"context_window":131072}]}"#,
        ),
        (P::Groq, S::InvalidKey) => {
            openai_error(401, "Invalid API Key", "invalid_request_error", "invalid_api_key")
        }
        (P::Groq, S::NoCredit) => openai_error(
            429,
            "You have exceeded your current quota: the organization's spend limit is reached.",
            "insufficient_quota",
            "insufficient_quota",
        ),
        (P::Groq, S::RateLimited) => openai_error(
            429,
            "Rate limit reached for model `llama-3.3-70b-versatile` on requests per minute (RPM): Limit 30, Used 30, Requested 1.",
            "requests",
            "rate_limit_exceeded",
        )
        .with_header("retry-after", &retry),
        (P::Groq, S::RegionBlocked) => generic_region(403),
        (P::Groq, S::ServerError) => {
            openai_error(503, "Service Unavailable", "internal_server_error", "service_unavailable")
        }

        (P::OpenRouter, S::Valid) => StubAnswer::json(
            200,
            r#"{"data":{"label":"sk-or-v1-abc...def","limit":10,"usage":2.5,"limit_remaining":7.5,"is_free_tier":false,"rate_limit":{"requests":10,"interval":"10s"}}}"#,
        ),
        (P::OpenRouter, S::InvalidKey) => StubAnswer::json(
            401,
            r#"{"error":{"message":"No auth credentials found","code":401}}"#,
        ),
        (P::OpenRouter, S::NoCredit) => StubAnswer::json(
            200,
            r#"{"data":{"label":"sk-or-v1-abc...def","limit":10,"usage":10,"limit_remaining":0,"is_free_tier":false,"rate_limit":{"requests":10,"interval":"10s"}}}"#,
        ),
        (P::OpenRouter, S::RateLimited) => StubAnswer::json(
            429,
            r#"{"error":{"message":"Rate limit exceeded: limit_rpm/google/gemini-2.0-flash","code":429}}"#,
        )
        .with_header("retry-after", &retry),
        (P::OpenRouter, S::RegionBlocked) => StubAnswer::json(
            403,
            r#"{"error":{"message":"This service is not available in your region.","code":403}}"#,
        ),
        (P::OpenRouter, S::ServerError) => StubAnswer::json(
            502,
            r#"{"error":{"message":"Provider returned error","code":502}}"#,
        ),

        (P::DeepSeek, S::Valid) => StubAnswer::json(
            200,
            r#"{"is_available":true,"balance_infos":[{"currency":"USD","total_balance":"4.20","granted_balance":"0.00","topped_up_balance":"4.20"}]}"#,
        ),
        (P::DeepSeek, S::InvalidKey) => openai_error(
            401,
            "Authentication Fails, Your api key: ****cdef is invalid",
            "authentication_error",
            "invalid_request_error",
        ),
        (P::DeepSeek, S::NoCredit) => StubAnswer::json(
            200,
            r#"{"is_available":false,"balance_infos":[{"currency":"USD","total_balance":"0.00","granted_balance":"0.00","topped_up_balance":"0.00"}]}"#,
        ),
        (P::DeepSeek, S::RateLimited) => {
            openai_error(429, "Rate limit reached", "rate_limit_error", "rate_limit_exceeded")
                .with_header("retry-after", &retry)
        }
        (P::DeepSeek, S::RegionBlocked) => generic_region(403),
        (P::DeepSeek, S::ServerError) => {
            openai_error(503, "Server overloaded, please try again later", "server_error", "")
        }

        (P::Xai, S::Valid) => StubAnswer::json(
            200,
            r#"{"redacted_api_key":"xai-...cdef","user_id":"u-1","name":"test","create_time":"2025-01-01T00:00:00Z","modify_time":"2025-01-01T00:00:00Z","modified_by":"u-1","team_id":"t-1","acls":["api-key:model:*","api-key:endpoint:*"],"api_key_id":"k-1","team_blocked":false,"api_key_blocked":false,"api_key_disabled":false}"#,
        ),
        (P::Xai, S::InvalidKey) => StubAnswer::json(
            400,
            r#"{"code":"Client specified an invalid argument","error":"Incorrect API key provided: xa***ef. You can obtain an API key from https://console.x.ai."}"#,
        ),
        (P::Xai, S::NoCredit) => StubAnswer::json(
            403,
            r#"{"code":"The caller does not have permission to execute the specified operation","error":"Your newly created team doesn't have any credits yet. You can purchase credits on https://console.x.ai."}"#,
        ),
        (P::Xai, S::RateLimited) => StubAnswer::json(
            429,
            r#"{"code":"Too many requests","error":"Your team has exceeded its rate limit of requests per second."}"#,
        )
        .with_header("retry-after", &retry),
        (P::Xai, S::RegionBlocked) => StubAnswer::json(
            403,
            r#"{"code":"The caller does not have permission to execute the specified operation","error":"Access from your region is not supported."}"#,
        ),
        (P::Xai, S::ServerError) => StubAnswer::json(
            500,
            r#"{"code":"Internal error","error":"Service temporarily unavailable."}"#,
        ),

        (P::Cohere, S::Valid) => StubAnswer::json(
            200,
            r#"{"valid":true,"organization_id":"org-1","owner_id":"owner-1"}"#,
        ),
        (P::Cohere, S::InvalidKey) => StubAnswer::json(401, r#"{"message":"invalid api token"}"#),
        (P::Cohere, S::NoCredit) => StubAnswer::json(
            429,
            r#"{"message":"You are using a Trial key, which is limited to 1000 API calls / month. You can continue to use the Trial key for free or upgrade to a Production key with higher rate limits."}"#,
        ),
        (P::Cohere, S::RateLimited) => StubAnswer::json(
            429,
            r#"{"message":"You are past the per minute request limit, please wait and try again later."}"#,
        )
        .with_header("retry-after", &retry),
        (P::Cohere, S::RegionBlocked) => generic_region(403),
        (P::Cohere, S::ServerError) => {
            StubAnswer::json(500, r#"{"message":"internal server error"}"#)
        }

        (P::AzureOpenAi, S::Valid) => StubAnswer::json(
            200,
            r#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created_at":1715558400,"status":"succeeded","capabilities":{"chat_completion":true}}]}"#,
        ),
        (P::AzureOpenAi, S::InvalidKey) => StubAnswer::json(
            401,
            r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#,
        ),
        (P::AzureOpenAi, S::NoCredit) => StubAnswer::json(
            429,
            r#"{"error":{"code":"InsufficientQuota","message":"The specified capacity of the deployment exceeds the available quota."}}"#,
        ),
        (P::AzureOpenAi, S::RateLimited) => StubAnswer::json(
            429,
            r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 20 seconds."}}"#,
        )
        .with_header("retry-after", &retry)
        .with_header("retry-after-ms", &(RETRY_AFTER_SECS * 1000).to_string()),
        (P::AzureOpenAi, S::RegionBlocked) => generic_region(403),
        (P::AzureOpenAi, S::ServerError) => StubAnswer::json(
            503,
            r#"{"error":{"code":"ServiceUnavailable","message":"The service is temporarily unable to process your request. Please try again later."}}"#,
        ),

        (_, S::Slow | S::Oversized) => StubAnswer::json(200, "{}"),
    }
}

mod tls {
    //! A fresh CA and a certificate it signs for `localhost` and `127.0.0.1`.

    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::{self, pki_types};

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    pub(super) fn acceptor() -> Result<(TlsAcceptor, Vec<u8>), BoxError> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&key, &issuer)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key_der = pki_types::PrivateKeyDer::try_from(key.serialize_der())?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)?;
        Ok((TlsAcceptor::from(Arc::new(config)), issuer.der().to_vec()))
    }
}
