//! The generated protobuf types and service of `wire.proto`, and their
//! conversions to the runtime's own types. Nothing outside this module and
//! `connection` sees protobuf.

#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("actogrid.runtime.v1");

use crate::future::{FutureId as Id, Status as St};

impl From<Id> for FutureId {
    fn from(id: Id) -> Self {
        FutureId {
            origin: id.origin,
            number: id.number,
        }
    }
}

impl From<&FutureId> for Id {
    fn from(id: &FutureId) -> Self {
        Id {
            origin: id.origin,
            number: id.number,
        }
    }
}

impl From<St> for Status {
    fn from(s: St) -> Self {
        match s {
            St::Ok => Status::Ok,
            St::MethodError => Status::MethodError,
            St::Panicked => Status::Panicked,
            St::NoSuchObject => Status::NoSuchObject,
            St::BadRequest => Status::BadRequest,
            St::NodeDied => Status::NodeDied,
            St::NotMigratable => Status::NotMigratable,
            St::Refused => Status::Refused,
        }
    }
}

impl From<Status> for St {
    fn from(s: Status) -> Self {
        match s {
            Status::Ok => St::Ok,
            Status::MethodError => St::MethodError,
            Status::Panicked => St::Panicked,
            Status::NoSuchObject => St::NoSuchObject,
            Status::BadRequest => St::BadRequest,
            Status::NodeDied => St::NodeDied,
            Status::NotMigratable => St::NotMigratable,
            Status::Refused => St::Refused,
        }
    }
}

/// Decodes a status number; unknown numbers (a newer peer) are refusals.
pub(crate) fn status_of(n: i32) -> St {
    Status::try_from(n).map(St::from).unwrap_or(St::Refused)
}

/// Request flag: serve ahead of queued requests.
pub(crate) const FLAG_IMMEDIATE: u32 = 1;
/// Request flag: the payload names a node to migrate to.
pub(crate) const FLAG_MIGRATE: u32 = 2;
