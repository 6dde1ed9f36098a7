//! Delivery reports become receipts, or errors naming why a text did not
//! arrive.

use super::{Action, Gateway, EARLY_MEMORY};
use crate::message::{DeliveryStatus, ErrorCondition, OutgoingStanza, StatusReport};
use crate::store::{ChatRecord, ChatState, Transaction};

impl Gateway {
    pub(super) fn on_status(
        &self,
        tx: &mut dyn Transaction,
        account: &str,
        report: StatusReport,
    ) -> Vec<Action> {
        if report.status == DeliveryStatus::InProgress {
            return vec![];
        }
        let key = (account.to_owned(), report.message_id);
        let found = match tx.find_sent(&key.0, &key.1) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "cannot look a delivery report up");
                return vec![];
            }
        };
        if found.is_none() && self.store.member().is_some() {
            // Another instance may have sent it and not yet recorded the
            // send's result: kept where that instance will look.
            if let Err(e) = tx.keep_early(&key.0, &key.1, &report.status, crate::time::unix_now()) {
                tracing::error!(error = %e, "cannot keep an early delivery report");
            }
        }
        if found.is_none() {
            let mut state = self.state();
            if state.sending.is_empty() {
                tracing::debug!(message_id = %key.1, "delivery report for a message we do not remember");
            } else {
                // Its send's result may still be on the way: keep it for then.
                if state.early.insert(key.clone(), report.status).is_none() {
                    state.early_order.push_back(key);
                }
                while state.early_order.len() > EARLY_MEMORY {
                    if let Some(old) = state.early_order.pop_front() {
                        state.early.remove(&old);
                    }
                }
            }
            return vec![];
        }
        self.apply_status(tx, &key, report.status, found)
    }

    /// A final report for one part of a sent chat (`found`: the chat, if
    /// already looked up).
    pub(super) fn apply_status(
        &self,
        tx: &mut dyn Transaction,
        key: &(String, String),
        status: DeliveryStatus,
        found: Option<(u64, ChatRecord)>,
    ) -> Vec<Action> {
        let found = match found {
            Some(f) => Ok(Some(f)),
            None => tx.find_sent(&key.0, &key.1),
        };
        let (ticket, mut chat) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return vec![],
            Err(e) => {
                tracing::error!(error = %e, "cannot look a delivery report up");
                return vec![];
            }
        };
        let ChatState::Sent { ids, undelivered } = &mut chat.state else {
            return vec![];
        };
        let parts = ids.len();
        match &status {
            DeliveryStatus::Delivered => self.routing.metrics.count(
                crate::metrics::Counted::Deliveries,
                &chat.account,
                "delivered",
            ),
            DeliveryStatus::Failed(_) => self.routing.metrics.count(
                crate::metrics::Counted::Deliveries,
                &chat.account,
                "failed",
            ),
            _ => {}
        }
        if chat.group {
            // Reports come per recipient: a delivery to one says nothing
            // of the others (and from other carriers none may come).
            let DeliveryStatus::Failed(reason) = status else {
                return vec![];
            };
            self.routing.activity.carrier_error(
                crate::time::unix_now(),
                &chat.account,
                &format!("group text not delivered: {reason}"),
            );
            return vec![Action::Xmpp(OutgoingStanza::Error {
                from: chat.contact_jid,
                to: chat.user_full_jid,
                id: chat.stanza_id,
                condition: ErrorCondition::RecipientUnavailable,
                // The carrier's reason names the participant (`to +1…: …`).
                text: if reason.reason.starts_with("to ") {
                    format!("Not delivered {reason}.")
                } else {
                    format!("Not delivered to one of the group: {reason}.")
                },
            })];
        }
        match status {
            DeliveryStatus::InProgress => return vec![],
            DeliveryStatus::Delivered if *undelivered > 1 => {
                // Another part still to come. This part's id leaves the
                // receipt map, so a carrier repeating its report does not
                // count it twice.
                *undelivered -= 1;
                if let Err(e) = tx
                    .update_chat(ticket, &chat)
                    .and_then(|()| tx.forget_sent_id(&key.0, &key.1))
                {
                    tracing::error!(error = %e, "cannot store a delivery report");
                }
                return vec![];
            }
            DeliveryStatus::Delivered | DeliveryStatus::Failed(_) => {}
        }
        if let Err(e) = tx.delete_chat(ticket) {
            tracing::error!(error = %e, "cannot forget a chat");
        }
        match status {
            DeliveryStatus::Delivered => match (chat.receipt, chat.stanza_id) {
                (true, Some(id)) => vec![Action::Xmpp(OutgoingStanza::Receipt {
                    from: chat.contact_jid,
                    to: chat.user_full_jid,
                    id,
                })],
                _ => vec![],
            },
            DeliveryStatus::Failed(reason) => {
                self.routing.activity.carrier_error(
                    crate::time::unix_now(),
                    &chat.account,
                    &format!("not delivered: {reason}"),
                );
                let code = reason.code.as_deref();
                let opted_out = code.and_then(crate::failure::kind_of)
                    == Some(crate::failure::FailureKind::OptedOut);
                if opted_out {
                    // Telnyx reports its opt-out block in the delivery
                    // report: the contact is marked as for a refused send.
                    let number = chat
                        .contact_jid
                        .split('@')
                        .next()
                        .and_then(|n| crate::phone::PhoneNumber::parse(n, None).ok());
                    if let (Some(n), Some(user)) = (number, chat.user_full_jid.split('/').next()) {
                        self.set_opted_out(tx, user, &n, true);
                    }
                }
                let why = crate::failure::readable(code, &reason.reason);
                let mut text = if parts > 1 {
                    format!("Part of the text was not delivered: {why}")
                } else {
                    format!("Not delivered: {why}")
                };
                if !text.ends_with('.') {
                    text.push('.');
                }
                vec![Action::Xmpp(OutgoingStanza::Error {
                    from: chat.contact_jid,
                    to: chat.user_full_jid,
                    id: chat.stanza_id,
                    condition: if opted_out {
                        ErrorCondition::Forbidden
                    } else {
                        ErrorCondition::RecipientUnavailable
                    },
                    text,
                })]
            }
            DeliveryStatus::InProgress => vec![],
        }
    }
}
