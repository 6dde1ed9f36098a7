//! The account set-up calls (`check --online`, `configure-carrier`) against
//! a wiremock Telnyx answering in the shapes of Telnyx's API reference
//! (`GET /v2/balance`, `GET /v2/phone_numbers`, `GET`/`PATCH
//! /v2/messaging_profiles/{id}`; errors `{"errors":[{code, title,
//! detail}]}`).

use sms_gateway_core::{PhoneNumber, ProviderContext, ProviderErrorKind, PstnProvider};
use sms_pstn_telnyx::TelnyxProvider;
use std::sync::Arc;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PROFILE: &str = "400174af-0a13-4e28-b4f5-2a64e8b9d1c7";
const URL: &str = "https://sms.example.com/hooks/tx/message";

fn provider(api_base: &str) -> Arc<dyn PstnProvider> {
    let ctx = ProviderContext {
        account: "tx".into(),
        webhook_base: "https://sms.example.com/hooks/tx".into(),
    };
    // PyNaCl's `SigningKey(bytes(range(32))).verify_key`: any valid key
    // will do, the set-up calls verify no signature.
    let public_key = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
    TelnyxProvider::from_config(
        &ctx,
        serde_json::json!({"api_key": "KEY-setup", "public_key": public_key, "api_base": api_base}),
    )
    .unwrap()
}

fn unauthorized() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(serde_json::json!({"errors": [{
        "code": "10009", "title": "Authentication failed",
        "detail": "Could not understand the provided credentials.",
        "meta": {"url": "https://developers.telnyx.com/docs/overview/errors/10009"}}]}))
}

fn profile(webhook_url: &str) -> serde_json::Value {
    serde_json::json!({"data": {
        "record_type": "messaging_profile", "id": PROFILE, "name": "Gateway",
        "enabled": true, "webhook_url": webhook_url, "webhook_failover_url": "",
        "webhook_api_version": "2", "whitelisted_destinations": ["US"],
        "created_at": "2026-01-23T18:10:02.574Z", "updated_at": "2026-01-23T18:10:02.574Z"}})
}

#[tokio::test]
async fn whoami_reads_the_balance_and_names_a_refused_key() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/balance"))
        .and(header("authorization", "Bearer KEY-setup"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {
            "record_type": "balance", "balance": "300.00", "credit_limit": "100.00",
            "available_credit": "400.00", "currency": "USD", "pending": "10.00"}})),
        )
        .mount(&server)
        .await;
    assert_eq!(
        provider(&server.uri()).whoami().await.unwrap(),
        "balance 300.00 USD"
    );

    let refusing = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(unauthorized())
        .mount(&refusing)
        .await;
    let e = provider(&refusing.uri()).whoami().await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Unauthorized);
    assert_eq!(e.code.as_deref(), Some("10009"));
    assert!(e.message.contains("credentials"), "{e}");
}

#[tokio::test]
async fn a_number_is_found_with_its_profile_and_pointed_through_it() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/phone_numbers"))
        .and(query_param("filter[phone_number]", "+15550002222"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "data": [{"id": "1293384261075731499", "record_type": "phone_number",
                      "phone_number": "+15550002222", "status": "active",
                      "messaging_profile_id": PROFILE, "messaging_profile_name": "Gateway",
                      "connection_id": "1293384261075731400", "tags": []}],
            "meta": {"total_pages": 1, "total_results": 1, "page_number": 1, "page_size": 20}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/messaging_profiles/{PROFILE}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(profile("https://old.example.com/tx")),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/phone_numbers"))
        .and(query_param("filter[phone_number]", "+15550009999"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "data": [], "meta": {"total_pages": 0, "total_results": 0, "page_number": 1, "page_size": 20}})))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v2/messaging_profiles/{PROFILE}")))
        .and(header("content-type", "application/json"))
        .and(body_json(
            serde_json::json!({"webhook_url": URL, "webhook_api_version": "2"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(profile(URL)))
        .expect(1)
        .mount(&server)
        .await;
    let p = provider(&server.uri());
    let found = p
        .find_number(&PhoneNumber::parse("+15550002222", None).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.handle, PROFILE);
    assert!(
        found.handle_name.contains("messaging profile Gateway"),
        "{found:?}"
    );
    assert_eq!(
        found.inbound_url.as_deref(),
        Some("https://old.example.com/tx")
    );
    assert_eq!(found.blocked, None);
    assert_eq!(
        p.find_number(&PhoneNumber::parse("+15550009999", None).unwrap())
            .await
            .unwrap(),
        None
    );
    p.point_number(&found, URL).await.unwrap();
    let mut bad = found.clone();
    bad.handle = "../phone_numbers".into();
    assert_eq!(
        p.point_number(&bad, URL).await.unwrap_err().kind,
        ProviderErrorKind::Rejected
    );
}

#[tokio::test]
async fn a_number_in_no_profile_says_what_to_do() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/phone_numbers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "data": [{"id": "1293384261075731499", "record_type": "phone_number",
                      "phone_number": "+15550002222", "status": "active",
                      "messaging_profile_id": null, "messaging_profile_name": null}],
            "meta": {"total_pages": 1, "total_results": 1, "page_number": 1, "page_size": 20}})))
        .mount(&server)
        .await;
    let found = provider(&server.uri())
        .find_number(&PhoneNumber::parse("+15550002222", None).unwrap())
        .await
        .unwrap()
        .unwrap();
    let why = found.blocked.unwrap();
    assert!(why.contains("no messaging profile"), "{why}");
    assert!(why.contains("messaging_phone_numbers"), "{why}");
}
