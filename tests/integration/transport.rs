//! The transport against the private RabbitMQ node (issue 3): who gets in and with which
//! error, what a participant may touch, confirms that count only when routed, and a broker
//! connection that survives a forced close and a node restart without losing a confirmed
//! message.
//!
//! Every test provisions its own participants into its own vhost (`support::Net`, on top of
//! the harness in `util`). The node-restart test starts a node of its own, so the shared node
//! is never stopped under the other tests.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use referral_broker::transport::topology::{
    DELIVER_EXCHANGE, INGRESS_EXCHANGE, INGRESS_QUEUE, INGRESS_ROUTING_KEY,
};
use referral_broker::transport::{
    ConnectFailure, Consumer, Delivery, PublishError, Publisher, Transport, TransportError,
};

use support::Net;

/// Properties of a message from `sender` with id `id`, as the wire contract has them.
fn props(sender: &str, id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(id.into())
        .with_user_id(sender.into())
        .with_delivery_mode(2)
}

/// Asserts a connection failure of kind `want`, with a hint; returns its message.
fn expect_connect_failure(
    result: Result<Transport, TransportError>,
    want: ConnectFailure,
) -> String {
    match result {
        Ok(_) => panic!("connected, expected {want:?}"),
        Err(e) => {
            let message = e.to_string();
            assert_eq!(e.connect_failure(), Some(want), "{message}");
            assert!(message.contains("hint:"), "{message}");
            println!("refused as expected: {message}");
            message
        }
    }
}

