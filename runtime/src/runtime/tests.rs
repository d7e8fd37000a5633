//! What only a runtime's insides can show: a stream opened without a
//! certificate, a request that claims another runtime's id, and the
//! sequence counters a restore leaves.

use std::sync::Arc;
use std::time::Duration;

use crate::connection::Pending;
use crate::future::{Outcome, Status};
use crate::tls::{Authority, Identity};
use crate::wire::{self, RequestHead};
use crate::{Config, Runtime};

async fn serving(identity: Identity) -> Runtime {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let rt = Runtime::builder()
        .config(Config::default())
        .identity(identity)
        .address(address)
        .build();
    let server = rt.clone();
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
    rt
}

/// Sends one raw request on `from`'s connection to `to`, with `sender` as
/// its sender, to control object 0 (a lookup); returns how it was answered.
async fn raw_lookup(from: &Runtime, to: &Runtime, sender: u64) -> Outcome {
    let conn = from.conn_to(to.address().unwrap());
    let slot = from.futures().new_slot(None, false);
    let call_id = conn.register(Pending::Slot(slot.clone())).ok().unwrap();
    let (payload, _) = crate::codec::encode_in(&crate::runtime::Control::Lookup {
        name: "nothing".into(),
    })
    .unwrap();
    let head = RequestHead {
        call_id,
        target: 0,
        sender,
        seq: 0,
        flags: 0,
        header: &[],
        futures: &[],
    };
    conn.write(|buf| wire::put_request(buf, &head, &payload))
        .unwrap();
    let future: crate::Future<Option<crate::proxy::RefWire>> =
        crate::Future::from_slot(slot.clone(), Some(Duration::from_secs(20)));
    let _ = future.await;
    slot.outcome().expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_may_only_send_as_itself() {
    let authority = Arc::new(Authority::generate("test").unwrap());
    let a = serving(Identity::member_of(&authority).unwrap()).await;
    let b = serving(Identity::member_of(&authority).unwrap()).await;
    let c = serving(Identity::member_of(&authority).unwrap()).await;

    // As itself: served.
    let ok = raw_lookup(&b, &a, b.id()).await;
    assert_eq!(ok.status, Status::Ok);
    // As another runtime (c): refused, whatever the request.
    let forged = raw_lookup(&b, &a, c.id()).await;
    assert_eq!(forged.status, Status::Refused);
    let why = String::from_utf8_lossy(&forged.payload).into_owned();
    assert!(why.contains("sent as runtime"), "{why}");
    // The connection still serves its own requests afterwards.
    assert_eq!(raw_lookup(&b, &a, b.id()).await.status, Status::Ok);
    for rt in [a, b, c] {
        rt.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_certificate_is_refused() {
    let authority = Arc::new(Authority::generate("test").unwrap());
    let identity = Identity::member_of(&authority).unwrap();
    let roots = identity.roots_pem().unwrap().to_owned();
    let target = serving(identity).await;
    // A client that trusts the runtime, but has no certificate to show.
    let anonymous = Identity::member_of(&authority)
        .unwrap()
        .client_config(true)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(target.address().unwrap())
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(anonymous)
        .connect(crate::tls::server_name(), tcp)
        .await
        .expect("the handshake itself succeeds: enrolling needs it");
    let channel = tonic::transport::Endpoint::from_static("http://anonymous")
        .connect_with_connector(tower::service_fn({
            let tls = std::sync::Mutex::new(Some(tls));
            move |_| {
                let io = tls.lock().unwrap().take();
                async move {
                    io.map(hyper_util::rt::TokioIo::new)
                        .ok_or_else(|| std::io::Error::other("one connection only"))
                }
            }
        }))
        .await
        .unwrap();
    let mut client = wire::wire_client::WireClient::new(channel);
    let opened = client.open(futures::stream::pending::<wire::Frame>()).await;
    let status = opened.expect_err("no stream without a certificate");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    // Enrolling with a ticket nobody gave is refused too.
    let enrolled = Identity::enroll(
        target.address().unwrap(),
        Some(&roots),
        "not-a-ticket",
        Duration::from_secs(10),
    )
    .await;
    assert!(enrolled.is_err());
    target.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_authoritys_runtime_cannot_connect() {
    let ours = Arc::new(Authority::generate("ours").unwrap());
    let theirs = Arc::new(Authority::generate("theirs").unwrap());
    let target = serving(Identity::member_of(&ours).unwrap()).await;
    let stranger = Runtime::builder()
        .identity(Identity::member_of(&theirs).unwrap())
        .build();
    let port = crate::runtime::split_address(target.address().unwrap()).1;
    let url = crate::NodeUrl::new("127.0.0.1", port, "x");
    let found: crate::Future<Option<crate::proxy::RefWire>> = stranger.control(
        &url,
        crate::runtime::Control::Lookup { name: "x".into() },
        "lookup",
    );
    let err = found.await.expect_err("another domain reaches nothing");
    assert!(err.to_string().contains("unreachable"), "{err}");
    target.shutdown();
    stranger.shutdown();
}

/// Admits one ticket, once.
struct OneTicket(std::sync::Mutex<Option<&'static str>>);

impl crate::runtime::Enroller for OneTicket {
    fn admit(&self, ticket: &str, _id: u64, _peer: &str) -> Result<(), String> {
        let mut left = self.0.lock().unwrap();
        if *left == Some(ticket) {
            *left = None;
            Ok(())
        } else {
            Err("no such ticket".into())
        }
    }
}

/// A runtime serving on `ip` with `identity`, and the connection it
/// enrolled on, if any.
async fn serving_on(ip: &str, identity: Identity, link: Option<crate::tls::Link>) -> Runtime {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let mut builder = Runtime::builder().identity(identity).address(address);
    if let Some(link) = link {
        builder = builder.link(link);
    }
    let rt = builder.build();
    let server = rt.clone();
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
    rt
}

/// Connections `rt` has accepted.
fn accepted(rt: &Runtime) -> usize {
    rt.inner.connections.open()
}

/// A runtime that enrolls works on the connection it enrolled on (its
/// streams are those of the runtime it enrolled as), and the runtime
/// that enrolled it calls it back on that same connection: one
/// connection, one TLS handshake, where there were three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_runtime_keeps_the_connection_it_enrolled_on_both_ways() {
    let authority = Arc::new(Authority::generate("test").unwrap());
    let identity = Identity::member_of(&authority).unwrap();
    let roots = identity.roots_pem().unwrap().to_owned();
    let deployer = serving(identity).await;
    deployer.set_enroller(Arc::new(OneTicket(std::sync::Mutex::new(Some("t")))));
    let (identity, link) = Identity::enroll_linked(
        deployer.address().unwrap(),
        Some(&roots),
        "t",
        &Config::default(),
    )
    .await
    .expect("enrolled");
    let id = identity.runtime_id().unwrap();
    let runtime = serving_on("127.0.0.1", identity, Some(link)).await;
    assert_eq!(runtime.id(), id);

    assert_eq!(raw_lookup(&runtime, &deployer, id).await.status, Status::Ok);
    // Enrolled as `id`, it still may not send as another runtime.
    let forged = raw_lookup(&runtime, &deployer, deployer.id()).await;
    assert_eq!(forged.status, Status::Refused);
    assert_eq!(
        raw_lookup(&deployer, &runtime, deployer.id()).await.status,
        Status::Ok
    );
    assert_eq!(accepted(&deployer), 1, "the enrollment's connection only");
    assert_eq!(accepted(&runtime), 0, "called back on its own connection");
    // The ticket is spent: a second enrollment is refused, and that
    // connection opens no stream.
    let again = Identity::enroll_linked(
        deployer.address().unwrap(),
        Some(&roots),
        "t",
        &Config::default(),
    )
    .await;
    assert!(again.is_err());
    for rt in [deployer, runtime] {
        rt.shutdown();
    }
}

/// A runtime is called back on its own connection only when it serves on
/// the IP that connection comes from; otherwise the other end dials the
/// address it was given (so no runtime can draw to itself the calls meant
/// for a runtime on another machine). Plaintext runtimes are never
/// believed: the other end always dials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_runtime_with_a_certificate_on_its_own_ip_is_called_back_on_its_connection() {
    let authority = Arc::new(Authority::generate("test").unwrap());
    let caller = serving(Identity::member_of(&authority).unwrap()).await;
    // Serves on 127.0.0.2 but connects from 127.0.0.1.
    let elsewhere = serving_on("127.0.0.2", Identity::member_of(&authority).unwrap(), None).await;
    let here = serving_on("127.0.0.1", Identity::member_of(&authority).unwrap(), None).await;
    let plain = serving_on("127.0.0.1", Identity::plaintext(), None).await;
    let plain_caller = serving(Identity::plaintext()).await;
    for (rt, to) in [
        (&elsewhere, &caller),
        (&here, &caller),
        (&plain, &plain_caller),
    ] {
        assert_eq!(raw_lookup(rt, to, rt.id()).await.status, Status::Ok);
        assert_eq!(raw_lookup(to, rt, to.id()).await.status, Status::Ok);
    }
    assert_eq!(
        accepted(&elsewhere),
        1,
        "dialled: its IP is not the one it came from"
    );
    assert_eq!(accepted(&here), 0, "called back on its own connection");
    assert_eq!(
        accepted(&plain),
        1,
        "dialled: a plaintext claim proves nothing"
    );
    for rt in [caller, elsewhere, here, plain, plain_caller] {
        rt.shutdown();
    }
}

/// A runtime that comes through a relay (its connections come from the
/// relay's address, not the one it serves at) is called back on its own
/// connection once the other end was told it is relayed; another runtime
/// in the same position, not said to be relayed, is dialled as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_said_to_come_through_a_relay_is_called_back_on_its_connection() {
    let authority = Arc::new(Authority::generate("test").unwrap());
    let deployer = serving(Identity::member_of(&authority).unwrap()).await;
    // Both serve on 127.0.0.2 but connect from 127.0.0.1.
    let relayed = serving_on("127.0.0.2", Identity::member_of(&authority).unwrap(), None).await;
    let other = serving_on("127.0.0.2", Identity::member_of(&authority).unwrap(), None).await;
    deployer.trust_relayed(relayed.id());
    for rt in [&relayed, &other] {
        assert_eq!(raw_lookup(rt, &deployer, rt.id()).await.status, Status::Ok);
        assert_eq!(
            raw_lookup(&deployer, rt, deployer.id()).await.status,
            Status::Ok
        );
    }
    assert_eq!(accepted(&relayed), 0, "called back on its own connection");
    assert_eq!(accepted(&other), 1, "dialled: not said to be relayed");
    for rt in [deployer, relayed, other] {
        rt.shutdown();
    }
}

/// A restore sets the restored object's sending counters to the
/// checkpoint's, also below where this runtime had them (an older
/// checkpoint restored where the object lived on): its requests after the
/// checkpoint are sent again with the numbers they had, and receivers that
/// rolled back with it serve them again instead of holding them back.
#[tokio::test]
async fn a_restore_sets_the_sending_counters_of_its_object() {
    let rt = Runtime::builder().build();
    let (object, other, a, b) = (7, 8, 100, 200);
    rt.resume_sending(object, &[(a, 10), (b, 4)]);
    rt.resume_sending(other, &[(a, 9)]);
    rt.resume_sending(object, &[(a, 3)]);
    let mut sent = rt.sent_by(object);
    sent.sort_unstable();
    // `b` was unknown to the checkpoint: numbering to it starts over.
    assert_eq!(sent, [(a, 3), (b, 1)]);
    assert_eq!(rt.sent_by(other), [(a, 9)]);
}

/// Says who called it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Witness;

#[crate::active(crate = crate)]
#[allow(unreachable_pub)]
impl Witness {
    pub fn new() -> Self {
        Witness
    }

    pub fn who(&self) -> Option<u64> {
        crate::caller()
    }
}

/// Asks a witness who called it: an object's call to another runtime.
#[derive(serde::Serialize, serde::Deserialize)]
struct Asker;

#[crate::active(crate = crate)]
#[allow(unreachable_pub)]
impl Asker {
    pub fn new() -> Self {
        Asker
    }

    pub async fn ask(&self, witness: WitnessProxy) -> Option<u64> {
        witness.who().await.ok().flatten()
    }
}

/// Sends raw envelopes on `from`'s connection to `to`: `claim` first if
/// given, then a request to `target` as `sender`, numbered `seq`, with
/// `flags`; returns how the request was answered.
async fn raw_request(
    from: &Runtime,
    to: &Runtime,
    claim: Option<&crate::sender::Claim>,
    (target, sender, seq, flags): (u64, u64, u64, u32),
) -> Outcome {
    let conn = from.conn_to(to.address().unwrap());
    let slot = from.futures().new_slot(None, false);
    let call_id = conn.register(Pending::Slot(slot.clone())).ok().unwrap();
    let head = RequestHead {
        call_id,
        target,
        sender,
        seq,
        flags,
        header: &[],
        futures: &[],
    };
    conn.write(|buf| {
        if let Some(claim) = claim {
            wire::put_claim(buf, claim);
        }
        wire::put_request(buf, &head, b"not a method");
    })
    .unwrap();
    let future: crate::Future<()> =
        crate::Future::from_slot(slot.clone(), Some(Duration::from_secs(20)));
    let _ = future.await;
    slot.outcome().expect("answered")
}

fn node_of(from: &Runtime, on: &Runtime) -> crate::Node {
    from.node(
        &format!("actogrid://{}/n", on.address().unwrap())
            .parse()
            .unwrap(),
    )
}

fn refused_because(outcome: &Outcome, why: &str) {
    assert_eq!(outcome.status, Status::Refused);
    let said = String::from_utf8_lossy(&outcome.payload);
    assert!(said.contains(why), "{said}");
}

/// An object's id is its own: the runtime hosting it proves it with the
/// object's key, and no other runtime of the deployment can send as the
/// object, replay its proof, prove it with a key of its own, or pass a
/// request on as a forwarder of an object it never hosted. The object
/// keeps its id, and its proof, wherever it moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_may_only_send_as_itself() {
    let authority = Arc::new(Authority::generate("test").unwrap());
    let a = serving(Identity::member_of(&authority).unwrap()).await;
    let b = serving(Identity::member_of(&authority).unwrap()).await;
    let c = serving(Identity::member_of(&authority).unwrap()).await;
    // The test drives from d, so that a, b and c learn of moves only as
    // the runtime does.
    let d = serving(Identity::member_of(&authority).unwrap()).await;
    let witness = WitnessProxy::new(&node_of(&d, &a)).await.unwrap();
    let asker = AskerProxy::new(&node_of(&d, &b)).await.unwrap();
    let (w, x) = (
        crate::active::Proxy::active_ref(&witness).id(),
        crate::active::Proxy::active_ref(&asker).id(),
    );
    // The asker, on b, calls the witness, on a: its id proved, served.
    assert_eq!(asker.ask(witness.clone()).await.unwrap(), Some(x));

    // c sends as the asker, far ahead of its numbering: refused.
    let forged = raw_request(&c, &a, None, (w, x, 1 << 19, 0)).await;
    refused_because(&forged, "did not prove it hosts");
    // c replays the asker's proof, made for b: refused.
    let key = match b.inner.objects.read().unwrap().get(&x) {
        Some(super::Hosted::Here { credentials, .. }) => credentials.key.clone().unwrap(),
        _ => panic!("the asker is on b"),
    };
    let replayed = key.claim(&crate::tls::Principal::Runtime(b.id()));
    let outcome = raw_request(&c, &a, Some(&replayed), (w, x, 1 << 19, 0)).await;
    refused_because(&outcome, "did not prove it hosts");
    // c proves the asker's id with a key of its own: refused.
    let own = crate::sender::SenderKey::generate(false).unwrap();
    let mut claimed = (*own.claim(&crate::tls::Principal::Runtime(c.id()))).clone();
    claimed.sender = x;
    let outcome = raw_request(&c, &a, Some(&claimed), (w, x, 1 << 19, 0)).await;
    refused_because(&outcome, "did not prove it hosts");
    // c passes a request on as if the witness had moved from it: refused.
    let outcome = raw_request(&c, &a, None, (w, x, 1 << 19, wire::FLAG_FORWARDED)).await;
    refused_because(&outcome, "never hosted");
    // Nor may a control request be passed on.
    let outcome = raw_request(&c, &a, None, (0, x, 0, wire::FLAG_FORWARDED)).await;
    refused_because(&outcome, "never hosted");
    // An object of c's own, proved, is served (the payload is not a
    // method: the object says so, it does not refuse the sender).
    let (own_id, proof) = (own.id(), own.claim(&crate::tls::Principal::Runtime(c.id())));
    let outcome = raw_request(&c, &a, Some(&proof), (w, own_id, 1, 0)).await;
    assert_ne!(outcome.status, Status::Refused);

    // The asker's own calls were not disturbed.
    assert_eq!(asker.ask(witness.clone()).await.unwrap(), Some(x));
    // It moves to c, and proves its id from there with the key it took.
    asker.migrate_to(node_of(&d, &c).url()).await.unwrap();
    assert_eq!(asker.ask(witness.clone()).await.unwrap(), Some(x));
    // The witness moves to b: the asker's call reaches a (the reference
    // says a), which hosted it and passes the call on; b takes it from a.
    witness.migrate_to(node_of(&d, &b).url()).await.unwrap();
    assert_eq!(asker.ask(witness.clone()).await.unwrap(), Some(x));
    for rt in [a, b, c, d] {
        rt.shutdown();
    }
}
