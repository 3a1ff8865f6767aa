//! A small UDP SIP registrar standing in for the PBX in control-plane tests (the lab uses
//! Kamailio): 401 to a request without credentials, 200 to `response="good"`, 403 otherwise.
//! It records what reached it, so tests can assert what the filter let through.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{netns::Netns, sip};

#[derive(Clone, Debug)]
pub struct Seen {
    pub src: SocketAddr,
    pub method: String,
    pub creds: bool,
}

pub struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn answer(msg: &str) -> (String, bool) {
    let creds = msg.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("authorization") || l.starts_with("proxy-authorization")
    });
    let code = if !creds {
        401
    } else if msg.contains("response=\"good\"") {
        200
    } else {
        403
    };
    (sip::response(code, "X"), creds)
}

impl Responder {
    /// Listens on UDP 5060 (IPv4 and IPv6) inside `ns`.
    pub fn start(ns: &Netns) -> Result<Self> {
        // One dual-stack socket: IPv4 clients arrive as ::ffff:a.b.c.d (canonicalised below).
        let socks: Vec<UdpSocket> =
            ns.enter(|| -> Result<Vec<UdpSocket>> { Ok(vec![UdpSocket::bind("[::]:5060")?]) })??;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (st, sn) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            for s in &socks {
                s.set_read_timeout(Some(Duration::from_millis(20))).ok();
            }
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                for s in &socks {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let from_canon = SocketAddr::new(from.ip().to_canonical(), from.port());
                        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let method = msg.split(' ').next().unwrap_or("").to_string();
                        let (reply, creds) = answer(&msg);
                        sn.lock().unwrap().push(Seen {
                            src: from_canon,
                            method,
                            creds,
                        });
                        let _ = s.send_to(reply.as_bytes(), from);
                    }
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
            seen,
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests that reached the PBX from `ip`.
    pub fn count_from(&self, ip: IpAddr) -> usize {
        self.seen().iter().filter(|s| s.src.ip() == ip).count()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A SIP client socket bound to `local` inside `ns`.
pub struct Client {
    sock: UdpSocket,
    pub local: SocketAddr,
}

/// How long a [`Client`] waits for an answer, unless told otherwise.
const ANSWER_WAIT: Duration = Duration::from_millis(400);

impl Client {
    pub fn new(ns: &Netns, local: &str) -> Result<Self> {
        Self::bind(ns, local.parse()?)
    }

    /// A client on `local` (port 0: any free port).
    pub fn bind(ns: &Netns, local: SocketAddr) -> Result<Self> {
        let sock = ns.enter(move || UdpSocket::bind(local))??;
        sock.set_read_timeout(Some(ANSWER_WAIT))?;
        let local = sock.local_addr()?;
        Ok(Self { sock, local })
    }

    /// Sends a REGISTER (credentials: none, a good or a bad password) to `pbx`:5060 and
    /// returns the status code, or None when nothing came back (dropped).
    pub fn register(&self, pbx: &str, creds: Creds) -> Option<u16> {
        let host = self.local.ip().to_string();
        let msg = match creds {
            Creds::None => sip::register("101", &host, sip::Creds::None, &[]),
            Creds::Good => sip::register("101", &host, sip::Creds::None, &[good()]),
            Creds::Bad => sip::register("101", &host, sip::Creds::Header("Authorization:"), &[]),
        };
        let to: SocketAddr = SocketAddr::new(pbx.parse().ok()?, 5060);
        self.sock.send_to(msg.as_bytes(), to).ok()?;
        self.answer()
    }

    /// Sends `msg` to `to`:5060 and returns the status code of the first final answer (200
    /// or more: provisional ones are skipped) and how long it took since the send. None when
    /// nothing (or no SIP answer) came within `wait` of the send or of the previous answer.
    pub fn first_final_answer(
        &self,
        to: IpAddr,
        msg: &str,
        wait: Duration,
    ) -> Option<(u16, Duration)> {
        self.sock.set_read_timeout(Some(wait)).ok()?;
        let answer = self.send_until_final(to, msg);
        let _ = self.sock.set_read_timeout(Some(ANSWER_WAIT));
        answer
    }

    fn send_until_final(&self, to: IpAddr, msg: &str) -> Option<(u16, Duration)> {
        let t0 = Instant::now();
        self.sock.send_to(msg.as_bytes(), (to, 5060)).ok()?;
        loop {
            let code = self.answer()?;
            if code >= 200 {
                return Some((code, t0.elapsed()));
            }
        }
    }

    /// The status code of the next message that comes (None: nothing within the read
    /// timeout, or not a SIP answer).
    fn answer(&self) -> Option<u16> {
        let mut buf = [0u8; 4096];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        text.get(8..11)?.parse().ok()
    }
}

fn good() -> String {
    "Authorization: Digest username=\"101\", realm=\"pbx\", nonce=\"n\", uri=\"sip:pbx\", response=\"good\"".into()
}

#[derive(Clone, Copy, Debug)]
pub enum Creds {
    None,
    Good,
    Bad,
}