/// Like [`expect_connect_failure`] for refusals that arrive as a TLS alert. Under TLS 1.3 the
/// server checks the client certificate after the client's side of the handshake is done, and
/// its alert races its close: the client may read a connection reset instead of the alert.
/// The transport reports that as [`ConnectFailure::ClosedAfterTlsHandshake`], whose hint names
/// the certificate problems it stands for. Every attempt must be refused as `want` or as that;
/// up to five attempts are made to see `want` itself (the alert-to-failure mapping is also
/// covered, deterministically, by the unit tests of `transport::error`).
async fn expect_alert_refusal(
    mut connect: impl AsyncFnMut() -> Result<Transport, TransportError>,
    want: ConnectFailure,
) -> String {
    let mut lost = None;
    for _ in 0..5 {
        match connect().await {
            Ok(_) => panic!("connected, expected {want:?}"),
            Err(e) if e.connect_failure() == Some(want) => {
                return expect_connect_failure(Err(e), want);
            }
            Err(e) => {
                lost = Some(expect_connect_failure(
                    Err(e),
                    ConnectFailure::ClosedAfterTlsHandshake,
                ));
            }
        }
    }
    println!("the {want:?} alert was lost to the reset in all 5 attempts");
    lost.unwrap_or_default()
}

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a delivery within 30 s")
        .expect("consumer open")
        .expect("delivery")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_publishes_to_ingress_and_consumes_its_inbox() {
    let net = Net::new("pubsub", &["fr.hotline"]);
    let hotline = net.id("fr.hotline");
    let broker = net.connect_broker().await;
    let participant = Transport::connect(net.config(&hotline))
        .await
        .expect("participant connects");

    // Participant → ingress, confirmed.
    participant
        .publisher()
        .publish(
            INGRESS_EXCHANGE,
            INGRESS_ROUTING_KEY,
            b"{\"n\":1}",
            props(hotline.as_str(), "m-1"),
        )
        .await
        .expect("publish to ingress is confirmed");

    // The test, as the broker, reads it from ingress (RabbitMQ vouches for user_id) and
    // forwards it through `deliver`.
    let mut ingress = broker
        .consume(INGRESS_QUEUE)
        .await
        .expect("broker consumes ingress");
    let d = next(&mut ingress).await;
    assert_eq!(d.body(), b"{\"n\":1}");
    assert_eq!(d.user_id(), Some(hotline.as_str()));
    broker
        .publisher()
        .publish(
            DELIVER_EXCHANGE,
            hotline.as_str(),
            d.body(),
            props(net.broker.as_str(), "m-1"),
        )
        .await
        .expect("publish to deliver is confirmed");
    d.ack().await.expect("ack");

    // The participant receives it in its own inbox, and acks it explicitly.
    let mut inbox = participant
        .consume(&hotline.inbox_queue())
        .await
        .expect("own inbox");
    let d = next(&mut inbox).await;
    assert_eq!(d.body(), b"{\"n\":1}");
    assert_eq!(d.message_id(), Some("m-1"));
    assert_eq!(d.user_id(), Some(net.broker.as_str()));
    d.ack().await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_without_client_certificate() {
    let net = Net::new("nocert", &["fr.hotline"]);
    let mut config = net.config(&net.id("fr.hotline"));
    config.identity = None;
    expect_alert_refusal(
        || Transport::connect(config.clone()),
        ConnectFailure::ClientCertificateRequired,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_with_certificate_of_a_second_ca_with_the_same_name() {
    let net = Net::new("otherca", &["fr.hotline"]);
    let id = net.id("fr.hotline");
    let cert = net.certs.issued_by_impostor_ca(&id);
    let message = expect_alert_refusal(
        || Transport::connect(net.config_with(&cert)),
        ConnectFailure::ClientCertificateUnknownCa,
    )
    .await;
    assert!(
        message.contains(&cert.cert.display().to_string()),
        "names the file: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_with_expired_certificate() {
    let net = Net::new("expired", &["fr.hotline"]);
    let cert = net.certs.expired(&net.id("fr.hotline"));
    let message = expect_alert_refusal(
        || Transport::connect(net.config_with(&cert)),
        ConnectFailure::ClientCertificateExpired,
    )
    .await;
    assert!(
        message.contains(&cert.cert.display().to_string()),
        "names the file: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_when_common_name_is_not_provisioned() {
    let net = Net::new("unprov", &["fr.hotline"]);
    // Same CA, valid certificate, but no RabbitMQ user of that name.
    let stranger = net.id("it.stranger");
    let message = expect_connect_failure(
        Transport::connect(net.config(&stranger)).await,
        ConnectFailure::LoginRefused,
    );
    assert!(
        message.contains("Login was refused using authentication mechanism EXTERNAL"),
        "what the server said: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_where_nothing_listens_and_on_the_plain_amqp_port() {
    let net = Net::new("noport", &["fr.hotline"]);
    let mut config = net.config(&net.id("fr.hotline"));
    config.port = support::free_port();
    let message = expect_connect_failure(
        Transport::connect(config.clone()).await,
        ConnectFailure::NothingListening,
    );
    assert!(
        message.contains(&format!("localhost:{}", config.port)),
        "{message}"
    );

    // The node's own plain AMQP port (it has one configured, with `listeners.tcp = none`):
    // plain AMQP is refused there too.
    if let Some(plain) = net.node.plain_port() {
        let uri = format!("amqp://127.0.0.1:{plain}/%2f");
        let err = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
            .await
            .expect_err("plain AMQP must not be served");
        println!("plain AMQP on 127.0.0.1:{plain}: {err}");
        assert!(
            matches!(err.kind(), lapin::ErrorKind::IOError(io)
                if io.kind() == std::io::ErrorKind::ConnectionRefused),
            "{err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_of_another_ca_is_not_trusted() {
    // Only the network's CA is trusted (no OS roots): with another CA file the server's
    // certificate fails.
    let net = Net::new("srvtrust", &["fr.hotline"]);
    let mut config = net.config(&net.id("fr.hotline"));
    config.ca_pem = net.certs.impostor_ca_file();
    expect_connect_failure(
        Transport::connect(config).await,
        ConnectFailure::ServerCertificateRejected,
    );
}

/// The server's code and text for a refused operation.
fn refusal(e: &TransportError) -> (u16, String) {
    e.server_reply()
        .unwrap_or_else(|| panic!("expected a refusal from the server, got {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_cannot_touch_what_is_not_its_own() {
    let net = Net::new("perms", &["fr.hotline", "de.eco"]);
    let (a, b) = (net.id("fr.hotline"), net.id("de.eco"));
    let _broker = net.connect_broker().await; // declares the inboxes
    let ta = Transport::connect(net.config(&a))
        .await
        .expect("A connects");

    // Cannot consume B's inbox.
    let err = ta
        .consume(&b.inbox_queue())
        .await
        .expect_err("A reads inbox of B");
    let (code, text) = refusal(&err);
    println!("consume {}: {code} {text}", b.inbox_queue());
    assert_eq!(code, 403);
    assert!(
        text.contains("ACCESS_REFUSED") && text.contains(&b.inbox_queue()),
        "{text}"
    );

    // Cannot declare a queue.
    let ch = ta.open_channel().await.expect("channel");
    let err = ch
        .queue_declare(
            "mine".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("A declares a queue");
    println!("queue.declare: {err}");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");

    // Cannot delete a queue, not even its own inbox.
    let ch = ta.open_channel().await.expect("channel");
    let err = ch
        .queue_delete(
            a.inbox_queue().as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .expect_err("A deletes its inbox");
    println!("queue.delete: {err}");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");

    // Cannot publish to deliver.
    let publisher = ta.publisher();
    match publisher
        .publish(
            DELIVER_EXCHANGE,
            b.as_str(),
            b"{}",
            props(a.as_str(), "x-1"),
        )
        .await
    {
        Err(e @ PublishError::Refused { code: 403, .. }) => {
            println!("publish to deliver: {e}");
            assert!(
                e.to_string().contains("ACCESS_REFUSED")
                    && e.to_string().contains("exchange 'deliver'"),
                "{e}"
            );
            assert!(!e.is_recoverable());
        }
        other => panic!("publish to deliver: expected a refusal, got {other:?}"),
    }

    // Cannot publish as B: RabbitMQ checks user_id. The same publisher still works after the
    // refusal above (it opens a new channel).
    match publisher
        .publish(
            INGRESS_EXCHANGE,
            INGRESS_ROUTING_KEY,
            b"{}",
            props(b.as_str(), "x-2"),
        )
        .await
    {
        Err(PublishError::Refused { code, text, .. }) => {
            println!("publish with user_id {b}: {code} {text}");
            assert_eq!(code, 406);
            assert!(
                text.contains(&format!(
                    "PRECONDITION_FAILED - user_id property set to '{b}' but authenticated \
                     user was '{a}'"
                )),
                "{text}"
            );
        }
        other => panic!("publish as B: expected PRECONDITION_FAILED, got {other:?}"),
    }
    publisher
        .publish(
            INGRESS_EXCHANGE,
            INGRESS_ROUTING_KEY,
            b"{}",
            props(a.as_str(), "x-3"),
        )
        .await
        .expect("a correct publish still goes through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publishes_in_flight() {
    // `send` hands a message over and returns its confirm: a window of publishes in flight.
    let net = Net::new("window", &["fr.hotline"]);
    let hotline = net.id("fr.hotline");
    let _broker = net.connect_broker().await;
    let participant = Transport::connect(net.config(&hotline))
        .await
        .expect("connects");
    let publisher = participant.publisher();
    let n = 1000;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for id in ids("w", n) {
        let confirm = publisher
            .send(
                INGRESS_EXCHANGE,
                INGRESS_ROUTING_KEY,
                id.as_bytes(),
                props(hotline.as_str(), &id),
            )
            .await
            .expect("handed over");
        pending.push(confirm);
    }
    for confirm in pending {
        confirm.wait().await.expect("confirmed and routed");
    }
    let took = started.elapsed();
    println!(
        "{n} publishes in flight, all confirmed in {took:?} ({:.0}/s, debug build)",
        n as f64 / took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_publish_is_a_failure() {
    let net = Net::new("noroute", &["fr.hotline"]);
    let broker = net.connect_broker().await;
    // A participant id with no inbox.
    match broker
        .publisher()
        .publish(
            DELIVER_EXCHANGE,
            "zz.nobody",
            b"{}",
            props(net.broker.as_str(), "u-1"),
        )
        .await
    {
        Err(e @ PublishError::Returned { code: 312, .. }) => {
            println!("unroutable: {e}");
            assert!(e.to_string().contains("NO_ROUTE"), "{e}");
            assert!(!e.is_recoverable());
        }
        other => panic!("expected the message to be returned, got {other:?}"),
    }
    // A participant's publish with a wrong routing key is returned too.
    let hotline = net.id("fr.hotline");
    let participant = Transport::connect(net.config(&hotline))
        .await
        .expect("connects");
    let err = participant
        .publisher()
        .publish(
            INGRESS_EXCHANGE,
            "not-ingress",
            b"{}",
            props(hotline.as_str(), "u-2"),
        )
        .await
        .expect_err("returned");
    assert!(
        matches!(err, PublishError::Returned { code: 312, .. }),
        "{err}"
    );
}

/// Publishes one message per id, each confirmed, republishing after recoverable errors until
/// `deadline`. Returns how many attempts failed and were repeated.
async fn publish_all(
    publisher: &Publisher,
    sender: &str,
    ids: &[String],
    deadline: Duration,
) -> usize {
    let until = Instant::now() + deadline;
    let mut republished = 0;
    for id in ids {
        loop {
            match publisher
                .publish(
                    INGRESS_EXCHANGE,
                    INGRESS_ROUTING_KEY,
                    id.as_bytes(),
                    props(sender, id),
                )
                .await
            {
                Ok(()) => break,
                Err(e) if e.is_recoverable() && Instant::now() < until => {
                    println!("republishing {id}: {e}");
                    republished += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("publishing {id}: {e}"),
            }
        }
    }
    republished
}

/// Consumes until every id of `want` was seen, acking each delivery. Returns the number of
/// deliveries (redeliveries included).
async fn receive_all(
    consumer: &mut Consumer,
    want: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
) -> usize {
    let mut deliveries = 0;
    while !want.is_subset(seen) {
        let d = next(consumer).await;
        deliveries += 1;
        if let Some(id) = d.message_id() {
            seen.insert(id.to_owned());
        }
        // An ack on a channel lost meanwhile fails; the message then comes again.
        let _ = d.ack().await;
    }
    deliveries
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_survives_forced_close() {
    let net = Net::new("forced", &["fr.hotline"]);
    let hotline = net.id("fr.hotline");
    let broker = net.connect_broker().await;
    let participant = Transport::connect(net.config(&hotline))
        .await
        .expect("connects");
    let publisher = participant.publisher();
    let mut ingress = broker.consume(INGRESS_QUEUE).await.expect("consume");

    let before = ids("before", 100);
    publish_all(
        &publisher,
        hotline.as_str(),
        &before,
        Duration::from_secs(30),
    )
    .await;
    // Read part of it, then have the server cut the broker's connection.
    let mut seen = BTreeSet::new();
    let first: BTreeSet<String> = before[..30].iter().cloned().collect();
    let mut deliveries = receive_all(&mut ingress, &first, &mut seen).await;
    // One more, taken before the break and acknowledged after it.
    let held = next(&mut ingress).await;
    deliveries += 1;

    let generation = broker
        .wait_connected(Duration::from_secs(1))
        .await
        .expect("up");
    let closed = net.close_connections_of(&net.broker);
    assert_eq!(closed, 1, "exactly the broker's connection was closed");
    let cut = Instant::now();
    broker
        .wait_reconnected(generation, Duration::from_secs(30))
        .await
        .expect("reconnects by itself");
    let took = cut.elapsed();
    // Its channel is gone: the ack is not sent, and says so (lapin reports success).
    let late = held.ack().await;
    assert!(
        matches!(late, Err(TransportError::ChannelClosed { .. })),
        "an ack on the lost channel fails: {late:?}"
    );

    // The same consumer resumes; everything confirmed before the break arrives, and what is
    // published after it too.
    let after = ids("after", 50);
    publish_all(
        &publisher,
        hotline.as_str(),
        &after,
        Duration::from_secs(30),
    )
    .await;
    let want: BTreeSet<String> = before.iter().chain(&after).cloned().collect();
    deliveries += receive_all(&mut ingress, &want, &mut seen).await;
    let stats = broker.stats();
    println!(
        "forced close: the broker reconnected {took:?} after rabbitmqctl close_connection \
         (outage measured by its supervisor: {:?}); {} messages confirmed before the break, \
         {} distinct of them delivered; {} published after; {} deliveries in all \
         (redeliveries included)",
        stats.last_outage,
        before.len(),
        before.iter().filter(|id| seen.contains(*id)).count(),
        after.len(),
        deliveries
    );
    assert_eq!(seen, want);
    assert_eq!(stats.reconnections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_survives_node_restart() {
    // A node of its own (same PKI), so the shared node is never stopped under other tests.
    let node = support::PrivateNode::start();
    let net = Net::on_node(node.node.clone(), "restart", &["fr.hotline"]);
    let hotline = net.id("fr.hotline");
    let broker = net.connect_broker().await;
    let participant = Transport::connect(net.config(&hotline))
        .await
        .expect("connects");
    let publisher = participant.publisher();
    let mut ingress = broker.consume(INGRESS_QUEUE).await.expect("consume");

    let before = ids("before", 200);
    publish_all(
        &publisher,
        hotline.as_str(),
        &before,
        Duration::from_secs(30),
    )
    .await;
    let mut seen = BTreeSet::new();
    let first: BTreeSet<String> = before[..50].iter().cloned().collect();
    let mut deliveries = receive_all(&mut ingress, &first, &mut seen).await;

    let generation = broker
        .wait_connected(Duration::from_secs(1))
        .await
        .expect("up");
    let cut = Instant::now();
    node.stop();
    let stopped = cut.elapsed();
    assert!(
        matches!(
            broker.state(),
            referral_broker::transport::LinkState::Reconnecting { .. }
        ) || broker.stats().reconnections > 0,
        "the broker noticed the node going away"
    );
    node.start_again();
    let restarted = cut.elapsed();
    broker
        .wait_reconnected(generation, Duration::from_secs(60))
        .await
        .expect("reconnects by itself");
    let took = cut.elapsed();

    let after = ids("after", 50);
    let republished = publish_all(
        &publisher,
        hotline.as_str(),
        &after,
        Duration::from_secs(60),
    )
    .await;
    let want: BTreeSet<String> = before.iter().chain(&after).cloned().collect();
    deliveries += receive_all(&mut ingress, &want, &mut seen).await;
    let stats = broker.stats();
    println!(
        "node restart: node stopped after {stopped:?}, running again after {restarted:?}; the \
         broker reconnected {took:?} after the stop began, {:?} after the node was back \
         (outage measured by its supervisor: {:?}, {} failed attempts); {} messages confirmed \
         before the break, {} distinct of them delivered; {} published after ({} republished); \
         {} deliveries in all (redeliveries included)",
        took.saturating_sub(restarted),
        stats.last_outage,
        stats.failed_attempts,
        before.len(),
        before.iter().filter(|id| seen.contains(*id)).count(),
        after.len(),
        republished,
        deliveries
    );
    assert_eq!(seen, want);
    drop(net);
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_connection_makes_publishes_time_out_then_recover() {
    // A memory alarm blocks every publishing connection of the node: its own node again.
    let node = support::PrivateNode::start();
    let net = Net::on_node(node.node.clone(), "blocked", &["fr.hotline"]);
    let hotline = net.id("fr.hotline");
    let _broker = net.connect_broker().await;
    let mut config = net.config(&hotline);
    config.confirm_timeout = Duration::from_secs(2);
    let participant = Transport::connect(config).await.expect("connects");
    let publisher = participant.publisher();
    publish_all(
        &publisher,
        hotline.as_str(),
        &ids("ok", 1),
        Duration::from_secs(10),
    )
    .await;

    // Watermark 0: the alarm goes off at once and RabbitMQ blocks publishers.
    node.node.ctl(&["set_vm_memory_high_watermark", "0"]);
    let err = publisher
        .publish(
            INGRESS_EXCHANGE,
            INGRESS_ROUTING_KEY,
            b"{}",
            props(hotline.as_str(), "stalled"),
        )
        .await
        .expect_err("a blocked publish must not succeed");
    println!("while blocked: {err}");
    assert!(
        matches!(err, PublishError::Timeout { blocked: true, .. }),
        "{err:?}"
    );
    assert!(err.is_recoverable());
    assert!(participant.is_blocked());

    // Alarm cleared: unblocked, and the message goes through when published again.
    node.node.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    let since = Instant::now();
    while participant.is_blocked() {
        assert!(since.elapsed() < Duration::from_secs(20), "still blocked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "unblocked {:?} after the alarm was cleared",
        since.elapsed()
    );
    publish_all(
        &publisher,
        hotline.as_str(),
        &["stalled".to_owned()],
        Duration::from_secs(20),
    )
    .await;
    drop(net);
    drop(node);
}

/// Test networks on top of the harness: a vhost, participants provisioned into it from a
/// registry, their certificates, transport configurations.
pub(crate) mod support {
    use std::path::PathBuf;
    use std::time::Duration;

    use base64::Engine as _;
    use referral_broker::ids::ParticipantId;
    use referral_broker::provision::{self, Action, Desired, Rabbitmqctl};
    use referral_broker::registry::Registry;
    use referral_broker::transport::{ClientIdentity, Topology, Transport, TransportConfig};

    use crate::util::{Certs, ClientCert, Node, TestVhost, unique_suffix};

    /// Registry TOML: `broker` (operator, with a fresh key) and hotlines `participants`.
    pub fn registry_toml(broker: &ParticipantId, participants: &[ParticipantId]) -> String {
        let key = base64::engine::general_purpose::STANDARD.encode(
            ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>())
                .verifying_key()
                .to_bytes(),
        );
        let mut toml = format!(
            "broker = \"{broker}\"\n\n[[participant]]\nid = \"{broker}\"\nname = \"Broker\"\n\
             role = \"operator\"\n[[participant.key]]\npublic_key = \"{key}\"\n\
             not_before = \"2026-01-01T00:00:00Z\"\n"
        );
        for p in participants {
            let country = p.as_str()[..2].to_uppercase();
            toml.push_str(&format!(
                "\n[[participant]]\nid = \"{p}\"\nname = \"Test {p}\"\nrole = \"hotline\"\n\
                 country = \"{country}\"\n"
            ));
        }
        toml
    }

    /// A free TCP port on 127.0.0.1 (nothing listens there once this returns).
    pub fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local address").port()
    }

    pub struct Net {
        pub node: Node,
        pub vhost: String,
        pub broker: ParticipantId,
        pub registry: Registry,
        pub certs: Certs,
        test_vhost: Option<TestVhost>,
        suffix: String,
    }

    impl Net {
        /// On the run's node, in a fresh [`TestVhost`]; `participants` are base names
        /// (`fr.hotline`), made unique by the vhost.
        pub fn new(test: &str, participants: &[&str]) -> Self {
            let test_vhost = TestVhost::new(test);
            let node = test_vhost.node().clone();
            let vhost = test_vhost.name().to_owned();
            Self::build(node, vhost, Some(test_vhost), participants)
        }

        /// On another node (same PKI); the vhost is created by provisioning and left there.
        pub fn on_node(node: Node, test: &str, participants: &[&str]) -> Self {
            let vhost = format!("t-{test}-{}", unique_suffix());
            Self::build(node, vhost, None, participants)
        }

        fn build(
            node: Node,
            vhost: String,
            test_vhost: Option<TestVhost>,
            participants: &[&str],
        ) -> Self {
            let suffix = unique_suffix();
            let make_id = |base: &str| -> ParticipantId {
                match &test_vhost {
                    Some(v) => v.participant(base),
                    None => format!("{base}-{suffix}").parse().expect("valid id"),
                }
            };
            let broker = make_id("net.broker");
            let ids: Vec<ParticipantId> = participants.iter().map(|p| make_id(p)).collect();
            let registry = Registry::from_toml(&registry_toml(&broker, &ids), "test registry")
                .expect("test registry");
            let net = Self {
                node,
                vhost,
                broker,
                registry,
                certs: Certs::new(),
                test_vhost,
                suffix,
            };
            let actions = net.provision(&net.registry);
            assert!(!actions.is_empty(), "a new vhost needs provisioning");
            net
        }

        /// Participant `base` of this test (unique name; its user is deleted with the vhost).
        pub fn id(&self, base: &str) -> ParticipantId {
            match &self.test_vhost {
                Some(v) => v.participant(base),
                None => format!("{base}-{}", self.suffix).parse().expect("valid id"),
            }
        }

        pub fn ctl(&self) -> Rabbitmqctl {
            Rabbitmqctl::new(self.node.rabbitmqctl_path())
        }

        /// Provisions `registry` into this vhost; returns what changed.
        pub fn provision(&self, registry: &Registry) -> Vec<Action> {
            let desired = Desired::from_registry(registry, &self.vhost);
            let ctl = self.ctl();
            let run = || provision::apply(&ctl, &desired);
            let result = match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::block_in_place(run),
                Err(_) => run(),
            };
            result.unwrap_or_else(|e| panic!("provisioning {}: {e}", self.vhost))
        }

        /// A configuration for `id` with a fresh valid certificate.
        pub fn config(&self, id: &ParticipantId) -> TransportConfig {
            self.config_with(&self.certs.participant(id))
        }

        /// A configuration presenting `cert`.
        pub fn config_with(&self, cert: &ClientCert) -> TransportConfig {
            let mut c = TransportConfig::new(
                self.node.amqps_port,
                &self.vhost,
                self.node.ca_cert(),
                &cert.cert,
                &cert.key,
            );
            c.identity = Some(ClientIdentity {
                cert_pem: cert.cert.clone(),
                key_pem: cert.key.clone(),
            });
            c.confirm_timeout = Duration::from_secs(10);
            c.connect_timeout = Duration::from_secs(10);
            c.connection_name = format!("test {}", cert.id);
            c
        }

        /// The broker: connects with its certificate and declares the topology.
        pub async fn connect_broker(&self) -> Transport {
            Transport::connect_declaring(
                self.config(&self.broker),
                Topology::from_registry(&self.registry),
            )
            .await
            .expect("the broker connects and declares the topology")
        }

        /// Has the server close every connection of `user` to this vhost; returns how many.
        pub fn close_connections_of(&self, user: &ParticipantId) -> usize {
            let ctl = self.ctl();
            let run = || {
                let mut n = 0;
                for c in ctl.list_connections().expect("list_connections") {
                    if c.vhost == self.vhost && c.user == user.as_str() {
                        println!("closing connection {} of {user}", c.name);
                        ctl.close_connection(&c.pid, "test: forced close")
                            .expect("close_connection");
                        n += 1;
                    }
                }
                n
            };
            tokio::task::block_in_place(run)
        }
    }

    /// A RabbitMQ node of one test (for tests that stop it), on the run's PKI; stopped and
    /// removed on drop.
    pub struct PrivateNode {
        pub node: Node,
        dir: tempfile::TempDir,
        script: PathBuf,
    }

    impl PrivateNode {
        pub fn start() -> Self {
            let shared = Node::get();
            let dir = tempfile::tempdir().expect("a temporary directory");
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ops/rabbitmq/node");
            run_script(&script, dir.path(), &shared.pki_dir, "start");
            let node = Node::from_env_file(&dir.path().join("env"))
                .unwrap_or_else(|e| panic!("the private node's env: {e}"));
            Self { node, dir, script }
        }

        fn run(&self, command: &str) {
            let go = || run_script(&self.script, self.dir.path(), &self.node.pki_dir, command);
            match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::block_in_place(go),
                Err(_) => go(),
            }
        }

        pub fn stop(&self) {
            self.run("stop");
        }

        pub fn start_again(&self) {
            self.run("start");
        }
    }

    fn run_script(
        script: &std::path::Path,
        dir: &std::path::Path,
        pki: &std::path::Path,
        command: &str,
    ) {
        let out = std::process::Command::new(script)
            .arg("--dir")
            .arg(dir)
            .arg("--pki")
            .arg(pki)
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running ops/rabbitmq/node");
        println!("{}", String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            out.status.success(),
            "ops/rabbitmq/node {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    impl Drop for PrivateNode {
        fn drop(&mut self) {
            let _ = std::process::Command::new(&self.script)
                .arg("--dir")
                .arg(self.dir.path())
                .arg("stop")
                .output();
        }
    }
}
