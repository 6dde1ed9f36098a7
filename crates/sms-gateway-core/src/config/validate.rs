//! Checking a config without connecting: bounds, forms, users, accounts.

use super::*;

impl Config {
    /// What is allowed but unsafe, in sentences naming the key: plain
    /// `http://` for the URL carriers call or for a carrier's API (secrets
    /// and texts in clear), and an XEP-0114 link to another host (the
    /// protocol has no TLS: the secret's hash and every text cross the
    /// network in clear). `check` prints them; `run` logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let plain = |url: &str| {
            url.parse::<http::Uri>()
                .ok()
                .filter(|u| u.scheme_str() == Some("http"))
                .and_then(|u| u.host().map(str::to_owned))
        };
        if self.media.store == MediaStoreKind::Link {
            out.push("`media.store` = \"link\": users get the carriers' own media URLs, which need Twilio's credentials and expire at Telnyx; \"local\" or \"upload\" fetch them for the users".into());
        }
        if let Some(host) = plain(&self.http.public_url) {
            if !is_loopback_host(&host) {
                out.push(format!("`http.public_url` is plain http://: carriers will send texts and signatures to {host} unencrypted; use https:// behind a TLS proxy"));
            }
        }
        for (name, p) in &self.providers {
            if let Some(serde_json::Value::String(base)) = p.settings.get("api_base") {
                if let Some(host) = plain(base) {
                    if !is_loopback_host(&host) {
                        out.push(format!("`providers.{name}.api_base` is plain http://: credentials and texts would go to {host} unencrypted"));
                    }
                }
            }
        }
        let host = self
            .xmpp
            .server
            .rsplit_once(':')
            .map_or(self.xmpp.server.as_str(), |(h, _)| h);
        if !is_loopback_host(host.trim_start_matches('[').trim_end_matches(']')) {
            out.push(format!("`xmpp.server` = {:?} is not on this machine: XEP-0114 links are unencrypted, so keep the server's component port on loopback or a private network", self.xmpp.server));
        }
        out
    }

    /// Checks everything in the config itself that can be checked without
    /// connecting ([`Config::validate`] then builds what it describes).
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.xmpp.server.parse::<SocketAddr>().is_err()
            && !looks_like_host_port(&self.xmpp.server)
        {
            return Err(invalid(
                "xmpp.server",
                &self.xmpp.server,
                "expected host:port of the XMPP server's component port",
            ));
        }
        if self.xmpp.domain.is_empty()
            || self.xmpp.domain.contains(['@', '/', ' '])
            || !self.xmpp.domain.contains('.') && self.xmpp.domain != "localhost"
        {
            return Err(invalid(
                "xmpp.domain",
                &self.xmpp.domain,
                "expected a domain name such as sms.example.com",
            ));
        }
        if self.xmpp.secret.is_empty() {
            return Err(invalid("xmpp.secret", "", "must not be empty"));
        }
        if let Some(url) = &self.store.url {
            if self.store.path.is_some() {
                return Err(invalid(
                    "store.url",
                    "(hidden)",
                    "set store.url (PostgreSQL) or store.path (SQLite), not both",
                ));
            }
            let u = url.expose();
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                return Err(invalid(
                    "store.url",
                    "(hidden)",
                    "expected a PostgreSQL URL: postgres://user:password@host:5432/database",
                ));
            }
        }
        if let Some(cluster) = &self.cluster {
            if self.store.url.is_none() {
                return Err(invalid(
                    "cluster",
                    "(set)",
                    "several instances share a PostgreSQL store: set store.url too",
                ));
            }
            if let Some(name) = &cluster.instance {
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    return Err(invalid(
                        "cluster.instance",
                        name,
                        "expected 1 to 64 letters, digits, '.', '_' or '-'",
                    ));
                }
            }
            if !(3..=600).contains(&cluster.lease_secs) {
                return Err(invalid(
                    "cluster.lease_secs",
                    cluster.lease_secs.to_string(),
                    "expected 3 to 600 seconds",
                ));
            }
        }
        if self.store.keep_days == 0 {
            return Err(invalid("store.keep_days", "0", "must be at least 1"));
        }
        if self.store.seen_days < self.store.keep_days {
            return Err(invalid(
                "store.seen_days",
                self.store.seen_days.to_string(),
                format!(
                    "must be at least store.keep_days ({}): carrier ids outlive their texts",
                    self.store.keep_days
                ),
            ));
        }
        if self.xmpp.keepalive_secs == 0 {
            return Err(invalid("xmpp.keepalive_secs", "0", "must be at least 1"));
        }
        // Upper bounds: past them a value is a typo, and some would overflow
        // a clock's arithmetic at run time rather than fail here.
        const HOUR: u64 = 3600;
        for (key, value, most) in [
            ("xmpp.keepalive_secs", self.xmpp.keepalive_secs, HOUR),
            (
                "http.header_timeout_secs",
                self.http.header_timeout_secs,
                HOUR,
            ),
            ("http.body_timeout_secs", self.http.body_timeout_secs, HOUR),
            ("http.ack_timeout_secs", self.http.ack_timeout_secs, HOUR),
            (
                "http.max_connections",
                self.http.max_connections as u64,
                65_536,
            ),
            (
                "http.max_form_body",
                self.http.max_form_body as u64,
                64 << 20,
            ),
            ("http.max_body", self.http.max_body as u64, 64 << 20),
            (
                "retry.deadline_secs",
                self.retry.deadline_secs,
                30 * 24 * HOUR,
            ),
            ("store.keep_days", self.store.keep_days, 36_500),
            ("store.seen_days", self.store.seen_days, 36_500),
            ("limits.max_parts", self.limits.max_parts as u64, 1_000),
            ("media.max_bytes", self.media.max_bytes, 1 << 30),
            ("media.timeout_secs", self.media.timeout_secs, HOUR),
            ("media.keep_days", self.media.keep_days, 36_500),
            ("media.max_total_bytes", self.media.max_total_bytes, 1 << 50),
            ("media.wait_secs", self.media.wait_secs, HOUR),
        ] {
            if value > most {
                return Err(invalid(
                    key,
                    value.to_string(),
                    format!("must be at most {most}"),
                ));
            }
        }
        for (key, value) in [
            (
                "limits.texts_per_minute",
                u64::from(self.limits.texts_per_minute),
            ),
            ("limits.texts_burst", u64::from(self.limits.texts_burst)),
            ("limits.max_parts", self.limits.max_parts as u64),
            ("http.max_connections", self.http.max_connections as u64),
            ("http.header_timeout_secs", self.http.header_timeout_secs),
            ("http.body_timeout_secs", self.http.body_timeout_secs),
            ("http.max_form_body", self.http.max_form_body as u64),
            ("http.max_body", self.http.max_body as u64),
            ("http.ack_timeout_secs", self.http.ack_timeout_secs),
            ("media.max_bytes", self.media.max_bytes),
            ("media.timeout_secs", self.media.timeout_secs),
            ("media.keep_days", self.media.keep_days),
            ("media.max_total_bytes", self.media.max_total_bytes),
            ("media.wait_secs", self.media.wait_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "0", "must be at least 1"));
            }
        }
        if let Some(per_day) = self.limits.texts_per_day {
            if (per_day as usize) < self.limits.max_parts.max(1) {
                return Err(invalid(
                    "limits.texts_per_day",
                    per_day.to_string(),
                    format!(
                        "must be at least limits.max_parts ({}), or a text of that many segments could never be sent",
                        self.limits.max_parts
                    ),
                ));
            }
        }
        if self.media.relay_private_urls && self.media.relay_hosts.is_empty() {
            return Err(invalid(
                "media.relay_hosts",
                "[]",
                "must name the host:port addresses to relay from (your upload service's, say \"xmpp.lan:5281\") when media.relay_private_urls is set: the gateway never fetches anywhere on the operator's network for a user",
            ));
        }
        for host in &self.media.relay_hosts {
            let ok = host
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(invalid(
                    "media.relay_hosts",
                    host.clone(),
                    "each must be host:port, as in \"xmpp.lan:5281\"",
                ));
            }
        }
        if (self.limits.texts_burst as usize) < self.limits.max_parts {
            return Err(invalid(
                "limits.texts_burst",
                self.limits.texts_burst.to_string(),
                format!(
                    "must be at least limits.max_parts ({}), or a text of that many parts could never be sent",
                    self.limits.max_parts
                ),
            ));
        }
        let url = &self.http.public_url;
        let parsed = url.parse::<http::Uri>();
        let ok = matches!(&parsed, Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && u.query().is_none());
        if !ok {
            return Err(invalid(
                "http.public_url",
                url,
                "expected an http(s) URL without a query, such as https://sms.example.com/hooks",
            ));
        }
        if let Some(prefix) = &self.phone.default_prefix {
            let digits = prefix.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(invalid(
                    "phone.default_prefix",
                    prefix,
                    "expected + and a country calling code, such as +1 or +44",
                ));
            }
        }
        if let Some(region) = &self.phone.default_region {
            if region.parse::<phonenumber::country::Id>().is_err() {
                return Err(invalid(
                    "phone.default_region",
                    region,
                    "expected an ISO 3166 country code such as US or GB",
                ));
            }
        }
        for (i, domain) in self.registration.open_to.iter().enumerate() {
            if domain.is_empty() || domain.contains(['@', '/', ' ']) {
                return Err(invalid(
                    format!("registration.open_to[{i}]"),
                    domain,
                    "expected a JID domain such as example.com",
                ));
            }
        }
        for (i, j) in self.admins.jids.iter().enumerate() {
            if normalize_bare_jid(j).is_none() {
                return Err(invalid(
                    format!("admins.jids[{i}]"),
                    j,
                    "expected a bare JID such as admin@example.com",
                ));
            }
        }
        if self.registration.approval && self.admins.jids.is_empty() {
            return Err(invalid(
                "registration.approval",
                "true",
                "needs admins.jids: someone must approve the registrations",
            ));
        }
        for (name, p) in &self.providers {
            for (i, number) in p.registration_numbers.iter().enumerate() {
                if let Err(e) = PhoneNumber::parse(number, None) {
                    return Err(invalid(
                        format!("providers.{name}.registration_numbers[{i}]"),
                        number,
                        e.in_config(),
                    ));
                }
            }
        }
        for (key, value) in &self.caller_id {
            if key == "lookup" {
                if !Path::new(value).is_absolute() {
                    return Err(invalid(
                        "caller_id.lookup",
                        value,
                        "expected the absolute path of a program",
                    ));
                }
                continue;
            }
            if let Err(e) = PhoneNumber::parse(key, None) {
                return Err(invalid(
                    format!("caller_id.\"{key}\""),
                    value,
                    format!("the key must be a number in E.164 form: {}", e.in_config()),
                ));
            }
        }
        if let Some(service) = &self.media.upload_service {
            if !is_domain(service) {
                return Err(invalid(
                    "media.upload_service",
                    service,
                    "expected the JID of an XEP-0363 upload service, such as upload.example.com",
                ));
            }
        }
        if self.providers.contains_key("media") {
            return Err(invalid(
                "providers.media",
                "media",
                "`media` is the path of the gateway's media files; name the account otherwise",
            ));
        }
        Ok(())
    }
}

/// A domain name as XMPP addresses use them: `upload.example.com`.
fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn looks_like_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

pub(crate) fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Whether `host` names this machine (`localhost`, 127.0.0.0/8, ::1).
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
