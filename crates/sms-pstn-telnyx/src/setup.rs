//! Account set-up through Telnyx's API (`check --online`,
//! `configure-carrier`): the key is checked with `GET /v2/balance`; a
//! number is found with `GET /v2/phone_numbers?filter[phone_number]=…`;
//! its inbound texts go where its messaging profile's `webhook_url` says
//! (`GET`/`PATCH /v2/messaging_profiles/{id}`), so pointing one number
//! points every number of that profile.

use crate::{ApiError, TelnyxProvider};
use serde::Deserialize;
use sms_gateway_core::http::Method;
use sms_gateway_core::provider::NumberSetup;
use sms_gateway_core::{PhoneNumber, ProviderError, ProviderErrorKind};

#[derive(Deserialize)]
struct One<T> {
    data: T,
}

#[derive(Deserialize)]
struct Many<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

#[derive(Default, Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<ApiError>,
}

#[derive(Deserialize)]
struct Balance {
    #[serde(default)]
    balance: Option<String>,
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Deserialize)]
struct Number {
    #[serde(default)]
    phone_number: Option<String>,
    #[serde(default)]
    messaging_profile_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct Profile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    webhook_url: Option<String>,
}

/// A messaging profile id as Telnyx makes them (a UUID); anything else is
/// not put in a URL path.
fn is_profile_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

impl TelnyxProvider {
    /// One set-up call: `method` on `{api_base}{path}` with a JSON body,
    /// if any; the answer's JSON, or Telnyx's error.
    async fn setup_call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ProviderError> {
        let url = sms_gateway_core::http::endpoint(&format!("{}{path_and_query}", self.api_base))
            .map_err(|e| ProviderError::new(ProviderErrorKind::Rejected, e))?;
        let body = body.map(|b| ("application/json", b.to_string().into()));
        let answer = self
            .http
            .call("Telnyx", method, &url, &self.authorization, body)
            .await?;
        if !answer.status.is_success() {
            let json: Errors = serde_json::from_slice(&answer.body).unwrap_or_default();
            let first = json.errors.first();
            return Err(sms_gateway_core::http::carrier_error(
                answer.status.as_u16(),
                first.and_then(|e| e.detail.clone().or_else(|| e.title.clone())),
                first.and_then(|e| e.code.as_ref()),
                "10011",
                sms_gateway_core::http::retry_after(&answer.headers),
            ));
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            ProviderError::new(
                ProviderErrorKind::CarrierError,
                format!(
                    "Telnyx answered {} with JSON we cannot read: {e}",
                    answer.status
                ),
            )
        })
    }

    pub(crate) async fn setup_whoami(&self) -> Result<String, ProviderError> {
        let b: One<Balance> = self.setup_call(Method::GET, "/v2/balance", None).await?;
        Ok(format!(
            "balance {} {}",
            b.data.balance.as_deref().unwrap_or("?"),
            b.data.currency.as_deref().unwrap_or("")
        )
        .trim_end()
        .to_owned())
    }

    pub(crate) async fn setup_find(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<NumberSetup>, ProviderError> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("filter[phone_number]", number.as_str())
            .finish();
        let list: Many<Number> = self
            .setup_call(Method::GET, &format!("/v2/phone_numbers?{query}"), None)
            .await?;
        let Some(found) = list
            .data
            .into_iter()
            .find(|n| n.phone_number.as_deref() == Some(number.as_str()))
        else {
            return Ok(None);
        };
        let profile_id = found.messaging_profile_id.filter(|p| !p.is_empty());
        let Some(profile_id) = profile_id.filter(|p| is_profile_id(p)) else {
            return Ok(Some(NumberSetup {
                handle: String::new(),
                handle_name: "no messaging profile".into(),
                inbound_url: None,
                method: None,
                blocked: Some(format!(
                    "the number is in no messaging profile{}: assign it to one (Telnyx portal, \
                     Messaging; or PATCH /v2/messaging_phone_numbers/{number}), then run \
                     `sms-over-xmpp configure-carrier`",
                    found
                        .status
                        .filter(|s| s != "active")
                        .map(|s| format!(" and is {s}"))
                        .unwrap_or_default()
                )),
            }));
        };
        let profile: One<Profile> = self
            .setup_call(
                Method::GET,
                &format!("/v2/messaging_profiles/{profile_id}"),
                None,
            )
            .await?;
        Ok(Some(NumberSetup {
            handle_name: format!(
                "messaging profile {} ({profile_id}; every number in it)",
                profile.data.name.as_deref().unwrap_or("unnamed")
            ),
            handle: profile_id,
            inbound_url: profile.data.webhook_url,
            method: None,
            blocked: None,
        }))
    }

    pub(crate) async fn setup_point(
        &self,
        number: &NumberSetup,
        url: &str,
    ) -> Result<(), ProviderError> {
        if !is_profile_id(&number.handle) {
            return Err(ProviderError::new(
                ProviderErrorKind::Rejected,
                format!("`{}` is not a messaging profile id", number.handle),
            ));
        }
        let updated: One<Profile> = self
            .setup_call(
                Method::PATCH,
                &format!("/v2/messaging_profiles/{}", number.handle),
                Some(serde_json::json!({"webhook_url": url, "webhook_api_version": "2"})),
            )
            .await?;
        if updated.data.webhook_url.as_deref() != Some(url) {
            return Err(ProviderError::new(
                ProviderErrorKind::CarrierError,
                format!(
                    "Telnyx took the change but answered with webhook_url {:?}",
                    updated.data.webhook_url.unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }
}
