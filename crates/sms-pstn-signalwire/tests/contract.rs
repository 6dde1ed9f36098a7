//! SignalWire runs the provider contract suite against a wiremock SignalWire,
//! through the LaML fixture it shares with Twilio.

use sms_gateway_core::{ProviderContext, PstnProvider};
use sms_pstn_laml::testkit::LamlFixture;
use sms_pstn_signalwire::SignalWireProvider;
use std::sync::Arc;

fn build(api_base: &str) -> Arc<dyn PstnProvider> {
    let ctx = ProviderContext {
        account: "sw".into(),
        webhook_base: "https://sms.example.com/hooks/sw".into(),
    };
    let v = serde_json::json!({
        "space": "example.signalwire.com", "project_id": "p-1", "api_token": "PT-token",
        "signing_key": "PSK-contract", "api_base": api_base,
    });
    Arc::new(SignalWireProvider::new(&ctx, serde_json::from_value(v).unwrap()).unwrap())
}

fn fixture() -> LamlFixture {
    LamlFixture {
        build,
        messages_path: "/api/laml/2010-04-01/Accounts/p-1/Messages.json".into(),
        signature_header: "x-signalwire-signature",
        signing_key: "PSK-contract".into(),
        webhook_base: "https://sms.example.com/hooks/sw".into(),
    }
}

#[tokio::test]
async fn signalwire_meets_the_provider_contract() {
    sms_gateway_core::testkit::run_contract(&fixture()).await;
}

#[tokio::test]
async fn signalwire_account_setup_calls() {
    sms_pstn_laml::testkit::run_setup_contract(&fixture(), "p-1:PT-token").await;
}
