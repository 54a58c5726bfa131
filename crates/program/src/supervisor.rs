//! The supervisor: a small process that owns the listening socket across program generations.
//!
//! `nonstop node --supervise` runs this instead of serving itself. It starts the program the
//! version store records live (or, with none, the program installed on disk, its own
//! executable) as a generation that serves on the shared socket, and stays beside it:
//!
//! - when the live generation's agent asks, it starts a staged program as a candidate on a
//!   private loopback socket, reports when it answers there (or why it did not), and later hands
//!   it the shared socket: the candidate accepts first, then the old generation drains and exits;
//! - when a generation crashes, it starts the live program again; when it crashes inside its
//!   watch window, it first rolls the program back in the store, so the standby starts instead,
//!   told why (the node reports it to its update server);
//! - on a stop (Ctrl-C, SIGTERM) it drains the live generation and exits.
//!
//! The supervisor itself is never replaced while it runs: it is small, it is the program
//! installed on disk, and a restart of the service (systemd's, or a reboot) runs it anew.
//! Everything is synchronous on plain threads: a handful of processes and one event loop.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use nonstop_bundle::ComponentName;
use nonstop_store::Store;

use crate::protocol::{
    CONTROL_FD, FELL_BACK_ENV, LISTEN_FD, PRIVATE_FD, ToGeneration, ToSupervisor, VERSION_ENV,
};

/// How the supervisor runs generations.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The program installed on disk (the supervisor's own executable): it runs when the store
    /// records no live program.
    pub installed: PathBuf,
    /// The arguments every generation gets (`node ...`); `--generation live|candidate` is added.
    pub args: Vec<OsString>,
    /// The node's version store.
    pub store: PathBuf,
    /// Seconds a candidate has to answer on its private socket, and a new generation to accept.
    pub start_secs: u64,
    /// Seconds a draining generation has to exit before it is killed.
    pub drain_secs: u64,
}

/// Stops a running supervisor.
#[derive(Clone)]
pub struct StopHandle(Sender<Event>);

impl StopHandle {
    /// Drains the live generation, stops the candidate, and makes [`supervise`] return.
    pub fn stop(&self) {
        let _ = self.0.send(Event::Stop);
    }
}

type GenId = u64;

enum Event {
    Said(GenId, ToSupervisor),
    Exited(GenId, ExitStatus),
    Timeout(GenId, Phase),
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Started; has not said it serves yet.
    Starting,
    /// Serves on its private socket, under test.
    Testing,
    /// Told to accept on the shared socket; has not said so yet.
    Accepting,
    /// Serves on the shared socket.
    Live,
    /// Told to drain.
    Draining,
}

/// What a candidate is for.
#[derive(Debug, Clone)]
enum Purpose {
    /// A staged program under test; the live generation decides.
    Upgrade,
    /// The standby put back after a failed watch window: accepted as soon as it answers.
    Replace,
}

struct Generation {
    id: GenId,
    pid: u32,
    control: UnixStream,
    version: Option<semver::Version>,
    phase: Phase,
    started: Instant,
    last_words: Arc<Mutex<VecDeque<String>>>,
}

impl Generation {
    fn tell(&mut self, message: &ToGeneration) {
        let mut line = serde_json::to_vec(message).expect("messages serialise");
        line.push(b'\n');
        if let Err(e) = self.control.write_all(&line) {
            tracing::warn!(pid = self.pid, error = %e, "cannot reach a program generation");
        }
    }

