//! A private `redis-server` for a test that stops Redis or drops its
//! clients without disturbing the tests sharing the local one.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` of the test's own, keeping nothing on disk; stopped
/// (SIGKILL) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts one on a port the system hands out.
    #[must_use]
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        Self::on_port(port)
    }

    /// Starts one on `port` (again, after a stop) and waits until it
    /// answers.
    ///
    /// # Panics
    /// When it exits (the port is taken) or does not answer a PING within
    /// 5 s.
    #[must_use]
    pub fn on_port(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/services.sh");
        let mut server = Self { child, port };
        let ready = (0..100).any(|_| {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server on port {port} exited: {status}");
            }
            server.answers() || {
                std::thread::sleep(Duration::from_millis(50));
                false
            }
        });
        assert!(ready, "redis-server on port {port} did not answer");
        server
    }

    /// Its URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok_and(|mut stream| {
            let mut reply = [0u8; 7];
            stream
                .set_read_timeout(Some(Duration::from_secs(1)))
                .is_ok()
                && stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
