//! Inbound MMS media as carriers really serve them: Twilio's behind basic
//! auth with a redirect to a CDN that must not see the credentials,
//! Telnyx's links that work once, SignalWire's protected ones; too large,
//! slow, failing then working. Fetched by the gateway, served from its
//! own `/media/` (or uploaded to the user's server with XEP-0363), and
//! opened by the test without credentials.

use sms_gateway_core::{Fetched, InboundSms, Media, PhoneNumber, ProviderContext, PstnProvider};
use sms_gateway_runtime::media::{FetchError, Fetcher, LocalMedia, MediaService};
use sms_over_xmpp_tests::*;
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A provider of `kind` built from `settings` as the config builds it.
fn provider(kind: &str, settings: serde_json::Value) -> Arc<dyn PstnProvider> {
    let registry = sms_over_xmpp_bin::registry();
    let ctx = ProviderContext {
        account: "a".into(),
        webhook_base: "https://sms.example.com/hooks/a".into(),
    };
    registry.get(kind).expect("known type")(&ctx, settings).expect("provider builds")
}

fn twilio(api: &MockServer, token: &str) -> Arc<dyn PstnProvider> {
    provider(
        "twilio",
        serde_json::json!({"account_sid": TWILIO_SID, "auth_token": token, "api_base": api.uri()}),
    )
}

async fn fetch(
    p: &Arc<dyn PstnProvider>,
    url: &str,
    limit: u64,
    timeout: Duration,
) -> Result<sms_gateway_core::media::Item, FetchError> {
    Fetcher::new(timeout)
        .unwrap()
        .fetch(
            &|u| p.media_authorization(u),
            &Media::new(url, None),
            0,
            limit,
        )
        .await
}

/// Twilio: the media URL needs the account's basic auth, and its 307 leads
/// to a CDN that refuses a request carrying credentials of its own (so the
/// gateway must drop them on the redirect). A wrong token is a 401 said
/// as such, not retried.
#[tokio::test]
async fn twilio_media_take_basic_auth_which_never_reaches_the_cdn() {
    let (api, cdn) = (MockServer::start().await, MockServer::start().await);
    let pic = picture(5000);
    let url = mount_twilio_media(&api, &cdn, "tok", "ME1", &pic, "image/jpeg").await;
    // What a client given the carrier's URL gets: 401.
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 401);
    let item = fetch(
        &twilio(&api, "tok"),
        &url,
        5_000_000,
        Duration::from_secs(10),
    )
    .await
    .expect("fetched");
    assert_eq!(item.bytes.to_vec(), pic);
    assert_eq!(item.content_type, "image/jpeg");
    assert_eq!(item.name, "ME1.jpg");
    let cdn_requests = cdn.received_requests().await.unwrap();
    assert!(
        cdn_requests
            .iter()
            .all(|r| !r.headers.contains_key("authorization")),
        "the CDN never sees the account's credentials"
    );
    let e = fetch(
        &twilio(&api, "wrong"),
        &url,
        5_000_000,
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        FetchError::Permanent(
            "the carrier refused the gateway's credentials for it (HTTP 401)".into()
        )
    );
}

