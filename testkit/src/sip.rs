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

/// A request from the fixtures' phone: `user` at `host` sends `method` to the PBX, with
/// optional credentials as the last header and extra headers before them.
pub fn request(method: &str, user: &str, host: &str, creds: Creds, extra: &[String]) -> String {
    Request {
        creds,
        extra,
        ..Request::new(method, user, host)
    }
    .build()
}

/// A call: the INVITE `user` at `host` sends for `uri` (its Request-URI), otherwise as
/// [`request`].
pub fn invite(uri: &str, user: &str, host: &str, creds: Creds, extra: &[String]) -> String {
    Request {
        uri,
        creds,
        extra,
        ..Request::new("INVITE", user, host)
    }
    .build()
}

/// A request field by field. [`Request::new`] is the fixtures' phone, as [`request`] sends
/// it; the other fields make it, say, a call of its own to a number.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The Request-URI.
    pub uri: &'a str,
    /// The phone: its user (From, Contact), address (Via, Contact, Call-ID) and port.
    pub user: &'a str,
    pub host: &'a str,
    pub port: u16,
    /// The To user (the dialled number of a call); `None`: the phone's own user.
    pub to: Option<&'a str>,
    /// The domain of From and To.
    pub domain: &'a str,
    /// Via's branch, From's tag, the Call-ID (before `@host`) and the CSeq number.
    pub branch: String,
    pub tag: String,
    pub call_id: String,
    pub cseq: u32,
    pub creds: Creds,
    /// Headers before the credentials.
    pub extra: &'a [String],
}

impl<'a> Request<'a> {
    /// `method` from the fixtures' phone `user` at `host`, to the PBX, without credentials.
    pub fn new(method: &'a str, user: &'a str, host: &'a str) -> Self {
        Self {
            method,
            uri: "sip:pbx.example.com",
            user,
            host,
            port: 5060,
            to: None,
            domain: "pbx.example.com",
            branch: format!("z9hG4bK-{user}-1"),
            tag: "a1b2c3".into(),
            call_id: "1234567890abcdef".into(),
            cseq: 2,
            creds: Creds::None,
            extra: &[],
        }
    }

    pub fn build(&self) -> String {
        let Self {
            method,
            uri,
            user,
            host,
            port,
            domain,
            branch,
            tag,
            call_id,
            cseq,
            ..
        } = self;
        let to = self.to.unwrap_or(user);
        let mut m = format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag={tag}\r\n\
             To: <sip:{to}@{domain}>\r\n\
             Call-ID: {call_id}@{host}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{user}@{host}:{port}>\r\n\
             User-Agent: fixture/1.0\r\n\
             Expires: 3600\r\n"
        );
        for h in self.extra {
            m.push_str(h);
            m.push_str("\r\n");
        }
        if let Creds::Header(name) = self.creds {
            m.push_str(&format!(
                "{name} Digest username=\"{user}\", realm=\"pbx.example.com\", \
                 nonce=\"5f1c1e8d0b6a4c1f9f2d\", uri=\"sip:pbx.example.com\", \
                 response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5\r\n"
            ));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    }
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
