//! How `berth agent` becomes a member, in the order its start needs: [`join`] before the
//! node's runtime (the pool comes from the service), [`journal`] around the store,
//! [`Member`] once the scheduler exists, [`begin`] after pool start and before the
//! scheduler's recovery, and [`stop_gracefully`] in place of the plain stop.

use super::client::Client;
use super::journal::{Journal, Ledger, Note, Pendings};
use super::{enrol, Member, Session};
use crate::config::AgentConfig;
use crate::schedule::queue::Scheduler;
use crate::store::Store;
use crate::task::NodeContext;
use berth_proto::node_protocol::{EnrolRequest, EnrolResponse};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An enrolment done: what [`Member`] is made of.
pub struct Joined {
    pub client: Client,
    pub secret: String,
    pub request: EnrolRequest,
    pub response: EnrolResponse,
}

/// The file API's address as the service should use it: `file_address`, else
/// `tcp_address` (with `http://` when no scheme is given); none without either, or
/// while it is a port 0 the listener has yet to choose (the heartbeat sends it then).
pub fn file_address(cfg: &AgentConfig) -> Option<String> {
    let a = cfg.file_address.as_ref().or(cfg.tcp_address.as_ref())?;
    if a.ends_with(":0") {
        return None;
    }
    Some(if a.contains("://") {
        a.clone()
    } else {
        format!("http://{a}")
    })
}

/// Reads the secret and enrols with the service (retrying while it cannot be reached);
/// `Ok(None)` when the agent stopped first.
pub async fn join(
    cfg: &AgentConfig,
    pool_id: &str,
    node_id: &str,
    stop: &CancellationToken,
) -> Result<Option<Joined>, String> {
    let secret_file = cfg
        .enrolment_secret_file
        .as_ref()
        .ok_or("service is set but enrolment_secret_file is not")?;
    let secret = enrol::read_secret(secret_file)?;
    let client = Client::new(cfg.service.clone())?;
    let request = EnrolRequest {
        pool_id: pool_id.into(),
        node_id: node_id.into(),
        file_address: file_address(cfg),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    tracing::info!(service = ?cfg.service, pool = pool_id, node = node_id, "enrolling with the service");
    match enrol::enrol(&client, &secret, &request, stop).await {
        Ok(response) => {
            tracing::info!(epoch = response.epoch, timers = ?response.timers, "enrolled");
            Ok(Some(Joined {
                client,
                secret,
                request,
                response,
            }))
        }
        Err(None) => Ok(None),
        Err(Some(e)) => Err(format!("enrolment refused: {e}")),
    }
}

/// The journalled store, its ledger, and the reporter's notes.
pub type Journalled = (Arc<dyn Store>, Arc<Ledger>, mpsc::UnboundedReceiver<Note>);

/// The journalled store over `inner`, its pending reports under the node root.
pub fn journal(rt: &NodeContext, inner: Arc<dyn Store>) -> std::io::Result<Journalled> {
    let dir = rt.node.layout.root().join("berth").join("pool-reports");
    let (ledger, rx) = Ledger::new(Pendings::open(&dir)?);
    let store = Arc::new(Journal {
        inner,
        ledger: ledger.clone(),
    });
    Ok((store, ledger, rx))
}

/// The member, once the scheduler over the journalled store exists; its heartbeat
/// starts now, so that the service sees the node through pool start.
pub fn member(
    j: Joined,
    rt: Arc<NodeContext>,
    store: Arc<dyn Store>,
    sched: Scheduler,
    ledger: Arc<Ledger>,
    stop: CancellationToken,
) -> Arc<Member> {
    let file_address = std::sync::OnceLock::new();
    if let Some(a) = &j.request.file_address {
        file_address.set(a.clone()).ok();
    }
    let proxy = crate::api::ProxyCredential::default();
    proxy.set(j.response.proxy_token);
    let m = Arc::new(Member {
        client: j.client,
        session: std::sync::RwLock::new(Session {
            token: j.response.node_token,
            epoch: j.response.epoch,
        }),
        timers: j.response.timers,
        rt,
        store,
        sched,
        ledger,
        enrol: j.request,
        secret: j.secret,
        proxy,
        file_address,
        last_ok: std::sync::Mutex::new(tokio::time::Instant::now()),
        self_fenced: Default::default(),
        stop,
        begun: CancellationToken::new(),
        early: Default::default(),
    });
    tokio::spawn(super::heartbeat::run(m.clone()));
    m
}

/// After pool start: adoption (only current attempts keep their containers), then the
/// reporter, the lease watchdog, the claim loop and the commands that came during pool
/// start. False when the agent stopped first.
pub async fn begin(m: &Arc<Member>, notes: mpsc::UnboundedReceiver<Note>) -> bool {
    let session = m.session.read().unwrap_or_else(|p| p.into_inner()).clone();
    if !enrol::adopt(&m.client, &session, &m.rt, m.store.as_ref(), &m.stop).await {
        return false;
    }
    m.begun.cancel();
    let early = std::mem::take(&mut *m.early.lock().unwrap_or_else(|p| p.into_inner()));
    tokio::spawn(super::report::run(m.clone(), notes));
    tokio::spawn(super::heartbeat::watchdog(m.clone()));
    tokio::spawn(super::claim::run(m.clone()));
    let m = m.clone();
    tokio::spawn(async move { m.apply(early).await });
    true
}

/// On SIGTERM or `Remove`: fence this node's attempts (their local ends go unreported),
/// stop the scheduler (`queue_stop`), which stops and removes the running containers, and
/// only once it has ended (`queue_ended`) tell the service this node leaves. The service
/// requeues the node's attempts at once, so a container still running then would run
/// beside the next attempt elsewhere (it did, when the leave came first). Containers
/// still stopping after [`leave_bound`] are killed. The handle ends once the service
/// was told (or could not be).
pub fn stop_gracefully(
    m: Arc<Member>,
    queue_stop: CancellationToken,
    queue_ended: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        m.stop.cancelled().await;
        let live = m.live();
        for (a, ..) in &live {
            m.ledger.fence(*a);
        }
        queue_stop.cancel();
        let bound = leave_bound(m.rt.stop_grace, &m.timers);
        if tokio::time::timeout(bound, queue_ended.cancelled())
            .await
            .is_err()
        {
            tracing::warn!(
                ?bound,
                "containers still stopping; killing them before leaving the pool"
            );
            for (a, ..) in &live {
                super::kill_attempt(&m.rt, *a).await;
            }
        }
        m.leave().await;
    })
}