/// Telnyx's link works once, then 404s; SignalWire's protected link needs
/// the project's credentials; a file over the limit is refused whole.
#[tokio::test]
async fn telnyx_links_expire_signalwire_links_need_credentials_and_sizes_are_bounded() {
    let (api, cdn) = (MockServer::start().await, MockServer::start().await);
    let telnyx = provider(
        "telnyx",
        serde_json::json!({"api_key": "KEY", "public_key": telnyx_public_key(), "api_base": api.uri()}),
    );
    let pic = picture(3000);
    let url = mount_telnyx_media(&cdn, "a.jpg", &pic, "application/octet-stream").await;
    let item = fetch(&telnyx, &url, 5_000_000, Duration::from_secs(10))
        .await
        .expect("the first fetch works");
    assert_eq!(
        item.content_type, "image/png",
        "sniffed: the server said octet-stream"
    );
    assert_eq!(item.name, "a.jpg", "its own name kept");
    let again = fetch(&telnyx, &url, 5_000_000, Duration::from_secs(10)).await;
    assert_eq!(
        again.unwrap_err(),
        FetchError::Permanent("the carrier no longer has it (HTTP 404)".into())
    );

    let signalwire = provider(
        "signalwire",
        serde_json::json!({"space": "example.signalwire.com", "project_id": SW_PROJECT,
            "api_token": SW_TOKEN, "signing_key": "k", "api_base": api.uri()}),
    );
    let url = mount_signalwire_media(&api, SW_PROJECT, SW_TOKEN, "SM1", &pic, "image/png").await;
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 401);
    let item = fetch(&signalwire, &url, 5_000_000, Duration::from_secs(10))
        .await
        .expect("fetched with the project's credentials");
    assert_eq!(item.bytes.to_vec(), pic);
    // The Telnyx provider has no SignalWire credentials to give.
    assert!(fetch(&telnyx, &url, 5_000_000, Duration::from_secs(10))
        .await
        .is_err());

    let big = mount_telnyx_media(&cdn, "big.png", &picture(6_000), "image/png").await;
    let e = fetch(&telnyx, &big, 5_000, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        FetchError::Permanent(
            "it is larger than the 5 KB allowed for one message (media.max_bytes)".into()
        )
    );
}

/// A slow CDN is a temporary failure (retried), and so is a 500; a
/// message whose item fails at first and then works is delivered whole,
/// and Twilio's copy is deleted when `delete_at_carrier` is set.
#[tokio::test(flavor = "multi_thread")]
async fn slow_and_failing_servers_are_retried_and_fetched_media_deleted_at_twilio() {
    let (api, cdn) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("GET"))
        .and(path("/slow.png"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&cdn)
        .await;
    let telnyx = provider(
        "telnyx",
        serde_json::json!({"api_key": "KEY", "public_key": telnyx_public_key(), "api_base": api.uri()}),
    );
    let e = fetch(
        &telnyx,
        &format!("{}/slow.png", cdn.uri()),
        5_000_000,
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, FetchError::Temporary(_)), "{e:?}");

    // 500 once, then the picture.
    Mock::given(method("GET"))
        .and(path("/flaky.png"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&cdn)
        .await;
    let pic = picture(1000);
    Mock::given(method("GET"))
        .and(path("/flaky.png"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .set_body_bytes(pic.clone()),
        )
        .with_priority(2)
        .mount(&cdn)
        .await;
    let twilio_url = mount_twilio_media(&api, &cdn, "tok", "ME7", &pic, "image/png").await;
    Mock::given(method("DELETE"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_SID}/Messages/MMME7/Media/ME7.json"
        )))
        .and(wiremock::matchers::header_exists("authorization"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&api)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(
        LocalMedia::open(
            &dir.path().join("media"),
            "https://sms.example.com/hooks/media",
            Duration::from_secs(86_400),
            1 << 30,
        )
        .unwrap(),
    );
    let config: sms_gateway_core::config::MediaConfig =
        serde_json::from_value(serde_json::json!({"delete_at_carrier": true, "timeout_secs": 5}))
            .unwrap();
    let service = MediaService::new(&config, local.clone(), Some(local.clone())).unwrap();
    let n = |s: &str| PhoneNumber::parse(s, None).unwrap();
    let mut sms = InboundSms {
        id: "x".into(),
        from: n("+15557654321"),
        to: n("+15550001111"),
        body: String::new(),
        media: vec![Media::new(format!("{}/flaky.png", cdn.uri()), None)],
        others: vec![],
        subject: None,
    };
    let never = sms_gateway_core::CancellationToken::new();
    service
        .fetch_all(
            telnyx.as_ref(),
            "alice@localhost",
            &mut sms,
            u64::MAX,
            |_| Duration::from_millis(100),
            &never,
        )
        .await
        .expect("not shut down");
    assert!(
        matches!(&sms.media[0].fetched, Some(Fetched::Served { url }) if url.ends_with("/flaky.png")),
        "{:?}",
        sms.media[0].fetched
    );
    // Twilio, with delete_at_carrier: fetched, then deleted there.
    let mut sms2 = sms.clone();
    sms2.media = vec![Media::new(twilio_url, Some("image/png".into()))];
    service
        .fetch_all(
            twilio(&api, "tok").as_ref(),
            "alice@localhost",
            &mut sms2,
            u64::MAX,
            |_| Duration::from_millis(100),
            &never,
        )
        .await
        .unwrap();
    assert!(matches!(
        sms2.media[0].fetched,
        Some(Fetched::Served { .. })
    ));
    assert_eq!(local.usage().0, 2);
    // Past the retry deadline, a temporary failure is given up and said.
    let mut sms3 = sms.clone();
    sms3.media = vec![Media::new(format!("{}/slow.png", cdn.uri()), None)];
    let config: sms_gateway_core::config::MediaConfig =
        serde_json::from_value(serde_json::json!({"timeout_secs": 1})).unwrap();
    let impatient = MediaService::new(&config, local.clone(), None).unwrap();
    impatient
        .fetch_all(
            telnyx.as_ref(),
            "alice@localhost",
            &mut sms3,
            0,
            |_| Duration::from_secs(1),
            &never,
        )
        .await
        .unwrap();
    assert!(
        matches!(&sms3.media[0].fetched, Some(Fetched::Failed { reason }) if reason.contains("after 1 tries")),
        "{:?}",
        sms3.media[0].fetched
    );
}

