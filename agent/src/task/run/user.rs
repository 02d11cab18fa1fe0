//! A created container's `--user`, resolved from the container's own `/etc/passwd` and
//! `/etc/group` (what the engine will read at start) and given the task's directories
//! before it starts, as a numeric `--user` gets them in `prepare_dirs`.

use super::super::container_user::{self, UserError, UserSpec, FILE_LIMIT, GROUP, PASSWD};
use super::super::exit::{file_code, Finished};
use super::super::{files_owner, give_dirs, NodeContext, TaskPlan};
use super::not_started;
use crate::engine::EngineError;
use berth_proto::{ContainerInfo, FailureCode};

/// The owner of the task's output files once `user` (the `--user` value, if any) is
/// resolved in container `id`, whose directories it now owns. A name the image does not
/// have ends the attempt before start (`ContainerInvalidSettings`, naming it).
pub(super) async fn take_over(
    rt: &NodeContext,
    plan: &TaskPlan,
    user: Option<&str>,
    id: &str,
) -> Result<Option<(u32, u32)>, Finished> {
    let owner = |ids| files_owner(plan, ids).map(|o| (o.uid, o.gid));
    let Some(text) = user else {
        return Ok(owner(None));
    };
    let created = || {
        Some(ContainerInfo {
            container_id: Some(id.to_string()),
            state: Some("created".into()),
            error: None,
        })
    };
    let invalid = |e: UserError| not_started(e.code(), e.message(text), vec![], created());
    let spec = container_user::parse(text).map_err(invalid)?;
    if let Some(ids) = spec.numeric() {
        // `prepare_dirs` gave them already.
        return Ok(owner(Some(ids)));
    }
    let ids = resolve(rt, &spec, id).await.map_err(invalid)?;
    tracing::info!(
        user = text,
        uid = ids.0,
        gid = ids.1,
        "--user resolved in the container"
    );
    if let Some(o) = files_owner(plan, Some(ids)) {
        if let Err(e) = give_dirs(plan, o) {
            return Err(not_started(
                file_code(&e, FailureCode::ResourceDirectoryCreateFailed),
                format!("cannot give the task's directories to --user {text}: {e}"),
                vec![],
                created(),
            ));
        }
    }
    Ok(owner(Some(ids)))
}

/// The uid:gid `spec` names in container `id`, reading only the files it needs.
async fn resolve(rt: &NodeContext, spec: &UserSpec, id: &str) -> Result<(u32, u32), UserError> {
    let passwd = match spec.needs_passwd() {
        true => read(rt, id, PASSWD).await?,
        false => None,
    };
    let group = match spec.needs_group() {
        true => read(rt, id, GROUP).await?,
        false => None,
    };
    spec.resolve(passwd.as_deref(), group.as_deref())
}

/// A file of the container, None when it has none (the engine then treats it as empty).
async fn read(
    rt: &NodeContext,
    id: &str,
    path: &'static str,
) -> Result<Option<Vec<u8>>, UserError> {
    match rt.engine.read_file(id, path, FILE_LIMIT).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(EngineError::NoSuchFile(_)) => Ok(None),
        Err(e) => Err(UserError::Read {
            path,
            message: e.message(),
            engine_down: e.is_engine_down(),
        }),
    }
}
