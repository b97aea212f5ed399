//! RabbitMQ users and permissions from the registry: one passwordless user per participant
//! (it logs in with its certificate), with exactly the permissions of the design, in one vhost.
//!
//! Two layers:
//! - Pure (no I/O): the desired state ([`Desired::from_registry`]), the current state as
//!   RabbitMQ exports it ([`Definitions`]), and [`plan`], their difference as a list of
//!   [`Action`]s. Unit-tested below.
//! - The edge: [`Rabbitmqctl`] runs `rabbitmqctl` and [`apply`] carries the plan out: one
//!   `export_definitions`, one `import_definitions` for everything additive (vhost, users,
//!   permissions), then one call per removal. Each call starts an Erlang VM, so calls are few.
//!
//! Guarantees:
//! - Participant permissions: configure `^$` (nothing), write `^ingress$`, read
//!   `^inbox\.<id>$` (the id regex-escaped). The broker (the registry's `broker` entry):
//!   configure, write and read only on its own objects
//!   ([`BROKER_RESOURCES_REGEX`](crate::transport::topology::BROKER_RESOURCES_REGEX)), never `.*`.
//! - A participant's user has no password and no tags; an existing user of that name loses
//!   any password and tags it had.
//! - Removing a participant from the registry removes its access in this vhost: its
//!   permissions are cleared and its open connections to the vhost closed; the user itself is
//!   deleted when this vhost was the last one it had access to.
//! - Only users whose name is a valid participant id are ever touched: `guest`, `admin` and
//!   the like are left alone whatever the registry says.
//! - [`apply`] checks its work: it exports again and fails unless the plan is then empty.
//! - Idempotent: a second run with the same registry changes nothing and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use thiserror::Error;
use tracing::warn;

use crate::ids::ParticipantId;
use crate::registry::Registry;
use crate::transport::topology::{BROKER_RESOURCES_REGEX, INGRESS_EXCHANGE};

/// Configure, write and read permission regexes of one user in one vhost.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "configure {:?} write {:?} read {:?}",
            self.configure, self.write, self.read
        )
    }
}

/// `s` with every character that is not ASCII alphanumeric escaped by a backslash: a literal
/// in a PCRE regex (RabbitMQ's permissions are Erlang `re`, i.e. PCRE).
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A participant's permissions: write the ingress exchange, read its own inbox, nothing else.
pub fn participant_permissions(id: &ParticipantId) -> Permissions {
    Permissions {
        configure: "^$".to_owned(),
        write: format!("^{}$", regex_escape(INGRESS_EXCHANGE)),
        read: format!("^{}$", regex_escape(&id.inbox_queue())),
    }
}

/// The broker's permissions: its own objects, all three ways.
pub fn broker_permissions() -> Permissions {
    Permissions {
        configure: BROKER_RESOURCES_REGEX.to_owned(),
        write: BROKER_RESOURCES_REGEX.to_owned(),
        read: BROKER_RESOURCES_REGEX.to_owned(),
    }
}

/// What the vhost should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub vhost: String,
    pub users: BTreeMap<ParticipantId, Permissions>,
}

impl Desired {
    /// Every participant of the registry, the broker with [`broker_permissions`].
    pub fn from_registry(registry: &Registry, vhost: &str) -> Self {
        let broker = &registry.broker().id;
        let users = registry
            .participants()
            .map(|p| {
                let perms = if &p.id == broker {
                    broker_permissions()
                } else {
                    participant_permissions(&p.id)
                };
                (p.id.clone(), perms)
            })
            .collect();
        Self {
            vhost: vhost.to_owned(),
            users,
        }
    }
}

/// The parts of `rabbitmqctl export_definitions` that provisioning reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Definitions {
    #[serde(default)]
    pub users: Vec<DefinedUser>,
    #[serde(default)]
    pub vhosts: Vec<DefinedVhost>,
    #[serde(default)]
    pub permissions: Vec<DefinedPermission>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DefinedUser {
    pub name: String,
    #[serde(default)]
    pub password_hash: String,
    /// An array of tags (RabbitMQ 3.10+) or a comma-separated string (older exports).
    #[serde(default)]
    pub tags: serde_json::Value,
}