    fn kill(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    fn last_words(&self) -> String {
        let words = self.last_words.lock().expect("not poisoned");
        if words.is_empty() {
            String::new()
        } else {
            format!(
                "; its last words: {}",
                words.iter().cloned().collect::<Vec<_>>().join(" | ")
            )
        }
    }

    fn name(&self) -> String {
        match &self.version {
            Some(v) => format!("program {v}"),
            None => "the installed program".into(),
        }
    }
}

/// Runs the supervisor on `listener` until it is stopped through the handle `ready` receives
/// (called once the first generation serves), or until it cannot keep a program running.
pub fn supervise(
    config: SupervisorConfig,
    listener: TcpListener,
    ready: impl FnOnce(StopHandle) + 'static,
) -> Result<(), String> {
    let (tx, rx) = channel();
    let mut s = Supervisor {
        config,
        listener,
        tx: tx.clone(),
        next_id: 0,
        live: None,
        candidate: None,
        purpose: Purpose::Upgrade,
        draining: Vec::new(),
        warm: serde_json::Value::Null,
        stopping: false,
        crashes: VecDeque::new(),
    };
    let first = s.start_live(None)?;
    s.live = Some(first);
    s.run(rx, Some(Box::new(ready)))
}

type Ready = Box<dyn FnOnce(StopHandle)>;

struct Supervisor {
    config: SupervisorConfig,
    listener: TcpListener,
    tx: Sender<Event>,
    next_id: GenId,
    live: Option<Generation>,
    candidate: Option<Generation>,
    purpose: Purpose,
    draining: Vec<Generation>,
    /// What the generation handing over gave for the next one.
    warm: serde_json::Value,
    stopping: bool,
    /// When the live generation last crashed: three within a minute put the standby back.
    crashes: VecDeque<Instant>,
}

impl Supervisor {
    fn run(&mut self, rx: Receiver<Event>, mut ready: Option<Ready>) -> Result<(), String> {
        while let Ok(event) = rx.recv() {
            match event {
                Event::Stop => self.stop(),
                Event::Said(id, message) => self.said(id, message, &mut ready),
                Event::Exited(id, status) => self.exited(id, status)?,
                Event::Timeout(id, phase) => self.timeout(id, phase),
            }
            if self.stopping && self.live.is_none() && self.draining.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.stopping = true;
        if let Some(c) = self.candidate.take() {
            c.kill();
            self.draining.push(c);
        }
        if let Some(mut live) = self.live.take() {
            self.drain(&mut live);
            self.draining.push(live);
        }
    }

    fn drain(&self, g: &mut Generation) {
        g.phase = Phase::Draining;
        g.tell(&ToGeneration::Drain);
        self.after(g.id, Phase::Draining, self.config.drain_secs + 5);
    }

    fn said(&mut self, id: GenId, message: ToSupervisor, ready: &mut Option<Ready>) {
        let is_live = self.live.as_ref().is_some_and(|g| g.id == id);
        let is_candidate = self.candidate.as_ref().is_some_and(|g| g.id == id);
        match message {
            ToSupervisor::Serving { addr } if is_live => {
                let live = self.live.as_mut().expect("checked");
                live.phase = Phase::Live;
                tracing::info!(pid = live.pid, %addr, program = %live.name(), "the program serves");
                if let Some(ready) = ready.take() {
                    ready(StopHandle(self.tx.clone()));
                }
            }
            ToSupervisor::Serving { addr } if is_candidate => self.candidate_serves(addr),
            ToSupervisor::StartCandidate { program, version } if is_live => {
                if let Some(old) = self.candidate.take() {
                    old.kill();
                    self.draining.push(old);
                }
                self.purpose = Purpose::Upgrade;
                match self.spawn(Path::new(&program), Some(version), "candidate", None) {
                    Ok(c) => self.candidate = Some(c),
                    Err(reason) => self.tell_live(&ToGeneration::CandidateFailed { reason }),
                }
            }
            ToSupervisor::DiscardCandidate if is_live => {
                if let Some(c) = self.candidate.take() {
                    c.kill();
                    self.draining.push(c);
                }
            }
            ToSupervisor::HandOver { warm } if is_live => match self.candidate.as_mut() {
                Some(c) if c.phase == Phase::Testing => {
                    c.phase = Phase::Accepting;
                    c.tell(&ToGeneration::Accept { warm });
                    let id = c.id;
                    self.after(id, Phase::Accepting, self.config.start_secs);
                }
                _ => self.tell_live(&ToGeneration::HandOverFailed {
                    reason: "no tested candidate is running".into(),
                }),
            },
            ToSupervisor::ReplaceWithLive { reason, warm } if is_live => {
                self.warm = warm;
                if let Some(old) = self.candidate.take() {
                    old.kill();
                    self.draining.push(old);
                }
                self.purpose = Purpose::Replace;
                let found = intact_live_program(&self.config);
                match found.and_then(|(program, version)| {
                    self.spawn(&program, version, "candidate", Some(&reason))
                }) {
                    Ok(c) => self.candidate = Some(c),
                    Err(e) => self.tell_live(&ToGeneration::HandOverFailed { reason: e }),
                }
            }
            other => {
                tracing::warn!(
                    ?other,
                    "a message from a generation that may not send it; ignored"
                )
            }
        }
    }

    fn candidate_serves(&mut self, addr: String) {
        let Some(c) = self.candidate.as_mut() else {
            return;
        };
        match c.phase {
            Phase::Starting => {
                c.phase = Phase::Testing;
                tracing::info!(pid = c.pid, %addr, program = %c.name(), "the candidate serves nobody, on its private socket");
                if let Purpose::Replace = self.purpose {
                    c.phase = Phase::Accepting;
                    let warm = std::mem::take(&mut self.warm);
                    c.tell(&ToGeneration::Accept { warm });
                    let id = c.id;
                    self.after(id, Phase::Accepting, self.config.start_secs);
                } else {
                    let pid = c.pid;
                    self.tell_live(&ToGeneration::CandidateServing { addr, pid });
                }
            }
            Phase::Accepting => {
                // It accepts on the shared socket: the old generation stops accepting, finishes
                // what it serves, and exits.
                let mut new = self.candidate.take().expect("checked");
                new.phase = Phase::Live;
                tracing::info!(pid = new.pid, program = %new.name(), "the new program accepts on the shared socket; the old one drains");
                if let Some(mut old) = self.live.take() {
                    old.tell(&ToGeneration::HandedOver);
                    self.drain(&mut old);
                    self.draining.push(old);
                }
                self.live = Some(new);
                self.purpose = Purpose::Upgrade;
            }
            _ => {}
        }
    }

    fn tell_live(&mut self, message: &ToGeneration) {
        if let Some(live) = self.live.as_mut() {
            live.tell(message);
        }
    }

    fn exited(&mut self, id: GenId, status: ExitStatus) -> Result<(), String> {
        if let Some(i) = self.draining.iter().position(|g| g.id == id) {
            let g = self.draining.remove(i);
            tracing::info!(pid = g.pid, program = %g.name(), %status, "a program generation ended");
            return Ok(());
        }
        if self.candidate.as_ref().is_some_and(|g| g.id == id) {
            let c = self.candidate.take().expect("checked");
            let reason = format!(
                "the candidate {} exited ({status}) {:.1} s after it started, before {}{}",
                c.name(),
                c.started.elapsed().as_secs_f64(),
                if c.phase == Phase::Accepting {
                    "it accepted on the shared socket"
                } else {
                    "it answered on its private socket"
                },
                c.last_words()
            );
            tracing::warn!(%reason, "candidate program failed");
            match (c.phase, self.purpose.clone()) {
                (Phase::Accepting, _) | (_, Purpose::Replace) => {
                    self.tell_live(&ToGeneration::HandOverFailed { reason })
                }
                _ => self.tell_live(&ToGeneration::CandidateFailed { reason }),
            }
            return Ok(());
        }
        if self.live.as_ref().is_none_or(|g| g.id != id) {
            return Ok(());
        }
        let dead = self.live.take().expect("checked");
        if let Some(c) = self.candidate.take() {
            // Its tester is gone.
            c.kill();
            self.draining.push(c);
        }
        if self.stopping {
            return Ok(());
        }
        if status.success() {
            // Stopped by a signal meant for the whole node (Ctrl-C in a terminal reaches every
            // process of its group; systemd signals the whole unit): stop too.
            tracing::info!(program = %dead.name(), "the program stopped; stopping the supervisor");
            self.stopping = true;
            return Ok(());
        }
        let mut reason = format!(
            "the {} exited ({status}) {:.1} s after it started{}",
            dead.name(),
            dead.started.elapsed().as_secs_f64(),
            dead.last_words()
        );
        tracing::error!(%reason, "the live program failed");
        self.crashes.push_back(Instant::now());
        while self
            .crashes
            .front()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.crashes.pop_front();
        }
        let watched = dead
            .version
            .as_ref()
            .is_some_and(|v| in_watch(&self.config.store, v));
        let mut fell_back = None;
        if watched || (self.crashes.len() >= 3 && dead.version.is_some()) {
            reason.push_str(if watched {
                ", inside its watch window"
            } else {
                ", its third crash within a minute"
            });
            put_standby_back(&self.config.store, &reason)?;
            fell_back = Some(reason);
            self.crashes.clear();
        } else if self.crashes.len() >= 3 {
            return Err(format!(
                "{reason}: the third crash within a minute, and there is no standby program"
            ));
        }
        let next = self.start_live(fell_back.as_deref())?;
        self.live = Some(next);
        Ok(())
    }

