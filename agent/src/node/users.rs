//! Task identities -> host uid:gid. Auto-users and named pool users are created on the host
//! when berth runs as root, so that task files are owned by the user the task runs as.

use berth_proto::{AutoUserScope, ElevationLevel, PoolSpec, UserIdentity};
use nix::unistd::{Gid, Group, Uid, User};
use std::process::Command;

/// Batch's Linux pool-scope non-admin auto-user and its group.
pub const AUTO_USER: &str = "_azbatch";
pub const AUTO_GROUP: &str = "_azbatchgrp";

/// Who a task runs as, resolved to numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// `AZ_BATCH_TASK_USER`.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Admin elevation: the task runs as root.
    pub admin: bool,
    /// `AZ_BATCH_TASK_USER_IDENTITY`: PoolNonAdmin, TaskNonAdmin, PoolAdmin, TaskAdmin,
    /// or the pool user's name.
    pub identity: String,
}

impl ResolvedUser {
    /// The container's `User`: uid:gid, or root for admin elevation.
    pub fn container_user(&self) -> String {
        if self.admin {
            "0:0".into()
        } else {
            format!("{}:{}", self.uid, self.gid)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {name:?} is not one of the pool's userAccounts")]
    UnknownPoolUser { name: String },
    /// `message`: what `groupadd`/`useradd` said, or what was missing after them.
    #[error("cannot create host user {name:?}: {message}")]
    Create { name: String, message: String },
    #[error("cannot create host user {name:?}: cannot run {tool}")]
    Run {
        name: String,
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot look up host user {name:?}")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Resolves (and, as root, creates) the user a task runs as.
/// When berth does not run as root it cannot switch users: every task then runs as berth's
/// own uid:gid, which is stated in the README.
pub fn resolve(
    identity: Option<&UserIdentity>,
    pool: &PoolSpec,
) -> Result<ResolvedUser, UserError> {
    let is_root = Uid::effective().is_root();
    if let Some(name) = identity.and_then(|i| i.username.as_deref()) {
        let acct = pool
            .user(name)
            .ok_or_else(|| UserError::UnknownPoolUser { name: name.into() })?;
        let admin = acct.elevation_level == Some(ElevationLevel::Admin);
        let cfg = acct.linux_user_configuration.clone().unwrap_or_default();
        let (uid, gid) = if is_root {
            ensure_user(name, name, cfg.uid, cfg.gid)?
        } else {
            own_ids()
        };
        return Ok(ResolvedUser {
            name: name.into(),
            uid,
            gid,
            admin,
            identity: name.into(),
        });
    }
    let auto = identity
        .and_then(|i| i.auto_user.clone())
        .unwrap_or_default();
    let admin = auto.elevation_level == Some(ElevationLevel::Admin);
    let task_scope = auto.scope == Some(AutoUserScope::Task);
    let identity = format!(
        "{}{}",
        if task_scope { "Task" } else { "Pool" },
        if admin { "Admin" } else { "NonAdmin" }
    );
    if admin {
        return Ok(ResolvedUser {
            name: "root".into(),
            uid: 0,
            gid: 0,
            admin: true,
            identity,
        });
    }
    let (uid, gid) = if is_root {
        ensure_user(AUTO_USER, AUTO_GROUP, None, None)?
    } else {
        own_ids()
    };
    Ok(ResolvedUser {
        name: AUTO_USER.into(),
        uid,
        gid,
        admin: false,
        identity,
    })
}

fn own_ids() -> (u32, u32) {
    (Uid::effective().as_raw(), Gid::effective().as_raw())
}

fn lookup_err(name: &str, e: nix::Error) -> UserError {
    UserError::Lookup {
        name: name.into(),
        source: e,
    }
}

/// Finds or creates a system user (and its group) on the host.
fn ensure_user(
    name: &str,
    group: &str,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(u32, u32), UserError> {
    // Serialise creation: useradd takes a lock on /etc/passwd and fails if raced.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(u) = User::from_name(name).map_err(|e| lookup_err(name, e))? {
        return Ok((u.uid.as_raw(), u.gid.as_raw()));
    }
    let gid = match Group::from_name(group).map_err(|e| lookup_err(group, e))? {
        Some(g) => g.gid.as_raw(),
        None => {
            let mut c = Command::new("groupadd");
            c.arg("--system");
            if let Some(gid) = gid {
                if Group::from_gid(Gid::from_raw(gid))
                    .map_err(|e| lookup_err(group, e))?
                    .is_none()
                {
                    c.args(["--gid", &gid.to_string()]);
                }
            }
            run(c.arg(group), group)?;
            Group::from_name(group)
                .map_err(|e| lookup_err(group, e))?
                .ok_or_else(|| UserError::Create {
                    name: group.into(),
                    message: "group missing after groupadd".into(),
                })?
                .gid
                .as_raw()
        }
    };
    let mut c = Command::new("useradd");
    c.args([
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        "--gid",
        &gid.to_string(),
    ]);
    if let Some(uid) = uid {
        c.args(["--uid", &uid.to_string()]);
    }
    run(c.arg(name), name)?;
    let u = User::from_name(name)
        .map_err(|e| lookup_err(name, e))?
        .ok_or_else(|| UserError::Create {
            name: name.into(),
            message: "user missing after useradd".into(),
        })?;
    Ok((u.uid.as_raw(), u.gid.as_raw()))
}

fn run(c: &mut Command, name: &str) -> Result<(), UserError> {
    let out = c.output().map_err(|source| UserError::Run {
        name: name.into(),
        tool: c.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if !out.status.success() {
        return Err(UserError::Create {
            name: name.into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
