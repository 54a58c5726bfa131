//! A program generation's side of the supervisor: the sockets it was handed, its control
//! channel, and the [`ProgramHost`] its update agent uses to start, test and hand over to a
//! candidate program.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nonstop_agent::ProgramHost;

use crate::checks::{self, ProgramChecks};
use crate::protocol::{
    CONTROL_FD, FELL_BACK_ENV, LISTEN_FD, PRIVATE_FD, ToGeneration, ToSupervisor, VERSION_ENV,
};
use crate::sample::Sample;

/// Which generation this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves on the shared socket from its start.
    Live,
    /// Serves nobody: answers on its private socket until it is told to accept.
    Candidate,
}

/// What the supervisor handed this process.
pub struct Handed {
    /// Live or candidate.
    pub role: Role,
    /// The shared listening socket.
    pub shared: TcpListener,
    /// A candidate's private loopback socket.
    pub private: Option<TcpListener>,
    /// The version the store records for this program (`None`: the installed program).
    pub version: Option<semver::Version>,
    /// Why the supervisor started this program in place of a failed one, if it did.
    pub fell_back: Option<String>,
    /// The control channel.
    pub control: Arc<Control>,
}

impl Handed {
    /// Takes the sockets and the control channel the supervisor handed this process
    /// (`nonstop node --generation live|candidate`, which only the supervisor runs).
    pub fn take(role: Role) -> Result<Handed, String> {
        let fd = |n: i32, what: &str| -> Result<OwnedFd, String> {
            // The supervisor maps exactly these descriptors (`protocol`), and nothing else in
            // this process opens or takes them; each is taken once, here.
            if nix::fcntl::fcntl(
                unsafe { std::os::fd::BorrowedFd::borrow_raw(n) },
                nix::fcntl::FcntlArg::F_GETFD,
            )
            .is_err()
            {
                return Err(format!(
                    "file descriptor {n} ({what}) is not open: `--generation` is for the supervisor \
                     (`nonstop node --supervise`) to use"
                ));
            }
            // SAFETY: checked open above; owned by this process from here on (see above).
            Ok(unsafe { OwnedFd::from_raw_fd(n) })
        };
        let control = UnixStream::from(fd(CONTROL_FD, "the control socket")?);
        let shared = TcpListener::from(fd(LISTEN_FD, "the shared listening socket")?);
        let private = match role {
            Role::Candidate => Some(TcpListener::from(fd(PRIVATE_FD, "the private socket")?)),
            Role::Live => None,
        };
        let version = std::env::var(VERSION_ENV).ok().and_then(|v| v.parse().ok());
        let fell_back = std::env::var(FELL_BACK_ENV).ok();
        Ok(Handed {
            role,
            shared,
            private,
            version,
            fell_back,
            control: Control::start(control)?,
        })
    }
}

/// The control channel to the supervisor.
pub struct Control {
    writer: Mutex<UnixStream>,
    replies: Mutex<Receiver<ToGeneration>>,
    /// Becomes `Some` (what the generation before handed over) when the supervisor says accept.
    accept: tokio::sync::watch::Receiver<Option<serde_json::Value>>,
    /// Becomes true when the supervisor says drain, or is gone.
    drain: tokio::sync::watch::Receiver<bool>,
}

impl Control {
    fn start(stream: UnixStream) -> Result<Arc<Control>, String> {
        use std::io::{BufRead, BufReader};
        let reader = stream
            .try_clone()
            .map_err(|e| format!("reading the control socket: {e}"))?;
        let (replies_tx, replies): (Sender<ToGeneration>, _) = channel();
        let (accept_tx, accept) = tokio::sync::watch::channel(None);
        let (drain_tx, drain) = tokio::sync::watch::channel(false);
        std::thread::Builder::new()
            .name("nonstop-control".into())
            .spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    match serde_json::from_str::<ToGeneration>(&line) {
                        Ok(ToGeneration::Accept { warm }) => {
                            let _ = accept_tx.send(Some(warm));
                        }
                        Ok(ToGeneration::Drain) => {
                            let _ = drain_tx.send(true);
                        }
                        Ok(reply) => {
                            let _ = replies_tx.send(reply);
                        }
                        Err(e) => tracing::warn!(%line, error = %e, "an unreadable message from the supervisor"),
                    }
                }
                // The supervisor is gone: nobody holds this generation's place any more.
                let _ = drain_tx.send(true);
            })
            .map_err(|e| format!("starting the control thread: {e}"))?;
        Ok(Arc::new(Control {
            writer: Mutex::new(stream),
            replies: Mutex::new(replies),
            accept,
            drain,
        }))
    }

    /// Tells the supervisor something.
    pub fn tell(&self, message: &ToSupervisor) -> Result<(), String> {
        use std::io::Write;
        let mut line = serde_json::to_vec(message).expect("messages serialise");
        line.push(b'\n');
        self.writer
            .lock()
            .expect("not poisoned")
            .write_all(&line)
            .map_err(|e| format!("the supervisor cannot be reached: {e}"))
    }

    /// Resolves when the supervisor says accept (a candidate's cue to take over), with what the
    /// generation before handed over to start warm.
    pub async fn accepted(&self) -> serde_json::Value {
        let mut rx = self.accept.clone();
        rx.wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone())
            .unwrap_or_default()
    }

    /// Resolves when the supervisor says drain, or is gone.
    pub async fn drained(&self) {
        let mut rx = self.drain.clone();
        let _ = rx.wait_for(|d| *d).await;
    }

    fn ask(&self, message: &ToSupervisor, within: Duration) -> Result<ToGeneration, String> {
        let replies = self.replies.lock().expect("not poisoned");
        // Answers to an earlier question that timed out are not this one's.
        while replies.try_recv().is_ok() {}
        self.tell(message)?;
        replies.recv_timeout(within).map_err(|e| match e {
            RecvTimeoutError::Timeout => format!(
                "the supervisor did not answer within {} s",
                within.as_secs()
            ),
            RecvTimeoutError::Disconnected => "the supervisor is gone".into(),
        })
    }
}

