//! HTTPS redemption: the system's trust store extended by `SSL_CERT_FILE` is honoured, and
//! a certificate nobody vouches for is refused with a hint about company CAs.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{World, show, stderr};

/// Make a CA and a certificate for `localhost` signed by it; return the CA's path.
fn make_certificates(dir: &Path) -> std::path::PathBuf {
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
        "/CN=Archestra Test CA",
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
        "/CN=localhost",
    ]);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
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
        "ext.cnf",
    ]);
    dir.join("ca.pem")
}

/// An HTTPS server on 127.0.0.1 that answers every GET with `body` as JSON.
fn https_server(dir: &Path, body: &str) -> (Child, u16) {
    fs::write(dir.join("payload.json"), body).unwrap();
    let script = r#"
import http.server, ssl, sys, os
body = open("payload.json", "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("server.pem", "server.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.timeout = 60
srv.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    (
        child,
        line.trim().parse().expect("the server prints its port"),
    )
}

#[test]
fn https_works_with_a_company_ca_and_refuses_an_unknown_one() {
    let world = World::new();
    let dir = world.dir.path().join("tls");
    fs::create_dir_all(&dir).unwrap();
    let ca = make_certificates(&dir);
    let payload = serde_json::json!({
        "clientId": "claude-code",
        "appName": "Archestra",
        "mcp": {"serverName": "archestra", "url": "https://localhost/v1/mcp/x", "legacyServerNames": []},
        "proxy": null, "skills": null, "healthUrl": null
    });
    let (mut server, port) = https_server(&dir, &payload.to_string());
    let link = format!(
        "https://localhost:{port}/api/connection-setups/script/archestra_con_{}",
        "T".repeat(32)
    );

    // Nobody vouches for the certificate: refused, with the hint about company CAs.
    let out = world.connect(&["setup", &link, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("could not verify the server's TLS certificate"),
        "{err}"
    );
    assert!(err.contains("SSL_CERT_FILE"), "{err}");

    // With the company CA named by SSL_CERT_FILE, the same link works.
    let ca_text = ca.display().to_string();
    let out = world.connect_with(&["setup", &link, "--yes"], &[("SSL_CERT_FILE", &ca_text)]);
    let _ = server.kill();
    assert!(out.status.success(), "{}", show(&out));
    let cj = world.read_json(&world.claude_json());
    assert_eq!(
        cj["mcpServers"]["archestra"]["url"],
        "https://localhost/v1/mcp/x"
    );
}
