//! Every end-to-end suite, one module each, in one test binary: the stack is
//! linked once, not once a suite (`cargo test -p sms-over-xmpp-tests` runs
//! them all; `cargo test -p sms-over-xmpp-tests -- hostile::` runs one).

mod carrier_setup;
mod carriers;
mod citizen;
mod clients;
mod cluster;
mod faults;
mod groups;
mod hostile;
mod media;
mod operations;
mod postgres;
mod profanity;
mod sandbox;
mod twilio;
