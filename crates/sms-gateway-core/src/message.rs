//! The messages and events that travel between the three processes.
//!
//! Nothing here knows XMPP wire syntax or any carrier's API: the XMPP process
//! turns stanzas into [`ChatMessage`]s and [`OutgoingStanza`]s back into
//! stanzas; each provider turns its webhooks into [`PstnEvent`]s and
//! [`OutboundSms`] into API calls.

use crate::phone::PhoneNumber;
use serde::Serialize;
use tokio::sync::oneshot;

/// A chat from a user, as the XMPP process read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The sender's full JID as the server stamped it (`alice@example.com/phone`).
    pub from: String,
    /// The contact JID it was addressed to (`+15557654321@sms.example.com`).
    pub to: String,
    /// The stanza id, if the client gave one: receipts and errors refer to it.
    pub id: Option<String>,
    /// The text (the best body whatever its `xml:lang`); empty when the stanza
    /// carried none (a chat state, a marker).
    pub body: String,
    /// Media URLs the chat carries (XEP-0066 out-of-band data).
    pub media: Vec<String>,
    /// Whether the sender asked for a delivery receipt (XEP-0184).
    pub receipt_requested: bool,
    /// A `groupchat` message to a group's room (XEP-0045), which the
    /// sender has joined: it is reflected to the room.
    pub groupchat: bool,
    /// The JIDs of an XEP-0033 `<addresses/>` (`to` and `cc`), when the
    /// client addressed a group that way.
    pub addresses: Vec<String>,
}

impl ChatMessage {
    /// A one-to-one chat: not to a room, no extended addressing.
    pub fn new(from: impl Into<String>, to: impl Into<String>, body: impl Into<String>) -> Self {
        ChatMessage {
            from: from.into(),
            to: to.into(),
            id: None,
            body: body.into(),
            media: vec![],
            receipt_requested: false,
            groupchat: false,
            addresses: vec![],
        }
    }
}

/// What the XMPP process hands the Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XmppEvent {
    /// A chat message addressed to a contact (or to the domain).
    Chat(ChatMessage),
    /// The stanzas of stored inbound text `id` have been written to the
    /// XMPP server: it can leave the store.
    Delivered(u64),
    /// A user subscribed to a contact (or to the gateway's own JID, `to`
    /// without a local part), or ended the subscription: kept, so the
    /// contact is announced available after a restart.
    Subscription {
        /// The user's JID (full or bare).
        from: String,
        /// The contact JID as the user wrote it.
        to: String,
        /// Subscribed (true) or no longer (false).
        subscribed: bool,
    },
    /// A user's session joins a group's room (XEP-0045): the Gateway
    /// answers with [`OutgoingStanza::RoomJoined`].
    Join {
        /// The session's full JID.
        from: String,
        /// The room's bare JID (`+15551112222,+15553334444@sms.example.com`).
        room: String,
        /// The nick the session asked for.
        nick: String,
        /// At most this many history messages (`<history maxstanzas/>`).
        max_history: Option<usize>,
    },
    /// A change to the users (registration, an admin's command, settings).
    /// The Gateway answers with [`OutgoingStanza::Done`] carrying `ticket`.
    Users {
        /// What to change.
        change: UserChange,
        /// The XMPP process's mark for the answer.
        ticket: u64,
    },
}

/// A stored user, as the store keeps it (JSON under its bare JID): what a
/// registration or an admin's *Add user* asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoredUser {
    /// The user's number.
    pub number: PhoneNumber,
    /// The provider account.
    pub account: String,
    /// False while the registration waits for an admin.
    pub approved: bool,
}

/// A change to the users kept in the store (the directory).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserChange {
    /// Adds or replaces a stored user (a registration, or an admin's *Add
    /// user*); `approved: false` waits for an admin.
    Put {
        /// The user's bare JID.
        jid: jid::BareJid,
        /// What to keep.
        user: StoredUser,
    },
    /// Approves a waiting registration.
    Approve {
        /// The user's bare JID.
        jid: jid::BareJid,
    },
    /// Removes a stored user (unregistration, an admin's *Remove user*).
    Remove {
        /// The user's bare JID.
        jid: jid::BareJid,
    },
    /// Turns caller ID on or off for a user.
    CallerId {
        /// The user's bare JID.
        jid: jid::BareJid,
        /// On or off.
        on: bool,
    },
}

