//! A stand-in for apiban.org (which tests cannot reach): a local HTTP server speaking its
//! documented v1 API, `GET /api/<key>/banned/<id>`. Each entry has an id (a timestamp at the
//! service); a request lists the entries after `<id>`, at most 250, with the id of the last
//! one as `ID`, or answers 400 `{"ipaddress":["no new bans"],"ID":"none"}`. A wrong key gets
//! 403 `{"ipaddress":["unauthorized"],"ID":"unauthorized"}`. Every request is recorded.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::netns::Netns;

/// Entries per page, as the service sends them.
pub const PAGE: usize = 250;

#[derive(Default)]
struct Inner {
    /// (id, address), ids increasing.
    entries: Vec<(u64, String)>,
    next_id: u64,
    /// Answer every request with this status and body instead.
    fail: Option<(u16, String)>,
    requests: Vec<(Instant, String)>,
}

pub struct Apiban {
    pub addr: SocketAddr,
    pub key: String,
    inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Apiban {
    /// Listens on loopback inside `ns` (where the daemon runs).
    pub fn start(ns: &Netns, key: &str) -> Result<Self> {
        let listener = ns.enter(|| TcpListener::bind("127.0.0.1:0"))??;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner {
            next_id: 1_700_000_000,
            ..Inner::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (i, s, k) = (inner.clone(), stop.clone(), key.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = serve(conn, &i, &k);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            addr,
            key: key.into(),
            inner,
            stop,
            thread: Some(thread),
        })
    }

    /// `url` for `[apiban]`.
    pub fn url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Lists more addresses, each with a new id.
    pub fn add(&self, addresses: &[String]) {
        let mut g = self.inner.lock().unwrap();
        for a in addresses {
            g.next_id += 1;
            let id = g.next_id;
            g.entries.push((id, a.clone()));
        }
    }

    /// The id of the last entry listed.
    pub fn last_id(&self) -> u64 {
        self.inner.lock().unwrap().next_id
    }

    /// Answers every request with `status` and `body` (None: normally again).
    pub fn fail_with(&self, f: Option<(u16, &str)>) {
        self.inner.lock().unwrap().fail = f.map(|(s, b)| (s, b.to_string()));
    }

    /// The paths requested, in order, with when.
    pub fn requests(&self) -> Vec<(Instant, String)> {
        self.inner.lock().unwrap().requests.clone()
    }
}

impl Drop for Apiban {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, inner: &Mutex<Inner>, key: &str) -> Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // The headers, up to the blank line (GET: no body).
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (status, body) = answer(inner, key, &path);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Error",
    };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()?;
    Ok(())
}

fn answer(inner: &Mutex<Inner>, key: &str, path: &str) -> (u16, String) {
    let mut g = inner.lock().unwrap();
    g.requests.push((Instant::now(), path.to_string()));
    if let Some((s, b)) = &g.fail {
        return (*s, b.clone());
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let from = match parts.as_slice() {
        ["api", k, "banned", id] if *k == key => id.parse::<u64>().ok(),
        ["api", _, "banned", _] => {
            return (
                403,
                r#"{"ipaddress":["unauthorized"],"ID":"unauthorized"}"#.into(),
            );
        }
        _ => None,
    };
    let Some(from) = from else {
        return (400, r#"{"ipaddress":["bad request"],"ID":"none"}"#.into());
    };
    let page: Vec<&(u64, String)> = g
        .entries
        .iter()
        .filter(|(id, _)| *id > from)
        .take(PAGE)
        .collect();
    match page.last() {
        None => (400, r#"{"ipaddress":["no new bans"],"ID":"none"}"#.into()),
        Some((last, _)) => {
            let ips: Vec<&str> = page.iter().map(|(_, a)| a.as_str()).collect();
            (
                200,
                serde_json::json!({ "ipaddress": ips, "ID": last.to_string() }).to_string(),
            )
        }
    }
}
