//! A relay the browser tests may stop and start: a tiny HTTP endpoint on 127.0.0.1 (`GET /stop`,
//! `GET /start`) that the wasm tests call with `fetch`, since a test page cannot run processes.
//! `GET /pause` and `GET /resume` freeze and thaw the relay (SIGSTOP, SIGCONT): its connections
//! stay open but nothing answers, as with a peer behind a sleeping laptop or a dead NAT entry.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, PoisonError};

use crate::process::{self, Background};

/// The restartable relay and its control endpoint; the relay is killed when this is dropped.
pub struct ControlledRelay {
    /// The relay's socket URL.
    pub url: String,
    /// The control endpoint's base URL (`…/stop`, `…/start`).
    pub control_url: String,
    relay: Arc<Mutex<Option<Background>>>,
}

impl ControlledRelay {
    /// Starts the relay on a free port and the control endpoint on another.
    ///
    /// # Errors
    /// When the relay cannot start or no port can be bound.
    pub fn start() -> anyhow::Result<Self> {
        let port = process::free_port()?;
        let relay = Arc::new(Mutex::new(Some(process::start_relay(port, &process::ANY_ORIGIN)?)));
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let control_url = format!("http://{}", listener.local_addr()?);
        let controlled = Arc::clone(&relay);
        // Lives as long as the process: it only ever serves the tests on loopback.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut request_line = String::new();
                if BufReader::new(&stream).read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or_default();
                let (status, body) = match path {
                    "/stop" => {
                        lock(&controlled).take();
                        ("200 OK", "stopped".to_owned())
                    }
                    "/start" => match process::start_relay(port, &process::ANY_ORIGIN) {
                        Ok(relay) => {
                            *lock(&controlled) = Some(relay);
                            ("200 OK", "started".to_owned())
                        }
                        Err(error) => ("500 Internal Server Error", format!("{error:#}")),
                    },
                    "/pause" | "/resume" => {
                        let signal = if path == "/pause" { "STOP" } else { "CONT" };
                        match lock(&controlled).as_ref().map(|relay| relay.signal(signal)) {
                            Some(Ok(())) => ("200 OK", format!("{signal} sent")),
                            Some(Err(error)) => ("500 Internal Server Error", format!("{error:#}")),
                            None => ("409 Conflict", "the relay is stopped".to_owned()),
                        }
                    }
                    _ => ("404 Not Found", "use /stop, /start, /pause or /resume".to_owned()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: text/plain\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                // A test that gave up on the answer changes nothing here.
                let _ = (&stream).write_all(response.as_bytes());
            }
        });
        Ok(Self { url: format!("ws://127.0.0.1:{port}/ws"), control_url, relay })
    }
}

impl Drop for ControlledRelay {
    fn drop(&mut self) {
        if let Some(relay) = lock(&self.relay).take() {
            // A paused relay would ignore nothing (SIGKILL works on stopped processes), but
            // resuming first lets it die like any other.
            let _ = relay.signal("CONT");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
