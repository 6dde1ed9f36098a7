//! Carriers as the tests play them: media as each serves it, signed webhooks,
//! and what reached a mock.

use super::*;

/// Twilio's Media resource as Twilio serves it, on the `api` mock: `GET
/// /2010-04-01/Accounts/{sid}/Messages/{mm}/Media/{me}` answers 401 (Twilio's
/// error 20003) without HTTP basic auth `{sid}:{token}`, and with it a 307
/// to a short-lived CDN URL on `cdn`. The CDN serves `bytes` as `content_type`
/// and, as presigned storage URLs do, answers 400 to a request that carries
/// an `Authorization` header of its own. Returns the `MediaUrl{N}` value.
pub async fn mount_twilio_media(
    api: &wiremock::MockServer,
    cdn: &wiremock::MockServer,
    token: &str,
    me: &str,
    bytes: &[u8],
    content_type: &str,
) -> String {
    use base64::Engine;
    use wiremock::matchers::{header, header_exists, method, path};
    use wiremock::{Mock, ResponseTemplate};
    let media_path = format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages/MM{me}/Media/{me}");
    let cdn_path = format!("/v3/media/{me}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_SID}:{token}"));
    Mock::given(method("GET"))
        .and(path(media_path.clone()))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .respond_with(
            ResponseTemplate::new(307).insert_header(
                "location",
                format!(
                    "{}{cdn_path}?Expires=1798761600&Signature=c2lnbmVk",
                    cdn.uri()
                )
                .as_str(),
            ),
        )
        .with_priority(1)
        .mount(api)
        .await;
    Mock::given(method("GET"))
        .and(path(media_path.clone()))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "code": 20003, "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401})))
        .with_priority(2)
        .mount(api)
        .await;
    Mock::given(method("GET"))
        .and(path(cdn_path.clone()))
        .and(header_exists("authorization"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>",
        ))
        .with_priority(1)
        .mount(cdn)
        .await;
    Mock::given(method("GET"))
        .and(path(cdn_path))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", content_type)
                .set_body_bytes(bytes.to_vec()),
        )
        .with_priority(2)
        .mount(cdn)
        .await;
    format!("{}{media_path}", api.uri())
}

/// A Telnyx inbound media link on `cdn`: it works once, then answers 404,
/// as Telnyx's short-lived links do once used or expired. Returns the URL.
pub async fn mount_telnyx_media(
    cdn: &wiremock::MockServer,
    name: &str,
    bytes: &[u8],
    content_type: &str,
) -> String {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    let p = format!("/messaging/media/{name}");
    Mock::given(method("GET"))
        .and(path(p.clone()))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", content_type)
                .set_body_bytes(bytes.to_vec()),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(cdn)
        .await;
    Mock::given(method("GET"))
        .and(path(p.clone()))
        .respond_with(ResponseTemplate::new(404))
        .with_priority(2)
        .mount(cdn)
        .await;
    format!("{}{p}", cdn.uri())
}

/// A SignalWire media URL with "Protect Message Media URLs" on, on the
/// `api` mock: 401 without basic auth `{project}:{token}`. Returns the URL.
pub async fn mount_signalwire_media(
    api: &wiremock::MockServer,
    project: &str,
    token: &str,
    name: &str,
    bytes: &[u8],
    content_type: &str,
) -> String {
    use base64::Engine;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, ResponseTemplate};
    let p = format!("/api/laml/2010-04-01/Accounts/{project}/Messages/{name}/Media/ME{name}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{project}:{token}"));
    Mock::given(method("GET"))
        .and(path(p.clone()))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", content_type)
                .set_body_bytes(bytes.to_vec()),
        )
        .with_priority(1)
        .mount(api)
        .await;
    Mock::given(method("GET"))
        .and(path(p.clone()))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(2)
        .mount(api)
        .await;
    format!("{}{p}", api.uri())
}

/// Downloads a URL the gateway gave a user, as the user's client would:
/// no credentials. The gateway's `{PUBLIC}` is served by `http_base` (in
/// production a reverse proxy maps one to the other).
pub async fn download(gateway: &Gateway, url: &str) -> reqwest::Response {
    let local = match url.strip_prefix(PUBLIC) {
        Some(rest) => format!("{}/hooks{rest}", gateway.http_base),
        None => url.to_owned(),
    };
    reqwest::Client::new()
        .get(local)
        .send()
        .await
        .expect("download")
}

/// Some bytes that are a PNG picture (its signature and header), `n` long.
pub fn picture(n: usize) -> Vec<u8> {
    let mut p = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    p.extend((0..n.saturating_sub(p.len())).map(|i| (i * 7 % 251) as u8));
    p.truncate(n);
    p
}