/// XMPP error conditions the Gateway uses (RFC 6120 §8.3.3), with their types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCondition {
    /// `auth`/`registration-required`: the sender is not a user of this gateway.
    RegistrationRequired,
    /// `modify`/`jid-malformed`: the contact is not a phone number.
    JidMalformed,
    /// `modify`/`not-acceptable`: the carrier refused the message for good.
    NotAcceptable,
    /// `wait`/`remote-server-timeout`: the carrier could not be reached.
    RemoteServerTimeout,
    /// `cancel`/`recipient-unavailable`: the carrier reports it undeliverable.
    RecipientUnavailable,
    /// `modify`/`bad-request`: something else wrong with the chat.
    BadRequest,
    /// `wait`/`resource-constraint`: the user is over a limit (the rate of
    /// texts); trying later works.
    ResourceConstraint,
    /// `cancel`/`internal-server-error`: our fault.
    InternalServerError,
    /// `auth`/`forbidden`: the contact has opted out of the user's texts;
    /// nothing is sent until they opt back in.
    Forbidden,
}

/// What the Gateway asks the XMPP process to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutgoingStanza {
    /// A `type='chat'` message from a contact.
    Chat {
        /// Contact JID, e.g. `+15557654321@sms.example.com`.
        from: String,
        /// The user's bare JID.
        to: String,
        /// The text; may be empty when only `media` is set.
        body: String,
        /// A media URL sent as XEP-0066 out-of-band data (the body repeats it).
        media_url: Option<String>,
        /// The contact's name (caller ID), when known: the XMPP process
        /// sends it (XEP-0172) with the first chat from that contact.
        nick: Option<String>,
        /// Set on the last stanza of a stored inbound text: once it is
        /// written, the XMPP process reports [`XmppEvent::Delivered`].
        inbound_id: Option<u64>,
        /// The stanza's id (and XEP-0359 origin-id) when it must be the
        /// same at every delivery: a stored inbound text's chats carry one
        /// made from the carrier's id for the text, so a redelivery (after
        /// a crash, a restart, a take-over by another instance) repeats the
        /// first one's id and clients can fold the copies. `None`: the XMPP
        /// process makes one.
        stable_id: Option<String>,
    },
    /// A XEP-0184 `<received/>` for the user's stanza `id`.
    Receipt {
        /// Contact JID.
        from: String,
        /// The user's full JID.
        to: String,
        /// The id of the user's chat.
        id: String,
    },
    /// A `type='error'` message answering the user's chat `id`.
    Error {
        /// Contact JID (or the domain).
        from: String,
        /// The user's full JID.
        to: String,
        /// The id of the user's chat, if it had one.
        id: Option<String>,
        /// The condition.
        condition: ErrorCondition,
        /// A sentence for the user.
        text: String,
    },
    /// Presence from a contact (or the gateway's JID) to a user: the XMPP
    /// process sends it from the contact's full JID (resource `sms`).
    Presence {
        /// Contact JID (bare), or the domain.
        from: String,
        /// The user's bare JID.
        to: String,
        /// Available (true) or unavailable.
        available: bool,
    },
    /// A contact for the user's roster, with its name: pushed through
    /// XEP-0356 where the user's server grants the gateway roster access,
    /// dropped otherwise.
    RosterItem {
        /// Contact JID (bare).
        contact: String,
        /// The user's bare JID.
        user: String,
        /// The contact's name, if known.
        name: Option<String>,
    },
    /// The answer to a session's [`XmppEvent::Join`]: the room's occupants,
    /// its history and its subject, sent in XEP-0045's order.
    RoomJoined {
        /// The room's bare JID.
        room: String,
        /// The session's full JID.
        to: String,
        /// The session's nick.
        nick: String,
        /// The phone participants' nicks.
        occupants: Vec<String>,
        /// What was said, oldest first.
        history: Vec<RoomLine>,
        /// The subject (empty: none).
        subject: String,
    },
    /// A line in a group's room for a user: sent as `groupchat` to each of
    /// the user's sessions in the room; when none is there, the user is
    /// invited instead (XEP-0249 and XEP-0045), and the line waits in the
    /// room's history.
    Group {
        /// The room's bare JID.
        room: String,
        /// The user's bare JID.
        user: String,
        /// The line.
        line: RoomLine,
        /// Set on the last stanza of a stored inbound text (as for
        /// [`OutgoingStanza::Chat`]).
        inbound_id: Option<u64>,
    },
    /// The answer to [`XmppEvent::Users`] `ticket`: done, or refused and why.
    Done {
        /// The mark the XMPP process gave.
        ticket: u64,
        /// Done, or why not (a sentence for the user).
        result: Result<(), String>,
    },
}