    fn timeout(&mut self, id: GenId, phase: Phase) {
        if let Some(c) = self
            .candidate
            .as_ref()
            .filter(|c| c.id == id && c.phase == phase)
        {
            // The kill is reported as its exit, with this reason's words in the log.
            tracing::warn!(
                pid = c.pid,
                ?phase,
                secs = self.config.start_secs,
                "the candidate did not answer in time; killing it"
            );
            c.last_words
                .lock()
                .expect("not poisoned")
                .push_back(format!(
                    "(killed: it did not {} within {} s)",
                    if phase == Phase::Starting {
                        "answer"
                    } else {
                        "accept"
                    },
                    self.config.start_secs
                ));
            c.kill();
        }
        if let Some(g) = self
            .draining
            .iter()
            .find(|g| g.id == id && phase == Phase::Draining)
        {
            tracing::warn!(
                pid = g.pid,
                "a draining generation did not exit in time; killing it"
            );
            g.kill();
        }
    }

    fn after(&self, id: GenId, phase: Phase, secs: u64) {
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            let _ = tx.send(Event::Timeout(id, phase));
        });
    }

    /// Starts the store's live program accepting on the shared socket at once. A live program
    /// whose file is not what the store recorded (damaged on disk) is rolled back first, and
    /// the one started instead is told why.
    fn start_live(&mut self, fell_back: Option<&str>) -> Result<Generation, String> {
        let mut reason = fell_back.map(str::to_owned);
        let (program, version) = loop {
            match intact_live_program(&self.config) {
                Ok(found) => break found,
                Err(damaged) => {
                    tracing::error!(%damaged, "the live program is damaged; starting the standby");
                    put_standby_back(&self.config.store, &damaged)?;
                    reason = Some(damaged);
                }
            }
        };
        self.spawn(&program, version, "live", reason.as_deref())
    }

    fn spawn(
        &mut self,
        program: &Path,
        version: Option<semver::Version>,
        role: &str,
        fell_back: Option<&str>,
    ) -> Result<Generation, String> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("making a control socket: {e}"))?;
        let shared = self
            .listener
            .try_clone()
            .map_err(|e| format!("sharing the listening socket: {e}"))?;
        let mut fds = vec![
            FdMapping {
                parent_fd: OwnedFd::from(theirs),
                child_fd: CONTROL_FD,
            },
            FdMapping {
                parent_fd: OwnedFd::from(shared),
                child_fd: LISTEN_FD,
            },
        ];
        if role == "candidate" {
            let private = TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("opening a private socket for the candidate: {e}"))?;
            fds.push(FdMapping {
                parent_fd: OwnedFd::from(private),
                child_fd: PRIVATE_FD,
            });
        }
        let mut command = Command::new(program);
        command
            .args(&self.config.args)
            .args(["--generation", role])
            // Only the supervisor speaks to systemd, and the sockets are handed as above.
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET")
            .env_remove(FELL_BACK_ENV)
            .env_remove(VERSION_ENV)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(v) = &version {
            command.env(VERSION_ENV, v.to_string());
        }
        if let Some(reason) = fell_back {
            command.env(FELL_BACK_ENV, reason);
        }
        command
            .fd_mappings(fds)
            .map_err(|e| format!("handing sockets to the program: {e}"))?;
        // SAFETY: between fork and exec only prctl(2), which is async-signal-safe, runs: the
        // generation dies with the supervisor rather than keep the socket and the store alone.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        self.next_id += 1;
        let id = self.next_id;
        let pid = child.id();
        let last_words = Arc::new(Mutex::new(VecDeque::new()));
        // Dropped once its stderr is read to the end: its exit waits for that, so that the
        // reason of a program that exits at once holds what it said (the exit was seen before
        // its last line was read, and the reason lacked it).
        let (read_all, stderr_read) = std::sync::mpsc::channel::<()>();
        if let Some(stderr) = child.stderr.take() {
            let words = last_words.clone();
            std::thread::spawn(move || {
                let _read_all = read_all;
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    let mut words = words.lock().expect("not poisoned");
                    if words.len() == 5 {
                        words.pop_front();
                    }
                    words.push_back(line);
                }
            });
        }
        let reader = ours
            .try_clone()
            .map_err(|e| format!("reading the control socket: {e}"))?;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                match serde_json::from_str(&line) {
                    Ok(message) => {
                        let _ = tx.send(Event::Said(id, message));
                    }
                    Err(e) => {
                        tracing::warn!(%line, error = %e, "an unreadable message from a generation")
                    }
                }
            }
        });
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                // Not for ever: a process it started may hold its stderr open.
                let _ = stderr_read.recv_timeout(Duration::from_secs(1));
                let _ = tx.send(Event::Exited(id, status));
            }
        });
        tracing::info!(pid, role, program = %program.display(), "started a program generation");
        let g = Generation {
            id,
            pid,
            control: ours,
            version,
            phase: Phase::Starting,
            started: Instant::now(),
            last_words,
        };
        self.after(id, Phase::Starting, self.config.start_secs);
        Ok(g)
    }
}

