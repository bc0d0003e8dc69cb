//! A client's socket whose writes are gathered, so that a burst goes out in few system calls,
//! and which holds no buffer once it has been flushed.
//!
//! tungstenite writes a connection's frames into a buffer of its own and hands it to the socket
//! each time it passes `write_buffer_size`; that buffer keeps its size once grown, so its bound
//! is also what a socket keeps after a burst, and it stays small (see `routes::WRITE_BUFFER`).
//! On its own it made a burst one `sendto` per 4 KiB, each a pass through the loopback's TCP
//! stack that cost more than the frames in it: twice the system calls of the bare relay. This
//! layer, on the TCP socket (under TLS and tungstenite), gathers those writes up to [`GATHER`]
//! bytes before it writes to the system, and lets its buffer go at each flush, so that what a
//! quiet socket keeps does not change.
//!
//! Whoever writes must flush, as with any buffered writer, and all do (hyper its responses,
//! tokio-rustls its handshake, tungstenite its pongs, and the relay's writer each batch), but
//! for one: tungstenite writes its reply to a client's close frame and then ends the connection
//! without a flush. So what still waits when the socket is dropped is written then, as far as
//! the system takes it without waiting, as tungstenite's own write would have.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The most bytes gathered for one write to the system, and so the most one socket holds here
/// while a burst is written: 16 KiB, about a hundred chat frames. Beyond it, fewer system calls
/// saved little (measured with tungstenite's own buffer at these sizes instead: a burst to 100
/// clients cost the relay 0.81 s of CPU with 4 KiB a write, 0.59 s with 8 KiB, 0.54 s with
/// 16 KiB; the bare relay 0.51 s).
const GATHER: usize = 16 * 1024;

/// A socket whose writes are gathered until [`GATHER`] bytes wait or it is flushed.
///
/// Vectored writes (hyper's) go straight through, after whatever waits.
#[derive(Debug)]
pub struct Gathered<S: WriteNow> {
    socket: S,
    /// Bytes taken and not yet written to the system, from `written` on.
    waiting: Vec<u8>,
    /// How much of `waiting` a partial write has written already.
    written: usize,
}

/// A socket that takes bytes without waiting (or refuses them), for what still waits when a
/// [`Gathered`] is dropped.
pub trait WriteNow {
    /// Writes what the system takes of `bytes` at once.
    ///
    /// # Errors
    /// When the system takes nothing now (`WouldBlock`) or the socket failed.
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize>;
}

impl WriteNow for TcpStream {
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.try_write(bytes)
    }
}

impl<S: WriteNow> Gathered<S> {
    /// Wraps `socket`, with nothing waiting (and nothing allocated).
    pub fn new(socket: S) -> Self {
        Self { socket, waiting: Vec::new(), written: 0 }
    }
}

impl<S: WriteNow> Drop for Gathered<S> {
    fn drop(&mut self) {
        while self.written < self.waiting.len() {
            match self.socket.write_now(&self.waiting[self.written..]) {
                Ok(written) if written > 0 => self.written += written,
                // The connection is going anyway: what the system does not take now is lost,
                // as it would have been in tungstenite's buffer.
                _ => break,
            }
        }
    }
}

impl<S: AsyncWrite + WriteNow + Unpin> Gathered<S> {
    /// Writes everything waiting to the socket.
    fn poll_write_waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.waiting.len() {
            let rest = &self.waiting[self.written..];
            let written = ready!(Pin::new(&mut self.socket).poll_write(cx, rest))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
        }
        self.waiting.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + WriteNow + Unpin> AsyncWrite for Gathered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.waiting.len() + bytes.len() > GATHER {
            ready!(this.poll_write_waiting(cx))?;
            // Nothing to gather it with: a large write goes through as it is, without a copy.
            if bytes.len() >= GATHER {
                return Pin::new(&mut this.socket).poll_write(cx, bytes);
            }
        }
        let waiting = &mut this.waiting;
        let needed = waiting.len() + bytes.len();
        if needed > waiting.capacity() {
            // Doubling as a `Vec` does, but never past the bound.
            let grown = needed.max(2 * waiting.capacity()).min(GATHER);
            waiting.reserve_exact(grown - waiting.len());
        }
        waiting.extend_from_slice(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_write_waiting(cx))?;
        Pin::new(&mut this.socket).poll_write_vectored(cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_waiting(cx))?;
        // Nothing is kept for the next batch: allocating a buffer costs far less than the
        // system call each batch makes anyway, and a quiet socket then holds none.
        this.waiting = Vec::new();
        Pin::new(&mut this.socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_waiting(cx))?;
        this.waiting = Vec::new();
        Pin::new(&mut this.socket).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + WriteNow + Unpin> AsyncRead for Gathered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A socket that takes at most `per_write` bytes a call, and records each call.
    #[derive(Default)]
    struct Recording {
        writes: Vec<usize>,
        bytes: Vec<u8>,
        flushes: usize,
        per_write: usize,
    }