impl DefinedUser {
    fn tags(&self) -> Vec<String> {
        match &self.tags {
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            serde_json::Value::String(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DefinedVhost {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DefinedPermission {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

impl DefinedPermission {
    fn permissions(&self) -> Permissions {
        Permissions {
            configure: self.configure.clone(),
            write: self.write.clone(),
            read: self.read.clone(),
        }
    }
}

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateVhost {
        vhost: String,
    },
    /// Create the user without password or tags, or strip those from an existing user.
    PutUser {
        user: ParticipantId,
        /// What the existing user had that it must lose; `None` if the user is new.
        stripped: Option<String>,
    },
    SetPermissions {
        user: ParticipantId,
        vhost: String,
        permissions: Permissions,
        previous: Option<Permissions>,
    },
    /// A removed participant that keeps access to other vhosts: clear this vhost only.
    ClearPermissions {
        user: ParticipantId,
        vhost: String,
    },
    /// A removed participant whose only access was this vhost: delete the user (which
    /// removes its permissions too).
    DeleteUser {
        user: ParticipantId,
        vhost: String,
    },
}

impl Action {
    /// True for the changes made by one `import_definitions`.
    fn is_import(&self) -> bool {
        matches!(
            self,
            Self::CreateVhost { .. } | Self::PutUser { .. } | Self::SetPermissions { .. }
        )
    }

    /// The participant whose access this action removes, if it does.
    fn removed(&self) -> Option<&ParticipantId> {
        match self {
            Self::ClearPermissions { user, .. } | Self::DeleteUser { user, .. } => Some(user),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateVhost { vhost } => write!(f, "created vhost {vhost:?}"),
            Self::PutUser {
                user,
                stripped: None,
            } => write!(
                f,
                "created user {user} (no password: it logs in with its certificate)"
            ),
            Self::PutUser {
                user,
                stripped: Some(what),
            } => write!(f, "user {user}: removed {what}"),
            Self::SetPermissions {
                user,
                vhost,
                permissions,
                previous,
            } => {
                write!(f, "user {user} in vhost {vhost:?}: {permissions}")?;
                match previous {
                    Some(p) => write!(f, " (was {p})"),
                    None => write!(f, " (had none)"),
                }
            }
            Self::ClearPermissions { user, vhost } => write!(
                f,
                "user {user}: removed its access to vhost {vhost:?} (not in the registry), \
                 closed any connection it had there"
            ),
            Self::DeleteUser { user, vhost } => write!(
                f,
                "deleted user {user} (not in the registry; vhost {vhost:?} was its last \
                 access), closed any connection it had there"
            ),
        }
    }
}

/// The difference between what is and what should be, in the order it is applied. Users that
/// are not participant ids are never in it.
pub fn plan(desired: &Desired, current: &Definitions) -> Vec<Action> {
    let vhost = desired.vhost.as_str();
    let mut actions = Vec::new();
    if !current.vhosts.iter().any(|v| v.name == vhost) {
        actions.push(Action::CreateVhost {
            vhost: vhost.to_owned(),
        });
    }
    let users: BTreeMap<&str, &DefinedUser> =
        current.users.iter().map(|u| (u.name.as_str(), u)).collect();
    let here: BTreeMap<&str, Permissions> = current
        .permissions
        .iter()
        .filter(|p| p.vhost == vhost)
        .map(|p| (p.user.as_str(), p.permissions()))
        .collect();

    for (id, perms) in &desired.users {
        match users.get(id.as_str()) {
            None => actions.push(Action::PutUser {
                user: id.clone(),
                stripped: None,
            }),
            Some(u) => {
                let mut lose = Vec::new();
                if !u.password_hash.is_empty() {
                    lose.push("its password".to_owned());
                }
                let tags = u.tags();
                if !tags.is_empty() {
                    lose.push(format!("its tags {}", tags.join(",")));
                }
                if !lose.is_empty() {
                    actions.push(Action::PutUser {
                        user: id.clone(),
                        stripped: Some(lose.join(" and ")),
                    });
                }
            }
        }
        let previous = here.get(id.as_str()).cloned();
        if previous.as_ref() != Some(perms) {
            actions.push(Action::SetPermissions {
                user: id.clone(),
                vhost: vhost.to_owned(),
                permissions: perms.clone(),
                previous,
            });
        }
    }

    for user in here.keys() {
        let Ok(id) = user.parse::<ParticipantId>() else {
            continue; // not a participant: never touched
        };
        if desired.users.contains_key(&id) {
            continue;
        }
        let elsewhere = current
            .permissions
            .iter()
            .any(|p| p.user == *user && p.vhost != vhost);
        actions.push(if elsewhere {
            Action::ClearPermissions {
                user: id,
                vhost: vhost.to_owned(),
            }
        } else {
            Action::DeleteUser {
                user: id,
                vhost: vhost.to_owned(),
            }
        });
    }
    actions
}

/// The `import_definitions` document for the additive actions of a plan.
pub fn import_document(actions: &[Action]) -> serde_json::Value {
    let mut vhosts = Vec::new();
    let mut users = Vec::new();
    let mut permissions = Vec::new();
    for action in actions {
        match action {
            Action::CreateVhost { vhost } => vhosts.push(serde_json::json!({ "name": vhost })),
            Action::PutUser { user, .. } => users.push(serde_json::json!({
                // An empty hash is what `clear_password` leaves: no password login at all.
                "name": user.as_str(), "password_hash": "", "tags": []
            })),
            Action::SetPermissions {
                user,
                vhost,
                permissions: p,
                ..
            } => permissions.push(serde_json::json!({
                "user": user.as_str(), "vhost": vhost,
                "configure": p.configure, "write": p.write, "read": p.read
            })),
            Action::ClearPermissions { .. } | Action::DeleteUser { .. } => {}
        }
    }
    serde_json::json!({ "vhosts": vhosts, "users": users, "permissions": permissions })
}

/// Why provisioning failed.
#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error("cannot run {} {args}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        args: String,
        source: std::io::Error,
    },
    #[error("{} {args} failed ({status}): {stderr}", program.display())]
    Failed {
        program: PathBuf,
        args: String,
        status: String,
        stderr: String,
    },
    #[error("{} {args} printed something that is not the expected JSON: {message}", program.display())]
    Output {
        program: PathBuf,
        args: String,
        message: String,
    },
    #[error(
        "the changes did not take effect within {waited:?}; still to do: {}",
        remaining.join("; ")
    )]
    NotApplied {
        waited: Duration,
        remaining: Vec<String>,
    },
}

/// Runs `rabbitmqctl` (or a wrapper that points it at a node) with `-q`.
#[derive(Debug, Clone)]
pub struct Rabbitmqctl {
    program: PathBuf,
}

/// One open AMQP connection, as `list_connections` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub user: String,
    pub vhost: String,
    pub name: String,
    pub pid: String,
}

