//! SIP messages for fixtures and lab clients.

/// How a request carries credentials.
#[derive(Clone, Copy, Debug)]
pub enum Creds {
    None,
    /// `Authorization` header spelled as given (case and spacing variants), placed last.
    Header(&'static str),
}

/// A REGISTER for `user` from `host`, with optional credentials as the last header and
/// extra headers before them.
pub fn register(user: &str, host: &str, creds: Creds, extra: &[String]) -> String {
    request("REGISTER", user, host, creds, extra)
}

pub fn request(method: &str, user: &str, host: &str, creds: Creds, extra: &[String]) -> String {
    let mut m = format!(
        "{method} sip:pbx.example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bK-{user}-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@pbx.example.com>;tag=a1b2c3\r\n\
         To: <sip:{user}@pbx.example.com>\r\n\
         Call-ID: 1234567890abcdef@{host}\r\n\
         CSeq: 2 {method}\r\n\
         Contact: <sip:{user}@{host}:5060>\r\n\
         User-Agent: fixture/1.0\r\n\
         Expires: 3600\r\n"
    );
    for h in extra {
        m.push_str(h);
        m.push_str("\r\n");
    }
    if let Creds::Header(name) = creds {
        m.push_str(&format!(
            "{name} Digest username=\"{user}\", realm=\"pbx.example.com\", \
             nonce=\"5f1c1e8d0b6a4c1f9f2d\", uri=\"sip:pbx.example.com\", \
             response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5\r\n"
        ));
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m
}

/// Pads a request with a filler header so that the whole message is `len` bytes.
pub fn padded_register(user: &str, host: &str, creds: Creds, len: usize) -> String {
    let base = register(user, host, creds, &["X-Pad: ".to_string()]);
    let fill = len.saturating_sub(base.len());
    register(user, host, creds, &[format!("X-Pad: {}", "p".repeat(fill))])
}

pub fn response(code: u16, reason: &str) -> String {
    format!(
        "SIP/2.0 {code} {reason}\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1;rport\r\n\
         From: <sip:101@pbx.example.com>;tag=a1b2c3\r\n\
         To: <sip:101@pbx.example.com>;tag=srv1\r\n\
         Call-ID: 1234567890abcdef@192.0.2.10\r\n\
         CSeq: 2 REGISTER\r\n\
         Content-Length: 0\r\n\r\n"
    )
}