    impl AsyncWrite for Recording {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bytes: &[u8],
        ) -> Poll<io::Result<usize>> {
            let taken = bytes.len().min(self.per_write);
            self.writes.push(taken);
            self.bytes.extend_from_slice(&bytes[..taken]);
            Poll::Ready(Ok(taken))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl WriteNow for Recording {
        fn write_now(&mut self, _: &[u8]) -> io::Result<usize> {
            unreachable!("these tests flush before the socket goes")
        }
    }

    async fn write(socket: &mut Gathered<Recording>, bytes: &[u8]) -> usize {
        poll_fn(|cx| Pin::new(&mut *socket).poll_write(cx, bytes)).await.unwrap()
    }

    async fn flush(socket: &mut Gathered<Recording>) {
        poll_fn(|cx| Pin::new(&mut *socket).poll_flush(cx)).await.unwrap();
    }

    /// A burst of small frames reaches the system in writes of up to 16 KiB, in order, and
    /// the buffer it grew is let go once flushed.
    #[tokio::test]
    async fn small_writes_go_out_together_until_the_flush() {
        let mut socket = Gathered::new(Recording { per_write: usize::MAX, ..Recording::default() });
        let mut sent = Vec::new();
        for n in 0..1_000_u32 {
            let frame = format!("frame {n:>93}\n");
            assert_eq!(write(&mut socket, frame.as_bytes()).await, 100);
            sent.extend_from_slice(frame.as_bytes());
        }
        assert_eq!(socket.socket.writes, [16_300; 6], "163 frames a write, none after the last");
        assert_eq!(socket.waiting.capacity(), GATHER, "grown to the bound, not past it");
        flush(&mut socket).await;
        assert_eq!(socket.socket.writes.len(), 7);
        assert_eq!(socket.socket.bytes, sent);
        assert_eq!(socket.socket.flushes, 1);
        assert_eq!(socket.waiting.capacity(), 0, "nothing kept after a burst");
    }

    /// A socket that takes part of a write at a time gets the rest next, nothing lost or
    /// repeated; a write as large as the gathering bound goes through uncopied.
    #[tokio::test]
    async fn partial_writes_and_large_writes() {
        let mut socket = Gathered::new(Recording { per_write: 1_000, ..Recording::default() });
        assert_eq!(write(&mut socket, &[1; 10_000]).await, 10_000);
        assert_eq!(write(&mut socket, &[2; 10_000]).await, 10_000);
        assert_eq!(socket.socket.writes, [1_000; 10], "the first 10,000 out before the second");
        assert_eq!(write(&mut socket, &[3; GATHER]).await, 1_000, "straight through, in part");
        flush(&mut socket).await;
        let expected: Vec<u8> =
            [[1; 10_000], [2; 10_000]].concat().into_iter().chain([3; 1_000]).collect();
        assert_eq!(socket.socket.bytes, expected);
    }

    /// One frame at a time, as a quiet chat sends them: each flush writes it, and nothing is
    /// held between frames.
    #[tokio::test]
    async fn a_frame_at_a_time_goes_out_at_each_flush() {
        let mut socket = Gathered::new(Recording { per_write: usize::MAX, ..Recording::default() });
        for _ in 0..3 {
            write(&mut socket, b"hello").await;
            flush(&mut socket).await;
            assert_eq!(socket.waiting.capacity(), 0);
        }
        assert_eq!(socket.socket.writes, [5, 5, 5]);
        assert_eq!(socket.socket.flushes, 3);
    }

    /// A reply written without a flush just before the connection ends (tungstenite's answer
    /// to a client's close frame) reaches the peer when the socket is dropped.
    #[tokio::test]
    async fn what_waits_is_written_when_the_socket_goes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let mut socket = Gathered::new(listener.accept().await.unwrap().0);
        let reply = b"\x88\x02\x03\xe8";
        poll_fn(|cx| Pin::new(&mut socket).poll_write(cx, reply)).await.unwrap();
        drop(socket);
        let mut received = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut received).await.unwrap();
        assert_eq!(received, reply);
    }
}