/// How many times a read-only JSON command is run before its output is called bad.
const JSON_ATTEMPTS: u32 = 3;

/// The first 200 characters of `out`, quoted, for an error message.
fn quote_start(out: &str) -> String {
    let start: String = out.chars().take(200).collect();
    if start.len() < out.len() {
        format!("{start:?}…")
    } else {
        format!("{start:?}")
    }
}

impl Rabbitmqctl {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs `rabbitmqctl -q ARGS`, feeding `stdin` if given; returns stdout.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, ProvisionError> {
        let shown = args.join(" ");
        let mut cmd = Command::new(&self.program);
        cmd.arg("-q")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| ProvisionError::Spawn {
            program: self.program.clone(),
            args: shown.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if !out.status.success() {
            return Err(ProvisionError::Failed {
                program: self.program.clone(),
                args: shown,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a read-only command whose output is JSON. While other vhosts and users were being
    /// created and deleted on the node, `rabbitmqctl -q export_definitions -` (3.10) once
    /// exited 0 with stdout that was not JSON ("key must be a string at line 1 column 2": an
    /// Elixir term such as `{:error, …}`, most likely) in a CI run of ~40 provisionings. The
    /// command is read-only, so it is run again, up to [`JSON_ATTEMPTS`] times; each retry is
    /// logged and the final error quotes the start of what was printed.
    fn json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T, ProvisionError> {
        let mut attempt = 1;
        loop {
            let out = self.run(args, None)?;
            match serde_json::from_str(&out) {
                Ok(v) => return Ok(v),
                Err(e) if attempt < JSON_ATTEMPTS => {
                    warn!(
                        command = %args.join(" "),
                        attempt,
                        error = %e,
                        printed = %quote_start(&out),
                        "rabbitmqctl printed something that is not JSON; running it again"
                    );
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => {
                    return Err(ProvisionError::Output {
                        program: self.program.clone(),
                        args: args.join(" "),
                        message: format!(
                            "{e} ({attempt} attempts; it printed {})",
                            quote_start(&out)
                        ),
                    });
                }
            }
        }
    }

    /// Users, vhosts and permissions of the whole node.
    pub fn export_definitions(&self) -> Result<Definitions, ProvisionError> {
        self.json(&["export_definitions", "-"])
    }

    pub fn import_definitions(&self, document: &serde_json::Value) -> Result<(), ProvisionError> {
        // No file argument: the document is read from stdin.
        self.run(
            &["import_definitions"],
            Some(document.to_string().as_bytes()),
        )
        .map(drop)
    }

    /// Open connections. Read from the table output: its `pid` column is the form
    /// `close_connection` takes (`<rabbit@host.1.2.3>`), which the JSON formatter is not.
    pub fn list_connections(&self) -> Result<Vec<ConnectionInfo>, ProvisionError> {
        let args = ["-s", "list_connections", "user", "vhost", "name", "pid"];
        let out = self.run(&args, None)?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| match line.split('\t').collect::<Vec<_>>()[..] {
                [user, vhost, name, pid] => Ok(ConnectionInfo {
                    user: user.to_owned(),
                    vhost: vhost.to_owned(),
                    name: name.to_owned(),
                    pid: pid.to_owned(),
                }),
                _ => Err(ProvisionError::Output {
                    program: self.program.clone(),
                    args: args.join(" "),
                    message: format!("expected 4 tab-separated columns, got {line:?}"),
                }),
            })
            .collect()
    }

    pub fn close_connection(&self, pid: &str, explanation: &str) -> Result<(), ProvisionError> {
        self.run(&["close_connection", pid, explanation], None)
            .map(drop)
    }

    pub fn clear_permissions(&self, vhost: &str, user: &str) -> Result<(), ProvisionError> {
        self.run(&["clear_permissions", "-p", vhost, user], None)
            .map(drop)
    }

    pub fn delete_user(&self, user: &str) -> Result<(), ProvisionError> {
        self.run(&["delete_user", user], None).map(drop)
    }
}

/// Brings the node in line with `desired`; returns what it changed (empty: nothing to do).
pub fn apply(ctl: &Rabbitmqctl, desired: &Desired) -> Result<Vec<Action>, ProvisionError> {
    let current = ctl.export_definitions()?;
    let actions = plan(desired, &current);
    if actions.is_empty() {
        return Ok(actions);
    }
    if actions.iter().any(Action::is_import) {
        ctl.import_definitions(&import_document(&actions))?;
    }
    let removed: BTreeSet<&ParticipantId> = actions.iter().filter_map(Action::removed).collect();
    for action in &actions {
        match action {
            Action::ClearPermissions { user, vhost } => {
                ctl.clear_permissions(vhost, user.as_str())?
            }
            Action::DeleteUser { user, .. } => ctl.delete_user(user.as_str())?,
            _ => {}
        }
    }
    if !removed.is_empty() {
        // Permissions are checked when a channel uses a resource, and cached: an open
        // connection would keep some access. Close them.
        for c in ctl.list_connections()? {
            let is_removed = c
                .user
                .parse::<ParticipantId>()
                .is_ok_and(|id| removed.contains(&id));
            if is_removed && c.vhost == desired.vhost {
                ctl.close_connection(&c.pid, "access removed: not in the participant registry")?;
            }
        }
    }
    verify(ctl, desired)?;
    Ok(actions)
}

/// Exports again until the plan is empty (`import_definitions` completes asynchronously).
fn verify(ctl: &Rabbitmqctl, desired: &Desired) -> Result<(), ProvisionError> {
    let limit = Duration::from_secs(15);
    let start = Instant::now();
    loop {
        let remaining = plan(desired, &ctl.export_definitions()?);
        if remaining.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(ProvisionError::NotApplied {
                waited: limit,
                remaining: remaining.iter().map(ToString::to_string).collect(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ParticipantId {
        s.parse().expect("valid test id")
    }

    fn desired(ids: &[&str]) -> Desired {
        let mut users = BTreeMap::new();
        users.insert(pid("net.broker"), broker_permissions());
        for id in ids {
            users.insert(pid(id), participant_permissions(&pid(id)));
        }
        Desired {
            vhost: "v1".into(),
            users,
        }
    }

    fn perm(user: &str, vhost: &str, p: &Permissions) -> DefinedPermission {
        DefinedPermission {
            user: user.into(),
            vhost: vhost.into(),
            configure: p.configure.clone(),
            write: p.write.clone(),
            read: p.read.clone(),
        }
    }

    fn user(name: &str, hash: &str, tags: serde_json::Value) -> DefinedUser {
        DefinedUser {
            name: name.into(),
            password_hash: hash.into(),
            tags,
        }
    }

    /// The state after applying `d` to nothing.
    fn applied(d: &Desired) -> Definitions {
        Definitions {
            users: d
                .users
                .keys()
                .map(|id| user(id.as_str(), "", serde_json::json!([])))
                .collect(),
            vhosts: vec![DefinedVhost {
                name: d.vhost.clone(),
            }],
            permissions: d
                .users
                .iter()
                .map(|(id, p)| perm(id.as_str(), &d.vhost, p))
                .collect(),
        }
    }

    #[test]
    fn permissions_are_exactly_the_design() {
        let p = participant_permissions(&pid("fr.point-de-contact"));
        assert_eq!(p.configure, "^$");
        assert_eq!(p.write, "^ingress$");
        assert_eq!(p.read, r"^inbox\.fr\.point\-de\-contact$");
        let b = broker_permissions();
        for r in [&b.configure, &b.write, &b.read] {
            assert_ne!(r, ".*");
            assert!(r.starts_with('^') && r.ends_with('$'));
        }
    }

    #[test]
    fn from_nothing_creates_vhost_users_and_permissions() {
        let d = desired(&["fr.hotline", "de.eco"]);
        let actions = plan(&d, &Definitions::default());
        assert_eq!(actions[0], Action::CreateVhost { vhost: "v1".into() });
        let puts = actions
            .iter()
            .filter(|a| matches!(a, Action::PutUser { stripped: None, .. }))
            .count();
        let sets = actions
            .iter()
            .filter(|a| matches!(a, Action::SetPermissions { previous: None, .. }))
            .count();
        assert_eq!((puts, sets, actions.len()), (3, 3, 7));
        // The import document carries all of it, users without password.
        let doc = import_document(&actions);
        assert_eq!(doc["users"].as_array().map(Vec::len), Some(3));
        assert!(
            doc["users"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|u| u["password_hash"] == "")
        );
        assert_eq!(doc["permissions"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn applied_state_needs_nothing() {
        let d = desired(&["fr.hotline", "de.eco"]);
        assert_eq!(plan(&d, &applied(&d)), vec![]);
    }

    #[test]
    fn passwords_tags_and_wrong_permissions_are_corrected() {
        let d = desired(&["fr.hotline"]);
        let mut current = applied(&d);
        for u in current.users.iter_mut().filter(|u| u.name == "fr.hotline") {
            *u = user(
                "fr.hotline",
                "c2VjcmV0",
                serde_json::json!(["administrator"]),
            );
        }
        for p in current
            .permissions
            .iter_mut()
            .filter(|p| p.user == "fr.hotline")
        {
            p.read = ".*".into();
        }
        let actions = plan(&d, &current);
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(
            matches!(&actions[0], Action::PutUser { stripped: Some(s), .. }
            if s.contains("password") && s.contains("administrator"))
        );
        assert!(
            matches!(&actions[1], Action::SetPermissions { previous: Some(p), .. } if p.read == ".*")
        );
    }

    #[test]
    fn removed_participants_lose_access_and_others_are_never_touched() {
        let before = desired(&["fr.hotline", "de.eco", "it.gone"]);
        let mut current = applied(&before);
        // de.eco also has access to another vhost; guest and admin are not participants.
        current.permissions.push(perm(
            "de.eco",
            "other",
            &participant_permissions(&pid("de.eco")),
        ));
        current.users.push(user(
            "guest",
            "aGFzaA==",
            serde_json::json!(["administrator"]),
        ));
        current.users.push(user(
            "admin",
            "aGFzaA==",
            serde_json::json!("administrator"),
        ));
        current
            .permissions
            .push(perm("guest", "v1", &broker_permissions()));
        current
            .permissions
            .push(perm("admin", "v1", &broker_permissions()));

        let after = desired(&["fr.hotline"]);
        let actions = plan(&after, &current);
        assert_eq!(
            actions,
            vec![
                Action::ClearPermissions {
                    user: pid("de.eco"),
                    vhost: "v1".into()
                },
                Action::DeleteUser {
                    user: pid("it.gone"),
                    vhost: "v1".into()
                },
            ]
        );
        assert_eq!(
            import_document(&actions)["users"].as_array().map(Vec::len),
            Some(0)
        );
    }

    #[test]
    fn regex_escape_makes_literals() {
        assert_eq!(regex_escape("inbox.a-b"), r"inbox\.a\-b");
        assert_eq!(regex_escape("abc123"), "abc123");
    }

    #[test]
    fn export_parses() {
        let text = r#"{"bindings":[],"permissions":[{"configure":"^$","read":"^inbox\\.fr\\.hotline$","user":"fr.hotline","vhost":"exp1","write":"^ingress$"}],
            "rabbit_version":"3.10.8","users":[{"hashing_algorithm":"rabbit_password_hashing_sha256","limits":{},"name":"fr.hotline","password_hash":"","tags":[]}],
            "vhosts":[{"limits":[],"metadata":{"description":"","tags":[]},"name":"exp1"}]}"#;
        let d: Definitions = serde_json::from_str(text).expect("parses");
        assert_eq!(d.users[0].name, "fr.hotline");
        assert!(d.users[0].tags().is_empty());
        assert_eq!(d.permissions[0].read, r"^inbox\.fr\.hotline$");
    }

    /// A stand-in rabbitmqctl in `dir`: a shell script of `body`.
    fn stand_in(dir: &Path, body: &str) -> Rabbitmqctl {
        use std::os::unix::fs::PermissionsExt;
        let program = dir.join("rabbitmqctl");
        std::fs::write(&program, format!("#!/bin/sh\n{body}\n")).expect("write the stand-in");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
            .expect("make it executable");
        Rabbitmqctl::new(program)
    }

    #[test]
    fn export_output_that_is_not_json_is_read_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Not JSON on the first run, a definitions document on the next ones.
        let ran = dir.path().join("ran");
        let ctl = stand_in(
            dir.path(),
            &format!(
                "if [ -e {ran} ]; then echo '{{\"users\":[],\"vhosts\":[],\"permissions\":[]}}'; \
                 else touch {ran}; echo '{{:error, :timeout}}'; fi",
                ran = ran.display()
            ),
        );
        let d = ctl.export_definitions().expect("the second run's JSON");
        assert!(d.users.is_empty());
    }

    #[test]
    fn export_output_never_json_is_an_error_quoting_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = stand_in(dir.path(), "echo '{:error, :nodedown}'")
            .export_definitions()
            .expect_err("never JSON");
        let message = err.to_string();
        assert!(message.contains("3 attempts"), "{message}");
        assert!(message.contains("{:error, :nodedown}"), "{message}");
    }
}
