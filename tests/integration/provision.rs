//! `referral-broker provision` against the private node (issue 3): users and exact
//! permissions from the registry, idempotent, and a participant removed from the registry
//! loses its access — its open connection is closed and a new one is refused.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use referral_broker::ids::ParticipantId;
use referral_broker::provision::{Action, Desired, Rabbitmqctl, apply};
use referral_broker::registry::Registry;
use referral_broker::transport::topology::{INGRESS_EXCHANGE, INGRESS_ROUTING_KEY};
use referral_broker::transport::{ConnectFailure, LinkState, Topology, Transport};

use crate::transport::support::{Net, registry_toml};
use crate::util::{Node, TestVhost};

/// Runs the binary: `referral-broker provision --registry FILE --vhost VHOST --rabbitmqctl …`.
fn provision_cli(node: &Node, registry: &Path, vhost: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_referral-broker"))
        .args(["provision", "--vhost", vhost, "--registry"])
        .arg(registry)
        .arg("--rabbitmqctl")
        .arg(node.rabbitmqctl_path())
        .output()
        .expect("run referral-broker provision");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "provision failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("$ referral-broker provision --vhost {vhost}\n{stdout}");
    stdout
}

/// `list_permissions -p VHOST` as (user, configure, write, read), sorted.
fn permissions(node: &Node, vhost: &str) -> Vec<(String, String, String, String)> {
    let out = node.ctl(&["-s", "list_permissions", "-p", vhost]);
    let mut rows: Vec<_> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "{l:?}");
            (f[0].into(), f[1].into(), f[2].into(), f[3].into())
        })
        .collect();
    rows.sort();
    rows
}

fn users(node: &Node) -> Vec<String> {
    node.ctl(&["-s", "list_users"])
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(str::to_owned)
        .collect()
}