/// Who said a line in a group's room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Speaker {
    /// A phone participant, by nick.
    Participant(String),
    /// The user (each session under its own nick).
    User,
    /// The room itself (a notice from the gateway).
    Room,
}

/// One line of a group's room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RoomLine {
    /// Its id: the stanza id of the user's own message (reflected with it),
    /// or one the gateway made; also its XEP-0359 stanza-id.
    pub id: String,
    /// Who said it.
    pub from: Speaker,
    /// The participant's number (for XEP-0033 `ofrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<PhoneNumber>,
    /// The text (or a media URL).
    pub body: String,
    /// A media URL, sent as XEP-0066 out-of-band data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_url: Option<String>,
    /// When it was said (Unix seconds): history carries it (XEP-0203).
    pub at: u64,
}

/// A text to send through a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OutboundSms {
    /// The user's own number.
    pub from: PhoneNumber,
    /// The contact's number (in a group text, the first participant).
    pub to: PhoneNumber,
    /// The text (may be empty when `media` is not).
    pub body: String,
    /// Media URLs for an MMS.
    pub media: Vec<String>,
    /// The other participants of a group text (empty: a one-to-one text).
    /// Only accounts whose [`crate::text::Limits::max_group`] is not zero
    /// are given one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<PhoneNumber>,
}

/// A media item in an inbound MMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Media {
    /// Where to fetch it: the carrier's URL, often temporary or behind the
    /// account's credentials. Never shown to the user when media are
    /// fetched (`[media] store`).
    pub url: String,
    /// Its MIME type, when the carrier says.
    pub content_type: Option<String>,
    /// What became of it once the gateway fetched it; `None` until then
    /// (and always with `[media] store = "link"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<Fetched>,
}

impl Media {
    /// A media item at `url`, not yet fetched.
    pub fn new(url: impl Into<String>, content_type: Option<String>) -> Self {
        Media {
            url: url.into(),
            content_type,
            fetched: None,
        }
    }
}

/// What fetching an inbound media item came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Fetched {
    /// The gateway (or the user's upload service) serves it at `url`.
    Served {
        /// Where the user gets it, without credentials.
        url: String,
    },
    /// It could not be fetched, for good: why, in words for the user (no
    /// carrier URL in them).
    Failed {
        /// Why.
        reason: String,
    },
}

/// A text that arrived from the phone network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InboundSms {
    /// The carrier's id for it (`MessageSid`, event id): used to deduplicate.
    pub id: String,
    /// The sender.
    pub from: PhoneNumber,
    /// The user's number it was sent to.
    pub to: PhoneNumber,
    /// The text.
    pub body: String,
    /// Attached media.
    pub media: Vec<Media>,
    /// In a group text: the other participants the carrier listed (its
    /// `cc`, and any `to` besides the user's number); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<PhoneNumber>,
    /// The MMS subject, if the carrier gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl InboundSms {
    /// A one-to-one text.
    pub fn new(
        id: impl Into<String>,
        from: PhoneNumber,
        to: PhoneNumber,
        body: impl Into<String>,
        media: Vec<Media>,
    ) -> Self {
        InboundSms {
            id: id.into(),
            from,
            to,
            body: body.into(),
            media,
            others: vec![],
            subject: None,
        }
    }

    /// The group this text belongs to, as seen by the user with number
    /// `own`: the sender and the other participants, without `own`,
    /// sorted, each once. `None` for a one-to-one text (fewer than two
    /// numbers besides the user's).
    pub fn group(&self, own: &PhoneNumber) -> Option<Vec<PhoneNumber>> {
        if self.others.is_empty() {
            return None;
        }
        let mut all: Vec<PhoneNumber> = std::iter::once(&self.from)
            .chain(&self.others)
            .filter(|n| *n != own)
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        (all.len() >= 2).then_some(all)
    }
}

