//! Twilio runs the provider contract suite against a wiremock Twilio.

use sms_gateway_core::{ProviderContext, PstnProvider};
use sms_pstn_laml::testkit::LamlFixture;
use sms_pstn_twilio::{TwilioConfig, TwilioProvider};
use std::sync::Arc;

const SID: &str = "AC0123456789abcdef0123456789abcdef";

fn build(api_base: &str) -> Arc<dyn PstnProvider> {
    let ctx = ProviderContext {
        account: "main".into(),
        webhook_base: "https://sms.example.com/hooks/main".into(),
    };
    let cfg: TwilioConfig = serde_json::from_value(serde_json::json!({
        "account_sid": SID, "auth_token": "contract-token", "api_base": api_base,
    }))
    .unwrap();
    Arc::new(TwilioProvider::new(&ctx, cfg).unwrap())
}

fn fixture() -> LamlFixture {
    LamlFixture {
        build,
        messages_path: format!("/2010-04-01/Accounts/{SID}/Messages.json"),
        signature_header: "x-twilio-signature",
        signing_key: "contract-token".into(),
        webhook_base: "https://sms.example.com/hooks/main".into(),
    }
}

#[tokio::test]
async fn twilio_meets_the_provider_contract() {
    sms_gateway_core::testkit::run_contract(&fixture()).await;
}

#[tokio::test]
async fn twilio_account_setup_calls() {
    sms_pstn_laml::testkit::run_setup_contract(&fixture(), &format!("{SID}:contract-token")).await;
}