/// How long a leaving node lets its containers stop before it kills them: the stop grace
/// and 2 s, but at most half the lease's `unknown` time, so that the service, which has
/// heard no heartbeat since the leave began, does not show the node `unknown` meanwhile.
pub fn leave_bound(
    stop_grace: std::time::Duration,
    timers: &berth_proto::node_protocol::Timers,
) -> std::time::Duration {
    let half_unknown = std::time::Duration::from_millis(timers.unknown_ms / 2);
    (stop_grace + std::time::Duration::from_secs(2)).min(half_unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leave_waits_for_the_stop_grace_within_half_the_unknown_time() {
        use berth_proto::node_protocol::Timers;
        use std::time::Duration;
        let s = Duration::from_secs;
        assert_eq!(leave_bound(s(10), &Timers::DEFAULT), s(12));
        assert_eq!(leave_bound(s(60), &Timers::DEFAULT), s(15));
        assert_eq!(
            leave_bound(s(10), &Timers::FAST),
            Duration::from_millis(2_500)
        );
    }

    #[test]
    fn the_file_address_is_file_address_then_tcp_address() {
        let mut c = AgentConfig::default();
        assert_eq!(file_address(&c), None);
        c.tcp_address = Some("10.0.0.5:8470".into());
        assert_eq!(file_address(&c).as_deref(), Some("http://10.0.0.5:8470"));
        c.tcp_address = Some("127.0.0.1:0".into());
        assert_eq!(file_address(&c), None, "known once bound");
        c.file_address = Some("https://node5:8470".into());
        assert_eq!(file_address(&c).as_deref(), Some("https://node5:8470"));
    }
}