/// Where a sent message stands, as the carrier reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// Accepted, on its way (queued, sending, sent): nothing to tell the user.
    InProgress,
    /// The handset has it.
    Delivered,
    /// It will not arrive; why, as the carrier said it.
    Failed(Failure),
}

/// Why a text will not arrive, as the carrier said it: its error code
/// apart (what opt-outs and the plain sentences of `failure` go by) and its
/// words whole (what an operator or the carrier's support needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The carrier's error code (Twilio `30003`, Telnyx `40300`), when it
    /// gave one.
    pub code: Option<String>,
    /// The carrier's words, as the provider puts them together
    /// (`undelivered, error 30003: Unreachable destination handset`).
    pub reason: String,
}

impl Failure {
    /// A failure with the carrier's `code`, if any, and its words.
    pub fn new(code: Option<String>, reason: impl Into<String>) -> Self {
        Failure {
            code: code.filter(|c| !c.is_empty()),
            reason: reason.into(),
        }
    }

    /// A failure known only by its words (a sandbox's injected report, a
    /// report stored before codes were kept apart): the code is read from
    /// `… error NNNNN …` in them, where there is one.
    pub fn from_words(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let code = crate::failure::code_in(&reason).map(str::to_owned);
        Failure { code, reason }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A delivery report for a message we sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The carrier's message id, as `send` returned it.
    pub message_id: String,
    /// The status.
    pub status: DeliveryStatus,
}

/// Why the Gateway would not take an inbound text (the webhook answers 4xx/5xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundRejected {
    /// No configured user has that number on that account.
    #[error("no user of this gateway has the number {0} on this account")]
    UnknownNumber(String),
    /// The gateway could not take it now; the carrier should retry.
    #[error("the gateway is restarting; retry later")]
    Unavailable,
}

/// What the PSTN process hands the Gateway.
#[derive(Debug)]
#[non_exhaustive]
pub enum PstnEvent {
    /// An inbound text. The Gateway answers on `ack` once it has handed the
    /// chat on, so the webhook is answered 2xx only then (invariant 2).
    Inbound {
        /// The provider account it came through.
        account: String,
        /// The text.
        sms: InboundSms,
        /// Where to say whether it was taken.
        ack: oneshot::Sender<Result<(), InboundRejected>>,
    },
    /// A delivery report.
    Status {
        /// The provider account it came through.
        account: String,
        /// The report.
        report: StatusReport,
    },
    /// The media of stored inbound text `id` have been fetched (or failed
    /// for good): `sms` is the text with each item's [`Media::fetched`] set.
    MediaFetched {
        /// The provider account it came through.
        account: String,
        /// The store's id of the text.
        id: u64,
        /// The text, its media fetched.
        sms: InboundSms,
    },
    /// The media of stored inbound text `id` are still being fetched after
    /// `media.wait_secs` (#28): its text goes ahead of them.
    MediaSlow {
        /// The provider account it came through.
        account: String,
        /// The store's id of the text.
        id: u64,
        /// The text, as stored.
        sms: InboundSms,
    },
    /// The outcome of a [`PstnCommand::Send`].
    SendResult {
        /// The `ticket` of the command.
        ticket: u64,
        /// The carrier's message ids of the parts it accepted, in order.
        ids: Vec<String>,
        /// Why the next part was not accepted, if one was not; the parts
        /// after it were not tried.
        error: Option<ProviderError>,
    },
}

