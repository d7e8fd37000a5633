//! Typed groups: one call reaches every member and returns a group of
//! futures. Members are independent: one failing member leaves the other
//! results intact.

use futures::stream::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::active::Proxy;
use crate::error::CallError;
use crate::future::{self, Future};
use crate::node::Node;

/// A group of proxies of one type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "P: Serialize", deserialize = "P: DeserializeOwned"))]
pub struct Group<P> {
    members: Vec<P>,
}

impl<P> Default for Group<P> {
    fn default() -> Self {
        Group {
            members: Vec::new(),
        }
    }
}

impl<P: Proxy> Group<P> {
    /// A group of these members, ranked in the order given.
    pub fn new(members: impl IntoIterator<Item = P>) -> Self {
        Group {
            members: members.into_iter().collect(),
        }
    }

    /// Creates one object per node (`make(node, rank)`), all in parallel;
    /// fails with the first error if any creation fails.
    pub async fn create<F>(nodes: &[Node], make: F) -> Result<Self, CallError>
    where
        F: Fn(&Node, usize) -> Future<P>,
    {
        let pending: Vec<_> = nodes.iter().enumerate().map(|(i, n)| make(n, i)).collect();
        let mut members = Vec::with_capacity(pending.len());
        for result in future::wait_all(pending).await {
            members.push(result?);
        }
        Ok(Group { members })
    }

    /// The members, by rank.
    pub fn members(&self) -> &[P] {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adds a member at the end.
    pub fn push(&mut self, member: P) {
        self.members.push(member);
    }

    /// Removes and returns the member of rank `index`.
    pub fn remove(&mut self, index: usize) -> P {
        self.members.remove(index)
    }

    /// Calls every member with the same arguments: `call` is the proxy
    /// method to invoke, e.g. `group.broadcast(|w| w.work(job.clone()))`.
    pub fn broadcast<T, E>(&self, call: impl Fn(&P) -> Future<T, E>) -> FutureGroup<T, E> {
        FutureGroup {
            futures: self.members.iter().map(call).collect(),
        }
    }

    /// Scatters `args` over the members by rank: argument `i` goes to
    /// member `i % len`, so more arguments than members are dealt round
    /// robin. Returns one future per argument, in argument order.
    ///
    /// # Panics
    /// If the group is empty and `args` is not.
    pub fn scatter<A, T, E>(
        &self,
        args: impl IntoIterator<Item = A>,
        call: impl Fn(&P, A) -> Future<T, E>,
    ) -> FutureGroup<T, E> {
        let n = self.members.len();
        FutureGroup {
            futures: args
                .into_iter()
                .enumerate()
                .map(|(i, a)| {
                    assert!(n > 0, "cannot scatter arguments over an empty group");
                    call(&self.members[i % n], a)
                })
                .collect(),
        }
    }
}

impl<P: Proxy> FromIterator<P> for Group<P> {
    fn from_iter<I: IntoIterator<Item = P>>(iter: I) -> Self {
        Group::new(iter)
    }
}

/// The first failure of a group call ([`FutureGroup::values`]): which
/// member, and its error. Displays as `member 2 of the group: ` followed by
/// the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("member {rank} of the group: {error}")]
pub struct GroupError<E = crate::NoError> {
    /// The member's rank.
    pub rank: usize,
    /// What its call gave.
    pub error: CallError<E>,
}

impl<E> GroupError<E> {
    /// The rank and the error, as a pair.
    pub fn into_parts(self) -> (usize, CallError<E>) {
        (self.rank, self.error)
    }
}

impl<E> From<GroupError<E>> for (usize, CallError<E>) {
    fn from(e: GroupError<E>) -> Self {
        e.into_parts()
    }
}

/// The futures of one group call, by rank.
#[derive(Debug)]
pub struct FutureGroup<T, E = crate::NoError> {
    futures: Vec<Future<T, E>>,
}

impl<T: DeserializeOwned, E: DeserializeOwned> FutureGroup<T, E> {
    /// Number of futures.
    pub fn len(&self) -> usize {
        self.futures.len()
    }

    /// Whether there is no future.
    pub fn is_empty(&self) -> bool {
        self.futures.is_empty()
    }

    /// The futures, by rank.
    pub fn into_futures(self) -> Vec<Future<T, E>> {
        self.futures
    }

    /// Waits for every member; each result stands alone.
    pub async fn wait_all(self) -> Vec<Result<T, CallError<E>>> {
        future::wait_all(self.futures).await
    }

    /// Waits for every member; the values by rank, or the first error in
    /// rank order, with its rank.
    pub async fn values(self) -> Result<Vec<T>, GroupError<E>> {
        let mut out = Vec::with_capacity(self.futures.len());
        for (rank, r) in future::wait_all(self.futures).await.into_iter().enumerate() {
            out.push(r.map_err(|error| GroupError { rank, error })?);
        }
        Ok(out)
    }

    /// Waits for the first member to answer: its rank and result.
    ///
    /// # Panics
    /// If the group of futures is empty.
    pub async fn wait_any(self) -> (usize, Result<T, CallError<E>>) {
        let (i, r, _) = future::wait_any(self.futures).await;
        (i, r)
    }

    /// Results as they arrive, with their ranks.
    pub fn in_completion_order(self) -> impl Stream<Item = (usize, Result<T, CallError<E>>)> + Unpin
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        future::in_completion_order(self.futures)
    }
}
