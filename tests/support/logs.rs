//! What authgate logs inside a test binary, captured as JSON lines (the format it logs in),
//! so tests can assert on security events and on secrets never logged.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Everything authgate logs in this test binary, as JSON lines.
pub fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || LogWriter(writer.clone()))
            .with_max_level(tracing::Level::DEBUG)
            .init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&log().lock().unwrap()).into_owned()
}