/// What the Gateway asks the PSTN process to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PstnCommand {
    /// Send a text, in one or more parts, through an account; the parts go
    /// out one after the other, in order. The outcome comes back as
    /// [`PstnEvent::SendResult`] with the same `ticket`.
    Send {
        /// The provider account.
        account: String,
        /// The parts, each within the account's limits.
        parts: Vec<OutboundSms>,
        /// Chosen by the Gateway to match the result to the chat.
        ticket: u64,
        /// Temporary failures are retried until this time (Unix seconds).
        retry_until: u64,
    },
    /// Fetch the media of stored inbound text `id` (those not yet
    /// [`Media::fetched`]) with the account's credentials, and put them
    /// where the user can get them. The outcome comes back as
    /// [`PstnEvent::MediaFetched`].
    FetchMedia {
        /// The provider account the text came through.
        account: String,
        /// The store's id of the text.
        id: u64,
        /// The user it goes to (bare JID): an upload service is theirs.
        user: String,
        /// The text.
        sms: InboundSms,
        /// Temporary failures are retried until this time (Unix seconds).
        retry_until: u64,
    },
}

/// A tag unique to this run of the program (64 random bits from the
/// operating system, in base 36), for ids that must never repeat an
/// earlier run's and must not be guessed (#27: a forger who could guess
/// the id of a query the gateway sent could answer it): the sandbox's
/// message ids, the XMPP process's stanza ids.
pub fn run_tag() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No randomness from the system (never on Linux): unique still.
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        bytes = (micros ^ (u64::from(std::process::id()) << 48)).to_le_bytes();
    }
    let mut n = u64::from_le_bytes(bytes).max(1);
    let mut tag = Vec::new();
    while n > 0 {
        tag.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    tag.reverse();
    String::from_utf8(tag).expect("ASCII")
}

/// An id nobody can guess (128 random bits, hex), for the queries the
/// gateway sends and believes the answers to.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        return format!("{}{}", run_tag(), run_tag());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a send failed, in a form the retry logic can ask questions of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ProviderError {
    /// What kind of failure.
    pub kind: ProviderErrorKind,
    /// The carrier's own error code (`21211`, `"10011"`), when it gave one.
    pub code: Option<String>,
    /// The carrier's message, or what went wrong on the way.
    pub message: String,
    /// How long the carrier asked us to wait (`Retry-After`), if it did.
    pub retry_after: Option<std::time::Duration>,
}

/// The kinds of [`ProviderError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderErrorKind {
    /// The carrier refused the message and will refuse it again (4xx other than 429).
    Rejected,
    /// The carrier asked us to slow down (429).
    RateLimited,
    /// The carrier failed (5xx).
    CarrierError,
    /// The carrier could not be reached: the request did not leave.
    Network,
    /// No answer: the request left but the answer did not come (a timeout,
    /// a connection broken mid-way). The carrier may have taken the message,
    /// so sending it again could make a duplicate: not retried.
    Timeout,
    /// Our credentials were refused (401/403): fix the config.
    Unauthorized,
}

impl ProviderError {
    /// A new error of `kind` with a message.
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            code: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds the carrier's error code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Classifies an HTTP status the carrier answered with.
    pub fn from_http_status(status: u16, message: impl Into<String>) -> Self {
        let kind = match status {
            429 => ProviderErrorKind::RateLimited,
            401 | 403 => ProviderErrorKind::Unauthorized,
            400..=499 => ProviderErrorKind::Rejected,
            _ => ProviderErrorKind::CarrierError,
        };
        ProviderError::new(kind, message)
    }

    /// Whether trying again later may succeed and cannot duplicate the text:
    /// rate limits, carrier 5xx and failures to connect are temporary;
    /// refusals are not, and neither is a request left unanswered
    /// ([`ProviderErrorKind::Timeout`]), which may have been taken.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self.kind,
            ProviderErrorKind::RateLimited
                | ProviderErrorKind::CarrierError
                | ProviderErrorKind::Network
        )
    }

    fn describe(&self) -> String {
        let what = match self.kind {
            ProviderErrorKind::Rejected => "carrier refused the message",
            ProviderErrorKind::RateLimited => "carrier rate limit",
            ProviderErrorKind::CarrierError => "carrier error",
            ProviderErrorKind::Network => "carrier unreachable",
            ProviderErrorKind::Timeout => {
                "carrier did not answer (the text may or may not have been sent)"
            }
            ProviderErrorKind::Unauthorized => "carrier refused our credentials",
        };
        match &self.code {
            Some(code) => format!("{what}: error {code}: {}", self.message),
            None => format!("{what}: {}", self.message),
        }
    }
}
