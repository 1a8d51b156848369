//! A real SMTP server on loopback (Python's aiosmtpd) that wants STARTTLS (and, when asked, a
//! login: `nc7`, `secret`), with a certificate authority of the test's own, for the tests of the
//! `Notify` callback.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SINK: &str = r#"
import email, json, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
cert, key, out, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
wants_login = sys.argv[5] == "login"
class Keep:
    async def handle_DATA(self, server, session, envelope):
        mail = email.message_from_bytes(envelope.content)
        with open(out, "a") as f:
            f.write(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                                "tls": session.ssl is not None,
                                "user": session.authenticated and session.auth_data.login.decode(),
                                "subject": mail["Subject"],
                                "body": mail.get_payload(decode=True).decode()}) + "\n")
        return "250 kept"
def login(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"nc7" and data.password == b"secret"
    return AuthResult(success=ok, handled=False, auth_data=data)
tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert, key)
controller = Controller(Keep(), hostname="127.0.0.1", port=port, tls_context=tls,
                        require_starttls=True, authenticator=login, auth_required=wants_login,
                        auth_require_tls=True)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// A running sink, killed when dropped.
pub struct SmtpSink {
    child: Child,
    /// Its port.
    pub port: u16,
    /// The certificate authority its certificate is signed by (PEM).
    pub ca: PathBuf,
    mails: PathBuf,
}

impl SmtpSink {
    /// Starts a sink keeping its files in `dir`, wanting a login when `login`; `None` (after
    /// saying so) outside CI when Python has no aiosmtpd.
    pub fn start(dir: &Path, login: bool) -> Option<SmtpSink> {
        super::python::run_python("aiosmtpd", "", &[])?;
        let ca = certificates(dir);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mails = dir.join("mails.jsonl");
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SINK)
            .arg(dir.join("server.pem"))
            .arg(dir.join("server.key"))
            .arg(&mails)
            .arg(port.to_string())
            .arg(if login { "login" } else { "open" })
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 starts the SMTP sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        Some(SmtpSink {
            child,
            port,
            ca,
            mails,
        })
    }

    /// The mails it got: sender, recipients, whether over TLS, the login, the subject and the
    /// text (decoded).
    pub fn mails(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.mails)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate authority and a server certificate for 127.0.0.1 signed by it, made with
/// `openssl`; the authority's certificate.
fn certificates(dir: &Path) -> PathBuf {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=nc7 test authority",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    dir.join("ca.pem")
}