/// Twilio's signature, for webhooks the tests post.
pub fn twilio_sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    sms_pstn_laml::signature::twilio_signature(token, url, &owned)
}

/// Posts a form webhook with an optional `X-Twilio-Signature`.
pub async fn post_form(
    url: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> reqwest::Response {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(s) = signature {
        req = req.header("x-twilio-signature", s);
    }
    req.send().await.expect("webhook request")
}

/// The Ed25519 key the tests sign Telnyx webhooks with; its public key is
/// [`telnyx_public_key`].
pub fn telnyx_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
}

/// Base64 of [`telnyx_key`]'s public key, for `public_key` in the config.
pub fn telnyx_public_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(telnyx_key().verifying_key().as_bytes())
}

/// Posts a Telnyx JSON event signed the way Telnyx signs, timestamped now.
pub async fn post_telnyx(url: &str, event: &serde_json::Value) -> reqwest::Response {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let body = event.to_string();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = telnyx_key().sign(format!("{ts}|{body}").as_bytes());
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("telnyx-timestamp", ts)
        .header(
            "telnyx-signature-ed25519",
            base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("webhook request")
}

/// Posts a SignalWire form webhook signed with `signing_key` (Twilio's
/// algorithm, header `X-SignalWire-Signature`) for public URL `public`.
pub async fn post_signalwire(
    url: &str,
    public: &str,
    signing_key: &str,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let sig = twilio_sign(signing_key, public, params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-signalwire-signature", sig)
        .body(body)
        .send()
        .await
        .expect("webhook request")
}

/// The requests `server` has received on `path`, waiting until there are `n`.
pub async fn wait_requests(
    server: &wiremock::MockServer,
    path: &str,
    n: usize,
) -> Vec<wiremock::Request> {
    for _ in 0..200 {
        let got: Vec<wiremock::Request> = server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == path)
            .collect();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path}: fewer than {n} requests arrived");
}

/// The texts a sandbox account has sent (`hooks` is
/// `{http_base}/hooks/{account}`), once there is at least one (within 5 s).
pub async fn sandbox_outbox(hooks: &str, auth: &str) -> serde_json::Value {
    let http = reqwest::Client::new();
    let mut outbox = serde_json::Value::Null;
    for _ in 0..100 {
        outbox = http
            .get(format!("{hooks}/outbox"))
            .header("authorization", auth)
            .send()
            .await
            .expect("outbox request")
            .json()
            .await
            .expect("outbox JSON");
        if outbox.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    outbox
}

/// Whether the sandbox account at `hooks` sent a text holding every one of
/// `needles` (its body, its numbers) within 5 s.
pub async fn sandbox_sent(hooks: &str, auth: &str, needles: &[&str]) -> bool {
    for _ in 0..50 {
        let outbox = sandbox_outbox(hooks, auth).await;
        let found = outbox.as_array().is_some_and(|texts| {
            texts.iter().any(|t| {
                let t = t.to_string();
                needles.iter().all(|n| t.contains(n))
            })
        });
        if found {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// SignalWire's project id in [`three_carriers`].
pub const SW_PROJECT: &str = "sw-project";
/// SignalWire's API token in [`three_carriers`].
pub const SW_TOKEN: &str = "PT-e2e";
/// SignalWire's signing key in [`three_carriers`].
pub const SW_KEY: &str = "PSK-e2e-signing-key";

/// `[providers]` and `[[users]]` for one account of each carrier, with
/// their APIs at the given mocks' URLs: alice on Twilio (`main`), bob on
/// Telnyx (`tx`), carol on SignalWire (`sw`).
pub fn three_carriers(twilio: &str, telnyx: &str, signalwire: &str) -> String {
    format!(
        r#"
[providers.main]
type = "twilio"
account_sid = "{TWILIO_SID}"
auth_token = "twilio-token"
api_base = "{twilio}"

[providers.tx]
type = "telnyx"
api_key = "KEY-e2e"
public_key = "{telnyx_pk}"
api_base = "{telnyx}"

[providers.sw]
type = "signalwire"
space = "example.signalwire.com"
project_id = "{SW_PROJECT}"
api_token = "{SW_TOKEN}"
signing_key = "{SW_KEY}"
api_base = "{signalwire}"

[[users]]
jid = "alice@localhost"
number = "+15550001111"
provider = "main"

[[users]]
jid = "bob@localhost"
number = "+15550002222"
provider = "tx"

[[users]]
jid = "carol@localhost"
number = "+15550003333"
provider = "sw"
"#,
        telnyx_pk = telnyx_public_key(),
    )
}