/// What a program does once it is settled (see [`ProgramHost::settled`]).
pub type Settle = Box<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Option<String>, String>> + Send>,
        > + Send
        + Sync,
>;

/// What the node does for its program host.
pub struct Hooks {
    /// Requests answered and failed (5xx other than 503) so far.
    pub counts: Box<dyn Fn() -> (u64, u64) + Send + Sync>,
    /// What the program does once it is settled (its contract migrations).
    pub settle: Settle,
    /// What it hands the program that takes over from it (the tokens it verified).
    pub warm: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
}

/// The supervisor, as the update agent of a live generation sees it.
pub struct SupervisedHost {
    control: Arc<Control>,
    version: semver::Version,
    checks: ProgramChecks,
    sample: Arc<Sample>,
    live: axum::Router,
    counts: Box<dyn Fn() -> (u64, u64) + Send + Sync>,
    settle: Settle,
    warm: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
    runtime: tokio::runtime::Handle,
    candidate: Mutex<Option<(String, u32)>>,
}

impl SupervisedHost {
    /// A host for the program `version` running here: `live` is its own router (the contract's
    /// reference answers), `sample` its recent reads, `hooks` what the node does for it.
    pub fn new(
        control: Arc<Control>,
        version: semver::Version,
        checks: ProgramChecks,
        sample: Arc<Sample>,
        live: axum::Router,
        hooks: Hooks,
    ) -> SupervisedHost {
        SupervisedHost {
            control,
            version,
            checks,
            sample,
            live,
            counts: hooks.counts,
            settle: hooks.settle,
            warm: hooks.warm,
            runtime: tokio::runtime::Handle::current(),
            candidate: Mutex::new(None),
        }
    }

    fn ask_handover(&self, message: &ToSupervisor) -> Result<(), String> {
        match self.control.ask(
            message,
            Duration::from_secs(2 * self.checks.start_secs + 10),
        )? {
            ToGeneration::HandedOver => Ok(()),
            ToGeneration::HandOverFailed { reason } => Err(reason),
            other => Err(format!("the supervisor answered {other:?}")),
        }
    }
}

impl ProgramHost for SupervisedHost {
    fn running_version(&self) -> semver::Version {
        self.version.clone()
    }

    fn start_candidate(&self, program: &Path, version: &semver::Version) -> Result<(), String> {
        let asked = ToSupervisor::StartCandidate {
            program: program.display().to_string(),
            version: version.clone(),
        };
        match self
            .control
            .ask(&asked, Duration::from_secs(self.checks.start_secs + 10))?
        {
            ToGeneration::CandidateServing { addr, pid } => {
                *self.candidate.lock().expect("not poisoned") = Some((addr, pid));
                Ok(())
            }
            ToGeneration::CandidateFailed { reason } => Err(format!("start: {reason}")),
            other => Err(format!("start: the supervisor answered {other:?}")),
        }
    }

    fn test_candidate(&self) -> Result<String, String> {
        let Some((addr, pid)) = self.candidate.lock().expect("not poisoned").clone() else {
            return Err("no candidate is running".into());
        };
        self.runtime.block_on(checks::run(checks::Target {
            addr: &addr,
            pid,
            live: self.live.clone(),
            sample: &self.sample,
            checks: &self.checks,
        }))
    }

    fn discard_candidate(&self) {
        self.candidate.lock().expect("not poisoned").take();
        let _ = self.control.tell(&ToSupervisor::DiscardCandidate);
    }

    fn hand_over(&self) -> Result<(), String> {
        self.candidate.lock().expect("not poisoned").take();
        self.ask_handover(&ToSupervisor::HandOver {
            warm: (self.warm)(),
        })
    }

    fn replace_with_live(&self, reason: &str) -> Result<(), String> {
        self.ask_handover(&ToSupervisor::ReplaceWithLive {
            reason: reason.to_owned(),
            warm: (self.warm)(),
        })
    }

    fn counts(&self) -> (u64, u64) {
        (self.counts)()
    }

    fn settled(&self) -> Result<Option<String>, String> {
        self.runtime.block_on((self.settle)())
    }
}