fn program_name() -> ComponentName {
    ComponentName::new(nonstop_agent::PROGRAM).expect("the program's name is valid")
}

/// The program to run: the store's live one, checked against the digest the store recorded for
/// it, or the installed one when the store records none. `Err` names what is wrong with the live
/// program's file.
fn intact_live_program(
    config: &SupervisorConfig,
) -> Result<(PathBuf, Option<semver::Version>), String> {
    let name = program_name();
    let live = nonstop_store::read_status(&config.store)
        .ok()
        .and_then(|all| all.into_iter().find(|c| c.component == name))
        .and_then(|c| c.live);
    let Some(entry) = live else {
        return Ok((config.installed.clone(), None));
    };
    let program = nonstop_store::payload_path(&config.store, &name, &entry);
    let v = &entry.version;
    let found = std::fs::read(&program)
        .map(|bytes| nonstop_bundle::Digest::of(&bytes))
        .map_err(|e| {
            format!(
                "the live program {v} cannot be read ({}): {e}",
                program.display()
            )
        })?;
    if found != entry.digest {
        return Err(format!(
            "the live program {v} is damaged on disk: {} has digest {found}, the store recorded {}",
            program.display(),
            entry.digest
        ));
    }
    Ok((program, Some(entry.version)))
}

/// Whether the store keeps an open watch window for program `version`.
fn in_watch(store: &Path, version: &semver::Version) -> bool {
    #[derive(serde::Deserialize)]
    struct Kept {
        version: semver::Version,
    }
    std::fs::read(
        store
            .join("watches")
            .join(format!("{}.json", nonstop_agent::PROGRAM)),
    )
    .ok()
    .and_then(|b| serde_json::from_slice::<Kept>(&b).ok())
    .is_some_and(|k| &k.version == version)
}

/// Rolls the program back in the store: the standby live, or, with none, the installed program.
fn put_standby_back(store: &Path, reason: &str) -> Result<(), String> {
    let name = program_name();
    // The crashed generation held the store's lock; the kernel let it go with the process.
    let mut opened = None;
    for _ in 0..50 {
        match Store::open(store) {
            Ok(s) => {
                opened = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let mut s =
        opened.ok_or_else(|| format!("cannot open the version store {}", store.display()))?;
    match s.rollback(&name, reason) {
        Ok(_) => {}
        Err(nonstop_store::StoreError::NoStandby { .. }) => {
            s.set_aside_live(&name, reason).map_err(|e| e.to_string())?;
        }
        Err(e) => return Err(e.to_string()),
    }
    let _ = std::fs::remove_file(
        store
            .join("watches")
            .join(format!("{}.json", nonstop_agent::PROGRAM)),
    );
    tracing::warn!(%reason, "rolled the program back in the store");
    Ok(())
}