/// The three carriers' API mocks and a CDN.
struct Mocks {
    twilio: MockServer,
    telnyx: MockServer,
    signalwire: MockServer,
    cdn: MockServer,
}

impl Mocks {
    async fn start() -> Mocks {
        Mocks {
            twilio: MockServer::start().await,
            telnyx: MockServer::start().await,
            signalwire: MockServer::start().await,
            cdn: MockServer::start().await,
        }
    }

    /// One account of each carrier against these mocks.
    fn carriers(&self) -> String {
        three_carriers(
            &self.twilio.uri(),
            &self.telnyx.uri(),
            &self.signalwire.uri(),
        )
    }
}

fn telnyx_mms(id: &str, to: &str, urls: &[&str]) -> serde_json::Value {
    let media: Vec<_> = urls
        .iter()
        .map(|u| serde_json::json!({"url": u, "content_type": "image/png", "size": 100}))
        .collect();
    serde_json::json!({"data": {"event_type": "message.received", "id": id,
        "occurred_at": "2026-11-28T00:00:00Z", "payload": {"id": format!("msg-{id}"),
        "from": {"phone_number": "+15557654321"}, "to": [{"phone_number": to}],
        "text": "", "media": media}, "record_type": "event"}, "meta": {"attempt": 1}})
}

