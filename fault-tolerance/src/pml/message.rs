//! What travels between objects, what the log holds, and what the body is
//! handed.

use super::ids::{Incarnation, RequestId};

/// A request on the wire. `P` is the payload as the runtime carries it
/// (encoded arguments); the protocol never looks inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<P> {
    /// Target, sender and the sender's sequence number.
    pub id: RequestId,
    /// The sender's incarnation when it sent this.
    pub incarnation: Incarnation,
    /// Every request of this sender to this target numbered `acked` or
    /// less has its reply safe at the sender (observed, or logged by a
    /// protected sender): the target may forget those replies.
    pub acked: u64,
    /// The encoded call.
    pub payload: P,
}

/// A reply on the wire: the value of the request `request`. Every request
/// gets one, one-way calls an empty one, so that its sender can stop
/// retaining it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<P> {
    /// The request this answers.
    pub request: RequestId,
    /// The replier's (the request's target's) incarnation.
    pub incarnation: Incarnation,
    /// The encoded value (or error) of the call.
    pub value: P,
}

/// One message a protected object observes: an entry of its log, and what
/// its body is handed, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<P> {
    /// A request to serve.
    Request(Request<P>),
    /// The reply to a call the object made.
    Reply(Reply<P>),
}