fn row(user: &ParticipantId, c: &str, w: &str, r: &str) -> (String, String, String, String) {
    (user.to_string(), c.into(), w.into(), r.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_from_registry_and_revoke_on_removal() {
    let vhost = TestVhost::new("provision");
    let node = vhost.node();
    let (broker, a, c) = (
        vhost.participant("net.broker"),
        vhost.participant("fr.hotline"),
        vhost.participant("it.leaving"),
    );
    // An operator's user that is not a participant id: provisioning must never touch it.
    let admin = format!("opsadmin{}", &vhost.name()[vhost.name().len() - 8..]);
    vhost.adopt_user(&admin);
    node.ctl(&["add_user", &admin, "not-a-participant"]);
    node.ctl(&[
        "set_permissions",
        "-p",
        vhost.name(),
        &admin,
        ".*",
        ".*",
        ".*",
    ]);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("registry.toml");
    std::fs::write(&file, registry_toml(&broker, &[a.clone(), c.clone()])).expect("write");

    // First run: users and exact permissions.
    let first = tokio::task::block_in_place(|| provision_cli(node, &file, vhost.name()));
    assert!(first.contains(&format!("created user {c}")), "{first}");
    let bre = r"^(ingress|deliver|quarantine|parked|inbox\..+)$";
    let mut want = vec![
        row(
            &a,
            "^$",
            "^ingress$",
            &format!(
                r"^inbox\.{}$",
                a.as_str().replace('.', r"\.").replace('-', r"\-")
            ),
        ),
        row(
            &c,
            "^$",
            "^ingress$",
            &format!(
                r"^inbox\.{}$",
                c.as_str().replace('.', r"\.").replace('-', r"\-")
            ),
        ),
        row(&broker, bre, bre, bre),
        (admin.clone(), ".*".into(), ".*".into(), ".*".into()),
    ];
    want.sort();
    assert_eq!(permissions(node, vhost.name()), want);
    // No participant has a password.
    let defs = Rabbitmqctl::new(node.rabbitmqctl_path())
        .export_definitions()
        .expect("export");
    for id in [&broker, &a, &c] {
        let u = defs
            .users
            .iter()
            .find(|u| u.name == id.as_str())
            .expect("user exists");
        assert_eq!(u.password_hash, "", "{id} has a password");
    }

    // Second run: nothing to do.
    let again = tokio::task::block_in_place(|| provision_cli(node, &file, vhost.name()));
    assert!(again.contains("nothing to change"), "{again}");

    // C works: the broker declares the inboxes, C connects and consumes its own.
    let net_registry = Registry::load(&file).expect("registry");
    let certs = crate::util::Certs::new();
    let config = |id: &ParticipantId| {
        let cert = certs.participant(id);
        let mut c = referral_broker::transport::TransportConfig::new(
            node.amqps_port,
            vhost.name(),
            node.ca_cert(),
            &cert.cert,
            &cert.key,
        );
        c.connect_timeout = Duration::from_secs(10);
        c.confirm_timeout = Duration::from_secs(10);
        c
    };
    let _broker_t =
        Transport::connect_declaring(config(&broker), Topology::from_registry(&net_registry))
            .await
            .expect("broker connects");
    let leaving = Transport::connect(config(&c)).await.expect("C connects");
    let _inbox = leaving
        .consume(&c.inbox_queue())
        .await
        .expect("C consumes its inbox");

    // Remove C from the registry and run again.
    std::fs::write(&file, registry_toml(&broker, std::slice::from_ref(&a))).expect("write");
    let removal = tokio::task::block_in_place(|| provision_cli(node, &file, vhost.name()));
    assert!(removal.contains(&format!("deleted user {c}")), "{removal}");
    want.retain(|r| r.0 != c.as_str());
    assert_eq!(
        permissions(node, vhost.name()),
        want,
        "C's permissions are gone, the rest untouched"
    );
    let now = users(node);
    assert!(
        !now.contains(&c.to_string()),
        "C's user is deleted: {now:?}"
    );
    assert!(
        now.contains(&admin),
        "the non-participant user is untouched: {now:?}"
    );

    // C's open connection was closed, and it cannot get back in.
    let since = Instant::now();
    let reason = loop {
        if let LinkState::Reconnecting { last_error, .. } = leaving.state()
            && last_error.contains("login refused")
        {
            break last_error;
        }
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "C still connected: {:?}",
            leaving.state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("C's connection after removal: {reason}");
    let err = Transport::connect(config(&c))
        .await
        .expect_err("C is refused");
    assert_eq!(
        err.connect_failure(),
        Some(ConnectFailure::LoginRefused),
        "{err}"
    );
    println!("C connecting after removal: {err}");

    // A still works.
    let a_t = Transport::connect(config(&a)).await.expect("A connects");
    a_t.publisher()
        .publish(
            INGRESS_EXCHANGE,
            INGRESS_ROUTING_KEY,
            b"{}",
            lapin::BasicProperties::default().with_user_id(a.as_str().into()),
        )
        .await
        .expect("A publishes");
    leaving.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_from_one_vhost_keeps_the_others() {
    // C is a participant of two networks (vhosts); removed from the first, it keeps the second.
    let net = Net::new("keep1", &["it.shared"]);
    let c = net.id("it.shared");
    let other = TestVhost::new("keep2");
    other.adopt_user(c.as_str());
    let other_broker = other.participant("net.broker");
    let other_registry = Registry::from_toml(
        &registry_toml(&other_broker, std::slice::from_ref(&c)),
        "second",
    )
    .expect("registry");
    let ctl = Rabbitmqctl::new(net.node.rabbitmqctl_path());
    tokio::task::block_in_place(|| {
        apply(&ctl, &Desired::from_registry(&other_registry, other.name()))
    })
    .expect("provision the second vhost");

    // The first network drops C.
    let without = Registry::from_toml(&registry_toml(&net.broker, &[]), "first").expect("registry");
    let actions = net.provision(&without);
    assert_eq!(
        actions,
        vec![Action::ClearPermissions {
            user: c.clone(),
            vhost: net.vhost.clone()
        }]
    );
    println!("{}", actions[0]);

    // The first vhost refuses C (no access), the second still lets it in.
    let err = Transport::connect(net.config(&c))
        .await
        .expect_err("refused");
    assert_eq!(
        err.connect_failure(),
        Some(ConnectFailure::VhostNotAllowed),
        "{err}"
    );
    println!("C on the first vhost: {err}");
    let mut second = net.config(&c);
    second.vhost = other.name().to_owned();
    Transport::connect(second)
        .await
        .expect("C still connects to the second vhost");
}