fn laml_mms(sid: &str, account: &str, to: &str, url: &str) -> Vec<(String, String)> {
    [
        ("MessageSid", sid),
        ("AccountSid", account),
        ("From", "+15557654321"),
        ("To", to),
        ("Body", "see this"),
        ("NumMedia", "1"),
        ("MediaUrl0", url),
        ("MediaContentType0", "image/png"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn post_laml(
    gateway: &Gateway,
    account: &str,
    key: &str,
    header: &str,
    params: &[(String, String)],
) {
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sig = twilio_sign(key, &format!("{PUBLIC}/{account}/message"), &refs);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&refs)
        .finish();
    let r = reqwest::Client::new()
        .post(format!("{}/hooks/{account}/message", gateway.http_base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(header, sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

/// The picture message a user got: its URL (body and XEP-0066 alike),
/// checked to be the gateway's, not the carrier's.
fn picture_url(m: &Msg, carrier_url: &str) -> String {
    let url = m.body().expect("a body");
    let oob = m
        .child("x", "jabber:x:oob")
        .and_then(|x| x.children().next())
        .map(|u| u.text());
    assert_eq!(
        oob.as_deref(),
        Some(url.as_str()),
        "body and XEP-0066 agree"
    );
    assert!(url.starts_with(&format!("{PUBLIC}/media/")), "{url}");
    let shown = format!("{:?}", m.0);
    assert!(
        !shown.contains(carrier_url) && !shown.contains("127.0.0.1"),
        "the carrier's URL is nowhere in what the user sees: {shown}"
    );
    url
}

/// An inbound picture through each carrier reaches its user as a link to
/// the gateway that opens without credentials, with the same bytes, its
/// type, ranges and caching headers; an unknown id is a bare 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_picture_through_each_carrier_opens_in_the_client() {
    let prosody = Prosody::start().await;
    let mocks = Mocks::start().await;
    let Mocks {
        twilio,
        signalwire,
        cdn,
        ..
    } = &mocks;
    let gateway = Gateway::start(&gateway_config(&prosody, free_port(), &mocks.carriers())).await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    let mut alice = User::login(&prosody, "alice").await;
    let mut bob = User::login(&prosody, "bob").await;
    let mut carol = User::login(&prosody, "carol").await;

    let pics = [picture(20_000), picture(30_000), picture(40_000)];
    let twilio_url =
        mount_twilio_media(twilio, cdn, "twilio-token", "ME42", &pics[0], "image/png").await;
    post_laml(
        &gateway,
        "main",
        "twilio-token",
        "x-twilio-signature",
        &laml_mms("MM42", TWILIO_SID, "+15550001111", &twilio_url),
    )
    .await;
    let telnyx_url = mount_telnyx_media(cdn, "tx.png", &pics[1], "image/png").await;
    let r = post_telnyx(
        &format!("{}/hooks/tx/message", gateway.http_base),
        &telnyx_mms("ev-1", "+15550002222", &[&telnyx_url]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let sw_url = mount_signalwire_media(
        signalwire,
        SW_PROJECT,
        SW_TOKEN,
        "SM9",
        &pics[2],
        "image/png",
    )
    .await;
    post_laml(
        &gateway,
        "sw",
        SW_KEY,
        "x-signalwire-signature",
        &laml_mms("SM9", SW_PROJECT, "+15550003333", &sw_url),
    )
    .await;

    for (user, carrier_url, want, text) in [
        (&mut alice, &twilio_url, &pics[0], Some("see this")),
        (&mut bob, &telnyx_url, &pics[1], None),
        (&mut carol, &sw_url, &pics[2], Some("see this")),
    ] {
        if let Some(text) = text {
            assert_eq!(user.expect_message().await.body().as_deref(), Some(text));
        }
        let m = user.expect_message().await;
        let url = picture_url(&m, carrier_url);
        let got = download(&gateway, &url).await;
        assert_eq!(got.status(), 200);
        assert_eq!(got.headers()["content-type"], "image/png");
        assert_eq!(
            got.headers()["content-length"],
            want.len().to_string().as_str()
        );
        assert!(got.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable"));
        assert_eq!(got.headers()["x-content-type-options"], "nosniff");
        assert_eq!(&got.bytes().await.unwrap().to_vec(), want);
        // A client resuming a download asks for a range.
        let local = url.replace(PUBLIC, &format!("{}/hooks", gateway.http_base));
        let part = reqwest::Client::new()
            .get(&local)
            .header("range", "bytes=100-199")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(
            part.bytes().await.unwrap().to_vec(),
            want[100..200].to_vec()
        );
        // Another name for the same id, or another id: 404, no hint.
        let wrong_name = download(&gateway, &format!("{}x", url)).await;
        assert_eq!(wrong_name.status(), 404);
        let id = url.split('/').rev().nth(1).unwrap();
        let other = url.replace(id, &"0".repeat(32));
        let unknown = download(&gateway, &other).await;
        assert_eq!(unknown.status(), 404);
        assert_eq!(unknown.text().await.unwrap(), "not found\n");
    }
    // Telnyx's one-use link was used once: by the gateway.
    assert_eq!(
        cdn.received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() == "/messaging/media/tx.png")
            .count(),
        1
    );
    // A carrier's retry of a webhook already taken fetches nothing again.
    let r = post_telnyx(
        &format!("{}/hooks/tx/message", gateway.http_base),
        &telnyx_mms("ev-1", "+15550002222", &[&telnyx_url]),
    )
    .await;
    assert_eq!(r.status(), 200);
    gateway.stop().await;
}

/// The webhook is answered once the text is stored, not after the fetch:
/// a restart while a slow CDN holds the fetch still delivers the picture,
/// fetched by the next run from what the store kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_the_webhook_and_the_fetch_still_delivers() {
    let prosody = Prosody::start().await;
    let mocks = Mocks::start().await;
    let Mocks { cdn, .. } = &mocks;
    Mock::given(method("GET"))
        .and(path("/late.png"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(600)))
        .mount(cdn)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let extra = format!(
        "{}\n[store]\npath = \"{}\"\n",
        mocks.carriers(),
        store.display()
    );
    let config = gateway_config(&prosody, free_port(), &extra);
    let gateway = Gateway::start(&config).await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    let mut bob = User::login(&prosody, "bob").await;
    let late = format!("{}/late.png", cdn.uri());
    let r = post_telnyx(
        &format!("{}/hooks/tx/message", gateway.http_base),
        &telnyx_mms("ev-late", "+15550002222", &[&late]),
    )
    .await;
    assert_eq!(r.status(), 200, "answered before the fetch ends");
    // The fetch has started, and hangs.
    while cdn.received_requests().await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.stop().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("media"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the media directory is private");
    }
    cdn.reset().await;
    let pic = picture(9000);
    Mock::given(method("GET"))
        .and(path("/late.png"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .set_body_bytes(pic.clone()),
        )
        .mount(cdn)
        .await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    let gateway = Gateway::start(&config).await;
    let m = bob.expect_message().await;
    let url = picture_url(&m, &late);
    assert_eq!(
        download(&gateway, &url)
            .await
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        pic
    );
    gateway.stop().await;
}

/// `media.store = "upload"`: the picture goes to the user's own server
/// through XEP-0363, the service found by service discovery, and the user
/// gets that server's URL: Prosody's `http_file_share` and ejabberd's
/// `mod_http_upload`, each with the access line the README gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_mode_puts_the_picture_on_the_users_server() {
    let prosody = Prosody::start_with_upload().await;
    let http = prosody.http_port.unwrap();
    upload_through(&prosody, http, || prosody.log()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_mode_works_with_ejabberd_too() {
    let ejabberd = Ejabberd::start_with_upload().await;
    let http = ejabberd.http_port.unwrap();
    upload_through(&ejabberd, http, || ejabberd.log()).await;
}

async fn upload_through(server: &dyn XmppServer, http: u16, log: impl Fn() -> String) {
    let mocks = Mocks::start().await;
    let Mocks { cdn, .. } = &mocks;
    let extra = format!("{}\n[media]\nstore = \"upload\"\n", mocks.carriers());
    let gateway = Gateway::start(&gateway_config(server, free_port(), &extra)).await;
    let mut bob = User::login(server, "bob").await;
    let pic = picture(12_345);
    let url = mount_telnyx_media(cdn, "up.png", &pic, "image/png").await;
    let r = post_telnyx(
        &format!("{}/hooks/tx/message", gateway.http_base),
        &telnyx_mms("ev-up", "+15550002222", &[&url]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let m = bob.expect_message().await;
    let got = m.body().expect("a link");
    assert!(
        got.starts_with(&format!("http://127.0.0.1:{http}/")) && got.ends_with("/up.png"),
        "{got}; {} log:\n{}",
        server.name(),
        log()
    );
    let oob = m
        .child("x", "jabber:x:oob")
        .and_then(|x| x.children().next())
        .map(|u| u.text());
    assert_eq!(oob.as_deref(), Some(got.as_str()));
    let r = reqwest::get(&got).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), pic);
    bob.quit().await;
    gateway.stop().await;
}

/// A chat's media link on a private address (a local upload service) is
/// refused by default; with `media.relay_private_urls`, the gateway
/// fetches it and hands the carrier its own `/media/` URL instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_links_in_chats_are_refused_or_relayed() {
    let prosody = Prosody::start().await;
    let mocks = Mocks::start().await;
    let Mocks {
        twilio, cdn: local, ..
    } = &mocks;
    Mock::given(method("POST"))
        .and(path(twilio_messages_path()))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": "SM1", "status": "queued"})),
        )
        .mount(twilio)
        .await;
    let pic = picture(777);
    Mock::given(method("GET"))
        .and(path("/upload/abc/photo.png"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .set_body_bytes(pic.clone()),
        )
        .mount(local)
        .await;
    let link = format!("{}/upload/abc/photo.png", local.uri());
    let chat = format!(
        "<message type='chat' to='{CONTACT}' id='p1'><body>{link}</body><x xmlns='jabber:x:oob'><url>{link}</url></x></message>"
    );
    for relay in [false, true] {
        // Relayed only from the listed address (#27).
        let authority = local.uri().trim_start_matches("http://").to_owned();
        let extra = format!(
            "{}\n[media]\nrelay_private_urls = {relay}\nrelay_hosts = [\"{authority}\"]\n",
            mocks.carriers()
        );
        let gateway = Gateway::start(&gateway_config(&prosody, free_port(), &extra)).await;
        prosody
            .wait_component_logins(1, Duration::from_secs(10))
            .await;
        let mut alice = User::login(&prosody, "alice").await;
        alice.send_raw(&chat).await;
        if !relay {
            let m = alice.expect_message().await;
            let (condition, text) = m.error().expect("an error");
            assert_eq!(condition, "not-acceptable");
            assert!(text.contains("media.relay_private_urls"), "{text}");
        } else {
            let sent = wait_requests(twilio, &twilio_messages_path(), 1).await;
            let form: Vec<(String, String)> =
                form_urlencoded::parse(&sent[0].body).into_owned().collect();
            let media = form
                .iter()
                .find(|(k, _)| k == "MediaUrl")
                .map(|(_, v)| v.clone())
                .expect("a MediaUrl");
            assert!(
                media.starts_with(&format!("{PUBLIC}/media/")) && media.ends_with("/photo.png"),
                "{media}"
            );
            let got = download(&gateway, &media).await;
            assert_eq!(got.bytes().await.unwrap().to_vec(), pic);
            // A redirect off the listed address is not followed (#27).
            Mock::given(method("GET"))
                .and(path("/upload/away.png"))
                .respond_with(
                    ResponseTemplate::new(302)
                        .insert_header("location", "http://127.0.0.1:9/latest/meta-data/"),
                )
                .mount(local)
                .await;
            let away = format!("{}/upload/away.png", local.uri());
            alice
                .send_raw(&format!(
                    "<message type='chat' to='{CONTACT}' id='p2'><body>{away}</body><x xmlns='jabber:x:oob'><url>{away}</url></x></message>"
                ))
                .await;
            let m = alice.expect_message().await;
            let (_, text) = m.error().expect("an error");
            assert!(text.contains("redirected off"), "{text}");
        }
        alice.quit().await;
        gateway.stop().await;
    }
}
