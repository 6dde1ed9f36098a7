//! Carrier accounts as `check --online` and `configure-carrier` meet them:
//! wiremock carriers that keep state (a number pointed stays pointed),
//! want their credentials on every call, answer in the carriers'
//! documented shapes (errors included), match `PhoneNumber` partially as
//! Twilio does, and slow callers down (429 with `Retry-After`) once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// One LaML number: its `PN…` sid, `sms_url` and `sms_method`.
type LamlNumber = (String, String, String);

/// One LaML (Twilio or SignalWire) account's phone numbers, by number.
#[derive(Clone, Default)]
pub struct LamlNumbers(pub Arc<Mutex<BTreeMap<String, LamlNumber>>>);

impl LamlNumbers {
    /// Adds `number` as `sid`, its texts going to `sms_url` by `method`.
    pub fn add(&self, number: &str, sid: &str, sms_url: &str, method: &str) {
        self.0
            .lock()
            .unwrap()
            .insert(number.into(), (sid.into(), sms_url.into(), method.into()));
    }

    /// Where `number`'s texts go now, and by which method.
    pub fn points(&self, number: &str) -> (String, String) {
        let n = self.0.lock().unwrap();
        let (_, url, method) = &n[number];
        (url.clone(), method.clone())
    }
}

fn laml_error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "code": code, "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status,
    }))
}

fn number_json(number: &str, sid: &str, url: &str, method: &str) -> serde_json::Value {
    serde_json::json!({
        "sid": sid, "phone_number": number, "friendly_name": number,
        "sms_url": url, "sms_method": method, "sms_fallback_url": "",
        "capabilities": {"sms": true, "mms": true, "voice": true},
    })
}

/// Mounts a LaML account `sid` under `prefix` (`/2010-04-01` for Twilio,
/// `/api/laml/2010-04-01` for SignalWire) on `server`: the Account
/// resource and its IncomingPhoneNumbers (list by `PhoneNumber`, which
/// matches any number containing the digits given; update `SmsUrl` and
/// `SmsMethod`). Every call wants HTTP basic auth `sid:token` (else 401,
/// error 20003).
pub async fn mount_laml_account(
    server: &MockServer,
    prefix: &str,
    sid: &str,
    token: &str,
    numbers: &LamlNumbers,
) {
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{sid}:{token}"))
    );
    let authorized = move |r: &Request| {
        r.headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(auth.as_str())
    };
    let account = format!("{prefix}/Accounts/{sid}");
    {
        let (authorized, sid) = (authorized.clone(), sid.to_owned());
        Mock::given(method("GET"))
            .and(path(format!("{account}.json")))
            .respond_with(move |r: &Request| {
                if !authorized(r) {
                    return laml_error(401, 20003, "Authenticate");
                }
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "sid": sid, "friendly_name": "Family gateway", "status": "active",
                    "type": "Full", "owner_account_sid": sid,
                }))
            })
            .mount(server)
            .await;
    }
    {
        let (authorized, numbers) = (authorized.clone(), numbers.clone());
        Mock::given(method("GET"))
            .and(path(format!("{account}/IncomingPhoneNumbers.json")))
            .respond_with(move |r: &Request| {
                if !authorized(r) {
                    return laml_error(401, 20003, "Authenticate");
                }
                let wanted: String = r
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "PhoneNumber")
                    .map(|(_, v)| v.chars().filter(char::is_ascii_digit).collect())
                    .unwrap_or_default();
                let found: Vec<serde_json::Value> = numbers
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(n, _)| n.contains(&wanted))
                    .map(|(n, (sid, url, m))| number_json(n, sid, url, m))
                    .collect();
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "incoming_phone_numbers": found, "page": 0, "page_size": 50,
                    "next_page_uri": null,
                }))
            })
            .mount(server)
            .await;
    }
    let numbers = numbers.clone();
    Mock::given(method("POST"))
        .and(path_regex(format!(
            "^{}/IncomingPhoneNumbers/PN[0-9a-f]+\\.json$",
            regex_escape(&account)
        )))
        .respond_with(move |r: &Request| {
            if !authorized(r) {
                return laml_error(401, 20003, "Authenticate");
            }
            let pn = r
                .url
                .path()
                .rsplit('/')
                .next()
                .unwrap()
                .trim_end_matches(".json")
                .to_owned();
            let form: BTreeMap<String, String> =
                form_urlencoded::parse(&r.body).into_owned().collect();
            let mut numbers = numbers.0.lock().unwrap();
            let Some((number, entry)) = numbers.iter_mut().find(|(_, (sid, _, _))| *sid == pn)
            else {
                return laml_error(404, 20404, "The requested resource was not found");
            };
            if let Some(url) = form.get("SmsUrl") {
                entry.1 = url.clone();
            }
            if let Some(m) = form.get("SmsMethod") {
                entry.2 = m.clone();
            }
            ResponseTemplate::new(200)
                .set_body_json(number_json(number, &entry.0, &entry.1, &entry.2))
        })
        .mount(server)
        .await;
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// A Telnyx account's numbers (number → messaging profile id, if any) and
/// profiles (id → `webhook_url`), and the PATCHes it took.
#[derive(Clone, Default)]
pub struct TelnyxAccount {
    /// Number → its messaging profile.
    pub numbers: Arc<Mutex<BTreeMap<String, Option<String>>>>,
    /// Profile id → its `webhook_url`.
    pub profiles: Arc<Mutex<BTreeMap<String, String>>>,
    /// How many PATCHes each profile took.
    pub patches: Arc<Mutex<BTreeMap<String, usize>>>,
}

fn telnyx_error(status: u16, code: &str, title: &str, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({"errors": [{
        "code": code, "title": title, "detail": detail,
        "meta": {"url": format!("https://developers.telnyx.com/docs/overview/errors/{code}")}}]}))
}

fn profile_json(id: &str, url: &str) -> serde_json::Value {
    serde_json::json!({"data": {
        "record_type": "messaging_profile", "id": id, "name": "Family",
        "enabled": true, "webhook_url": url, "webhook_failover_url": "",
        "webhook_api_version": "2", "whitelisted_destinations": ["US"]}})
}

/// Mounts a Telnyx account whose API key is `key` on `server`:
/// `GET /v2/balance` (whose first call is slowed down with a 429, error
/// 10011, `Retry-After: 1`), `GET /v2/phone_numbers?filter[phone_number]=`,
/// and `GET`/`PATCH /v2/messaging_profiles/{id}`. A wrong key gets 401,
/// error 10009.
pub async fn mount_telnyx_account(server: &MockServer, key: &str, account: &TelnyxAccount) {
    let bearer = format!("Bearer {key}");
    let authorized = move |r: &Request| {
        r.headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(bearer.as_str())
    };
    let refused = || {
        telnyx_error(
            401,
            "10009",
            "Authentication failed",
            "Could not understand the provided credentials.",
        )
    };
    {
        let authorized = authorized.clone();
        let slowed = AtomicBool::new(false);
        Mock::given(method("GET"))
            .and(path("/v2/balance"))
            .respond_with(move |r: &Request| {
                if !slowed.swap(true, Ordering::SeqCst) {
                    return telnyx_error(429, "10011", "Too many requests", "Slow down.")
                        .insert_header("retry-after", "1");
                }
                if !authorized(r) {
                    return refused();
                }
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {
                    "record_type": "balance", "balance": "42.00", "credit_limit": "0.00",
                    "available_credit": "42.00", "currency": "USD", "pending": "0.00"}}))
            })
            .mount(server)
            .await;
    }
    {
        let (authorized, account) = (authorized.clone(), account.clone());
        Mock::given(method("GET"))
            .and(path("/v2/phone_numbers"))
            .respond_with(move |r: &Request| {
                if !authorized(r) {
                    return refused();
                }
                let wanted = r
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "filter[phone_number]")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let data: Vec<serde_json::Value> = account
                    .numbers
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(n, _)| **n == wanted)
                    .map(|(n, p)| {
                        serde_json::json!({"id": "1293384261075731499", "record_type": "phone_number",
                            "phone_number": n, "status": "active", "messaging_profile_id": p,
                            "messaging_profile_name": p.as_ref().map(|_| "Family")})
                    })
                    .collect();
                let n = data.len();
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": data,
                    "meta": {"total_pages": 1, "total_results": n, "page_number": 1, "page_size": 20}}))
            })
            .mount(server)
            .await;
    }
    let account = account.clone();
    Mock::given(path_regex("^/v2/messaging_profiles/[0-9a-f-]+$"))
        .respond_with(move |r: &Request| {
            if !authorized(r) {
                return refused();
            }
            let id = r.url.path().rsplit('/').next().unwrap().to_owned();
            let mut profiles = account.profiles.lock().unwrap();
            let Some(url) = profiles.get_mut(&id) else {
                return telnyx_error(
                    404,
                    "10005",
                    "Resource not found",
                    "The requested resource or URL could not be found.",
                );
            };
            if r.method.as_str() == "PATCH" {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                if let Some(u) = body["webhook_url"].as_str() {
                    *url = u.to_owned();
                }
                *account
                    .patches
                    .lock()
                    .unwrap()
                    .entry(id.clone())
                    .or_default() += 1;
            }
            ResponseTemplate::new(200).set_body_json(profile_json(&id, url))
        })
        .mount(server)
        .await;
}
